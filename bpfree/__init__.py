"""The command line of the suite: ``bpfree <command>``, one module per command (``bpfree --help``).

This is the top floor (commands, then ``benchmarks``, then ``algorithms``): each module parses its
arguments and calls the floor below; nothing below imports from here.
"""

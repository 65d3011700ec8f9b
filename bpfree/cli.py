"""``bpfree``: every command of the suite behind one entry point, installed by ``pip install -e .``.

``bpfree COMMAND [ARGS]`` runs ``bpfree/<module>.py``'s ``main(ARGS)``: the same code the make
targets call, one path. ``bpfree --help`` lists the commands with the first line of each module's
docstring, read without importing it (so the list is instant: no torch import).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import textwrap

# command -> module of this package
COMMANDS = {
    "run": "run",
    "sweep": "sweep",
    "tune": "tune",
    "plots": "plots",
    "report": "report",
    "claims": "claims",
    "latency": "latency",
    "bench-speed": "bench_speed",
    "gpu-check": "gpu_check",
    "compare": "compare",
    "list": "listing",
}


def summary(module: str) -> str:
    """The first line of ``bpfree.<module>``'s docstring, parsed from its source."""
    spec = importlib.util.find_spec(f"bpfree.{module}")
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bpfree COMMAND [ARGS]   (bpfree COMMAND --help: that command's options)", "",
             "Backpropagation-free training, measured: BP, FA, DFA, FF, MF, CaFo, SFF and forward gradient.", "",
             "commands:"]
    for command, module in COMMANDS.items():
        lines += textwrap.wrap(summary(module), 100, initial_indent=f"  {command:<{width}}  ",
                               subsequent_indent=" " * (width + 4))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; one of: {', '.join(COMMANDS)} (see bpfree --help)",
              file=sys.stderr)
        return 2
    sys.argv[0] = f"bpfree {command}"  # argparse's prog: usage lines read "bpfree run ..."
    module = importlib.import_module(f"bpfree.{COMMANDS[command]}")
    return module.main(rest) or 0

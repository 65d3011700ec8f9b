"""``python -m bpfree``: the same as the installed ``bpfree`` command."""

import sys

from bpfree.cli import main

sys.exit(main())

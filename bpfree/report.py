"""Write results/report.md: every claim of the Mono-Forward paper and of the energy study with the
published figure, ours, the protocol behind ours and a verdict, from the results folder alone.

    bpfree report                      # after `make plots` (the tables it reads)
    bpfree report --results results --out results/report.md

Exit codes: 0 written, 2 the results folder is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.report import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the results folder (tables/ and runs/ inside)")
    p.add_argument("--out", help="the report's path (default <results>/report.md)")
    args = p.parse_args(argv)
    if not (Path(args.results) / "tables").is_dir():
        print(f"error: {args.results}/tables not found: run `make plots` first (or give --results)", file=sys.stderr)
        return 2
    path = write_report(args.results, args.out)
    print(f"wrote {path}")
    return 0

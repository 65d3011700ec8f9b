#!/usr/bin/env python
"""Write the energy-study table from the results folder alone (no training).

    python scripts/energy_study.py                      # the profile with the most finished runs
    python scripts/energy_study.py --profile quick
    python scripts/energy_study.py --results tests/fixtures/energy_study --spec tests/fixtures/energy_study/spec.yaml

Reads <results>/runs, <results>/sweeps/energy_study_<profile>.jsonl and <results>/studies (trial
counts); writes <out>/tables/energy_study.{md,csv} (benchmarks/energy_study.py) and prints the table.
`make reproduce-energy-study` tunes, runs and then calls this. Exit codes: 0 done (even with no
runs: the table says so), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from algorithms import ConfigError
from benchmarks.energy_study import SPEC, write_energy_study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results", help="results root: runs/, sweeps/, studies/ (default results)")
    p.add_argument("--out", help="where tables/ goes (default: the results folder)")
    p.add_argument("--profile", help="quick or paper (default: the one with the most finished runs)")
    p.add_argument("--spec", default=SPEC, help=f"spec name or path (default {SPEC})")
    p.add_argument("--params-file", help="tuned settings the runs used (default: the profile's params_file)")
    args = p.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"error: results folder {results} not found", file=sys.stderr)
        return 2
    try:
        notes = write_energy_study(results, Path(args.out) if args.out else results, profile=args.profile,
                                   spec=args.spec, params_file=args.params_file, log=print)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())

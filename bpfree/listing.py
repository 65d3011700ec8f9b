"""List what can be chosen: algorithms, architectures, datasets, measurements and sweep specs.

    bpfree list
"""

from __future__ import annotations

import argparse

from algorithms import ALGORITHMS, ARCHITECTURES
from benchmarks.datasets import DATASETS
from benchmarks.measure import METERS
from benchmarks.sweep.expand import load_spec, profile_names, spec_names


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    for title, registry in (("algorithms", ALGORITHMS), ("architectures", ARCHITECTURES),
                            ("datasets", DATASETS), ("measurements", METERS)):
        print(f"{title}: {', '.join(registry.names())}")
    specs = [f"{name} ({', '.join(profile_names(load_spec(name)))})" for name in spec_names()]
    print(f"specs (profiles): {', '.join(specs)}")
    return 0

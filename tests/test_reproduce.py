"""A table reproduced end to end, as `make reproduce-table6 PROFILE=quick` does, on a subset:
the sweep trains the bundled Breast Cancer cells, Santander is not on the machine, and the table
written from the results folder shows both, beside the published numbers."""

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script(*args, env):
    return subprocess.run([sys.executable, "-m", "bpfree", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_quick_table6_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFREE_")}
    env.update(BPFREE_NO_DOWNLOAD="1", BPFREE_DATA_DIR=str(tmp_path / "no-data"), OMP_NUM_THREADS="1")
    results = tmp_path / "results"
    subset = ["--profile", "quick", "--datasets", "breast_cancer,santander", "--seeds", "0",
              "--results", str(results)]
    listing = script("sweep", "table6", *subset, env=env)
    assert listing.returncode == 0 and listing.stdout.count("[todo]") == 6, listing.stdout + listing.stderr
    run = script("sweep", "table6", *subset, "--run", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 completed, 2 unavailable" in run.stdout
    again = script("sweep", "table6", *subset, "--run", env=env)  # nothing is trained twice
    assert "4 finished already, 2 to run" in again.stdout and "4 reused" in again.stdout

    table = script("plots", "--only", "table6", "--profile", "quick", "--results", str(results), env=env)
    assert table.returncode == 0, table.stderr
    assert "QUICK profile" in table.stdout
    rows = {(r["dataset"], r["row"]): r for r in csv.DictReader(open(results / "tables" / "table6.csv"))
            if r["network"] != "2x100, stratified split"}  # the same cells on the suite's own split: shown beside
    for algo in ("BP", "MF"):
        bc = rows[("breast_cancer", algo)]
        assert bc["n"] == "1" and 80.0 <= float(bc["mean"]) <= 100.0 and float(bc["published_mean"]) == 97.37
        assert abs(float(bc["difference"]) - (float(bc["mean"]) - 97.37)) < 0.01
        assert rows[("santander", algo)]["n"] == "0" and "unavailable" in rows[("santander", algo)]["note"]
        assert "not run yet" in rows[("imdb", algo)]["note"]
    assert (results / "tables" / "table6.md").exists() and (results / "tables" / "table6.tex").exists()

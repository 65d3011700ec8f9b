"""Tables are a function of the results folder: ``bpfree plots`` on the committed results writes
the committed tables byte for byte, and figures that are byte-identical from one drawing to the next
(no timestamp or version in their metadata)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "results"


def plots(out: Path, *only: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "bpfree", "plots", "--results", str(COMMITTED), "--out", str(out),
                           *(["--only", *only] if only else [])], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_committed_tables_regenerate_byte_for_byte(tmp_path):
    plots(tmp_path)
    committed = sorted(p.name for p in (COMMITTED / "tables").iterdir() if p.is_file())
    assert committed, "no committed tables"
    differ = [name for name in committed
              if not (tmp_path / "tables" / name).exists()
              or (tmp_path / "tables" / name).read_bytes() != (COMMITTED / "tables" / name).read_bytes()]
    assert differ == [], f"make plots would change {differ}"


def test_figures_are_byte_identical_from_one_drawing_to_the_next(tmp_path):
    plots(tmp_path / "a", "fig3", "fig4")
    plots(tmp_path / "b", "fig3", "fig4")
    drawn = sorted(p.name for p in (tmp_path / "a" / "figures").iterdir())
    assert any(n.endswith(".pdf") for n in drawn) and any(n.endswith(".png") for n in drawn)
    for name in drawn:
        assert (tmp_path / "a" / "figures" / name).read_bytes() == (tmp_path / "b" / "figures" / name).read_bytes(), name


def test_the_readme_quotes_table3_as_the_results_folder_has_it():
    """The README's paper-profile Table 3 block is written by hand: every cell must equal the table's."""
    import csv
    import re

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- table3-paper -->\n(.*?)<!-- /table3-paper -->", readme, re.S).group(1)
    lines = [line for line in block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    datasets = {"MNIST": "mnist", "Fashion-MNIST": "fmnist", "CIFAR-10-JPEG": "cifar10-jpeg"}
    with open(COMMITTED / "tables" / "table3.csv", newline="") as f:
        table = {(r["dataset"], r["row"]): r for r in csv.DictReader(f) if r["profile"] == "paper"}

    def quoted(r):
        n = int(r["n"])
        if n == 0:
            return "—"
        std = f" ± {float(r['std']):.2f}" if n > 1 else ""
        return f"{float(r['mean']):.2f}{std} (n={n})"

    checked = 0
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for title, cell in zip(header[1:], cells[1:]):
            name, _, kind = title.rpartition(" ")
            r = table[(datasets[name], cells[0])]
            expected = quoted(r) if kind == "ours" else f"{float(r['published_mean']):.2f}"
            assert cell == expected, f"README {cells[0]} {title}: {cell!r}, the table has {expected!r}"
            checked += 1
    assert checked >= 24

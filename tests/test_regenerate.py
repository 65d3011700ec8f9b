"""Tables are a function of the results folder: ``scripts/plots.py`` on the committed results writes
the committed tables byte for byte, and figures that are byte-identical from one drawing to the next
(no timestamp or version in their metadata)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "results"


def plots(out: Path, *only: str) -> None:
    proc = subprocess.run([sys.executable, "scripts/plots.py", "--results", str(COMMITTED), "--out", str(out),
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

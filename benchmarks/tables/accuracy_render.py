"""How an accuracy table looks: the ``AccuracyTable`` that ``accuracy_tables.build_table`` returns, and
its markdown (aligned pipe table), CSV (plain numbers) and LaTeX (booktabs) forms.

Pure functions of the table's rows; nothing here reads run folders.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What a reader must know about one of our datasets beside the paper's numbers
DATASET_NOTES = {"cifar10-jpeg": "lossy JPEG copy of CIFAR-10"}
COLUMNS = ("table", "profile", "network", "paper_arch", "dataset", "paper_dataset", "row", "algorithm", "mode",
           "published_mean", "published_std", "mean", "std", "n", "seeds", "difference", "note", "by_test_mean",
           "by_test_std", "values", "epochs_mean", "epoch_time_mean_s")


# where a spec's published values come from, by its ``reference``; the Mono-Forward paper otherwise
PUBLISHED = {"sff": "Krutsylo 2025, Scalable Forward-Forward (a cell without a comparable value says why)",
             "fg": "Ren, Kornblith, Liao, Hinton 2023, forward gradient with local losses (a cell without a "
                   "comparable value says why)"}
MONO_FORWARD = "Gong, Li, Abdulla 2025 (their learning rate and batch size were tuned on the test set)"


@dataclass
class AccuracyTable:
    name: str
    profile: str
    title: str  # bold first line: table and caption
    profile_line: str  # what the profile is, e.g. "QUICK profile: ..., NOT the paper's protocol"
    rows: list[dict[str, Any]] = field(default_factory=list)
    published: str = MONO_FORWARD  # the source of the published column, for the footnote
    tuning: str = ""  # where the tuned settings came from and their budget ("" when nothing was tuned)

    @property
    def markdown(self) -> str:
        return to_markdown(self)

    @property
    def csv(self) -> str:
        return to_csv(self.rows)

    @property
    def latex(self) -> str:
        return to_latex(self)


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _diff(value: float | None) -> str:
    return "—" if value is None else f"{round(value, 2) + 0.0:+.2f}"  # + 0.0: -0.004 rounds to 0.00, not -0.00


HEADER = ("network", "dataset", "row", "published", "ours", "n", "diff", "by test", "epochs", "s/epoch", "note")
RIGHT = {"published", "ours", "n", "diff", "by test", "epochs", "s/epoch"}
FOOTNOTE = ("Test accuracy (%) at the epoch with the best validation accuracy (patience: epochs without a "
            "better one before a run stops); ours: mean ± std (ddof 1) over the n seeds that completed; "
            "diff = ours − published, in points; by test: the same seeds with each one's epoch chosen by its test "
            "accuracy instead, as a protocol that selects on the test set reports them (optimistic; it sizes "
            "that choice's effect and decides nothing). Cost, kept apart from accuracy: epochs, the mean number "
            "of epochs the seeds trained (early stopping, or a matched budget's fixed count); s/epoch, their mean "
            "training time per epoch (training steps only, no evaluation), on the machine each run was made "
            "on, often beside other work: compare it only within one table's rows. Published: {published}.")


def _cells(row: dict[str, Any]) -> list[str]:
    return [row["network"], row["dataset"], row["row"], _fmt(row["published_mean"], row["published_std"]),
            _fmt(row["mean"], row["std"]), str(row["n"]), _diff(row["difference"]),
            _fmt(row.get("by_test_mean"), row.get("by_test_std")), _count(row.get("epochs_mean")),
            _seconds(row.get("epoch_time_mean_s")), row["note"]]


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    """Three significant digits (0.00834, 2.51, 48.2), whole seconds from 100 on."""
    return "—" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def to_markdown(table: AccuracyTable) -> str:
    """A pipe table with aligned columns (readable in a terminal), title and profile line above it."""
    body = [_cells(r) for r in table.rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(HEADER)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if h in RIGHT else c.ljust(w)
                                 for c, w, h in zip(cells, widths, HEADER)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if h in RIGHT else ("-" * (w + 2)) for w, h in zip(widths, HEADER)) + "|"
    lines = [f"**{table.title}**", "", table.profile_line, *(["", table.tuning] if table.tuning else []), "",
             line(HEADER), rule, *(line(b) for b in body)]
    notes = [FOOTNOTE.format(published=table.published)]
    if any(r["dataset"] in DATASET_NOTES for r in table.rows):
        notes.append("cifar10-jpeg is a lossy JPEG copy of CIFAR-10 (the only CIFAR-10 offline); it is compared "
                     "with the paper's CIFAR-10 values.")
    if not body:
        notes.append("The spec has no rows for this table.")
    return "\n".join(lines + [""] + notes) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return "" if value is None else value


def seed_values(per_seed: list[tuple[int, float]]) -> str:
    """Each completed seed's value for the CSV's ``values`` column: ``"0:98.31;1:98.27;2:98.35"`` (seed,
    then the value the mean is computed from, rounded as the CSV's other numbers); "" when none."""
    return ";".join(f"{seed}:{_plain(float(value))}" for seed, value in per_seed)


def parse_seed_values(text: str | None) -> dict[int, float]:
    """The inverse of ``seed_values``: ``{seed: value}`` ({} for "" or None)."""
    out = {}
    for part in (text or "").split(";"):
        if part.strip():
            seed, _, value = part.partition(":")
            out[int(seed)] = float(value)
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Plain numbers (4 decimals), empty where there is none; one line per cell; ``values`` as
    ``seed_values`` writes it."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _plain(row[k]) for k in COLUMNS})
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "—": "---", "−": "-", "…": r"\ldots{}", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_number(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "---"
    return f"${mean:.2f}" + (rf" \pm {std:.2f}$" if std is not None else "$")


def to_latex(table: AccuracyTable) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``), one rule between networks."""
    lines = [f"% {latex_escape(table.title)}", f"% {latex_escape(table.profile_line)}",
             r"% needs \usepackage{booktabs}",
             r"\begin{tabular}{lllrrrrp{5.5cm}}", r"\toprule",
             r"Network & Dataset & Row & Published & Ours & $n$ & $\Delta$ & Note \\", r"\midrule"]
    previous = None
    for r in table.rows:
        if previous is not None and r["network"] != previous["network"]:
            lines.append(r"\midrule")
        elif previous is not None and r["dataset"] != previous["dataset"]:
            lines.append(r"\addlinespace")
        diff = "---" if r["difference"] is None else f"${r['difference']:+.2f}$"
        cells = [latex_escape(r["network"]), latex_escape(r["dataset"]), latex_escape(r["row"]),
                 _tex_number(r["published_mean"], r["published_std"]), _tex_number(r["mean"], r["std"]),
                 str(r["n"]), diff, latex_escape(r["note"])]
        lines.append(" & ".join(cells) + r" \\")
        previous = r
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(table: AccuracyTable, out_dir: Path, name: str | None = None) -> list[Path]:
    """``name.md``, ``name.csv`` and ``name.tex`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or table.name
    paths = []
    for ext, text in (("md", table.markdown), ("csv", table.csv), ("tex", table.latex)):
        path = out_dir / f"{name}.{ext}"
        path.write_text(text)
        paths.append(path)
    return paths

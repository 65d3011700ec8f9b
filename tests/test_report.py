"""The claim-by-claim report: verdicts from table CSVs, never `confirmed` on quick-profile numbers."""

import csv
from pathlib import Path

from benchmarks.report import all_claims, to_markdown, write_report

FIELDS = ["table", "profile", "network", "paper_arch", "dataset", "paper_dataset", "row", "algorithm", "mode",
          "published_mean", "published_std", "mean", "std", "n", "seeds", "difference", "note"]


def write_table(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})


def cell(profile, dataset, row, mean, std, n, note=""):
    return {"table": "table3", "profile": profile, "network": "2x1000", "dataset": dataset, "row": row,
            "published_mean": "98.7", "mean": mean, "std": std, "n": n, "note": note}


def accuracy_verdicts(tmp_path, rows):
    write_table(tmp_path / "tables" / "table3.csv", rows)
    return {(c.claim, c.protocol): c for c in all_claims(tmp_path) if "Table 3" in c.source}


def test_paper_profile_mf_level_with_bp_within_one_standard_error_is_confirmed(tmp_path):
    claims = accuracy_verdicts(tmp_path, [
        cell("paper", "mnist", "BP", "98.60", "0.10", "3"), cell("paper", "mnist", "MF (FF pred)", "98.55", "0.10", "3"),
        cell("paper", "fmnist", "BP", "90.0", "0.1", "3"), cell("paper", "fmnist", "MF (FF pred)", "89.0", "0.1", "3")])
    assert claims[("MF (FF pred) matches or beats BP: 2x1000, mnist", "paper")].verdict == "confirmed"
    behind = claims[("MF (FF pred) matches or beats BP: 2x1000, fmnist", "paper")]
    assert behind.verdict == "not confirmed" and "standard error" in behind.why


def test_quick_profile_is_never_confirmed_and_says_so(tmp_path):
    claims = accuracy_verdicts(tmp_path, [cell("quick", "mnist", "BP", "95.0", "0.1", "2"),
                                          cell("quick", "mnist", "MF (FF pred)", "96.0", "0.1", "2")])
    [claim] = claims.values()
    assert claim.verdict == "not confirmed" and "quick profile only" in claim.why


def test_a_missing_dataset_is_not_measurable_here(tmp_path):
    claims = accuracy_verdicts(tmp_path, [cell("paper", "cifar100", "BP", "", "", "0", "dataset unavailable here"),
                                          cell("paper", "cifar100", "MF (FF pred)", "", "", "0",
                                               "dataset unavailable here")])
    [claim] = claims.values()
    assert claim.verdict == "not measurable here" and "unavailable" in claim.why


def test_each_cell_is_judged_on_the_paper_profile_where_it_ran_else_on_the_quick_one(tmp_path):
    write_table(tmp_path / "tables" / "table3_quick.csv", [
        cell("quick", "mnist", "BP", "95.0", "0.1", "2"), cell("quick", "mnist", "MF (FF pred)", "96.0", "0.1", "2"),
        cell("quick", "fmnist", "BP", "84.0", "0.1", "2"), cell("quick", "fmnist", "MF (FF pred)", "85.0", "0.1", "2")])
    claims = accuracy_verdicts(tmp_path, [
        cell("paper", "mnist", "BP", "98.60", "0.10", "3"), cell("paper", "mnist", "MF (FF pred)", "98.65", "0.10", "3"),
        cell("paper", "fmnist", "BP", "", "", "0", "not run yet"), cell("paper", "fmnist", "MF (FF pred)", "", "", "0")])
    assert set(claims) == {("MF (FF pred) matches or beats BP: 2x1000, mnist", "paper"),
                           ("MF (FF pred) matches or beats BP: 2x1000, fmnist", "quick")}
    assert claims[("MF (FF pred) matches or beats BP: 2x1000, mnist", "paper")].verdict == "confirmed"
    quick = claims[("MF (FF pred) matches or beats BP: 2x1000, fmnist", "quick")]
    assert quick.verdict == "not confirmed" and quick.links == ["tables/table3_quick.md"]


def test_report_is_written_from_the_results_folder_alone(tmp_path):
    write_table(tmp_path / "tables" / "table3.csv", [cell("paper", "mnist", "BP", "98.6", "0.1", "3"),
                                                     cell("paper", "mnist", "MF (BP pred)", "98.7", "0.1", "3")])
    path = write_report(tmp_path)
    text = path.read_text()
    assert "| Mono-Forward paper, Table 3 | MF (BP pred) matches or beats BP: 2x1000, mnist |" in text
    assert "**confirmed**" in text and "1 confirmed" in text
    assert (tmp_path / "report.json").exists()
    assert to_markdown([]).count("\n") >= 4  # an empty results folder still gives the header

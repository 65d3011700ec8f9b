"""Every verdict rule of the report (benchmarks/report/rules.py) and the paired statistics behind the
accuracy claims (benchmarks/report/stats.py): for each rule a case it passes and a counter-example it
must reject, so that no rule is one that cannot fail."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
from scipy import stats as scipy_stats

from benchmarks.report import all_claims, rules, stats
from benchmarks.report.common import Claim


def seeds(*values) -> dict[int, float]:
    return dict(enumerate(values))


# -- stats: the paired comparison ----------------------------------------------------------------

def test_paired_numbers_are_the_paired_t_test_and_tost_by_hand():
    a, b = seeds(98.29, 98.36, 98.28), seeds(98.38, 98.43, 98.27)
    c = stats.compare(a, b)
    d = [a[k] - b[k] for k in a]
    se = statistics.stdev(d) / math.sqrt(3)
    assert c.n == 3 and c.diff == pytest.approx(statistics.fmean(d)) and c.sd == pytest.approx(statistics.stdev(d))
    half = scipy_stats.t.ppf(0.975, 2) * se
    assert c.ci == pytest.approx((c.diff - half, c.diff + half))
    assert c.p_better == pytest.approx(scipy_stats.t.sf(c.diff / se, 2))
    assert c.p_worse == pytest.approx(scipy_stats.t.cdf(c.diff / se, 2))
    lower = scipy_stats.t.sf((c.diff + 0.25) / se, 2)  # H0: diff <= -0.25
    upper = scipy_stats.t.cdf((c.diff - 0.25) / se, 2)  # H0: diff >= +0.25
    assert c.p_tost == pytest.approx(max(lower, upper))
    assert c.verdict == "equivalent"  # alone (no family): TOST p 0.011


def test_only_the_seeds_both_have_are_paired():
    c = stats.compare({0: 90.0, 1: 91.0, 2: 92.0, 3: 93.0}, {1: 90.0, 2: 91.0, 3: 92.0, 4: 50.0})
    assert [s for s, _, _ in c.pairs] == [1, 2, 3] and c.only_a == [0] and c.only_b == [4]
    assert c.diff == pytest.approx(1.0)


def test_n_2_gives_inconclusive_whatever_the_difference():
    c = stats.compare(seeds(99.0, 99.5), seeds(90.0, 90.2))
    assert c.n == 2 and c.verdict == "inconclusive (n too small)" and c.ci is not None
    assert rules.matches_or_beats(c, "paper")[0] == "inconclusive"
    assert rules.beats(c, "paper")[0] == "inconclusive"
    assert "nothing is claimed" in rules.matches_or_beats(c, "paper")[1]
    assert stats.holm([c]) == []  # it takes no part in a family


@pytest.mark.parametrize("offset, expected, p_tost", [
    (0.0, "equivalent", 0.0),  # identical on every seed
    (0.1, "better", 0.0),  # ahead by the same 0.1 on every seed: reliably ahead (checked before equivalence)
    (-0.1, "worse", 0.0),
    (0.25, "better", 1.0),  # on the margin is not inside it
    (-0.6, "worse", 1.0),
])
def test_zero_variance_of_the_differences_is_decided_as_the_limit_of_the_t_tests(offset, expected, p_tost):
    b = seeds(97.3684, 97.9532, 98.2456)
    a = {k: v + offset for k, v in b.items()}
    c = stats.compare(a, b)
    assert c.zero_variance and c.sd == 0.0 and c.ci == (pytest.approx(offset), pytest.approx(offset))
    assert c.p_tost == p_tost and c.verdict == expected
    assert "the CI is a point" in c.words()


def test_zero_variance_inside_the_margin_without_a_difference_is_equivalent_not_better():
    c = stats.compare(seeds(97.3684, 97.3684, 97.3684), seeds(97.3684, 97.3684, 97.3684))
    assert (c.p_better, c.p_worse, c.p_tost, c.verdict) == (1.0, 1.0, 0.0, "equivalent")


def test_holm_changes_a_borderline_verdict_in_a_family_of_several_claims():
    borderline = stats.compare(seeds(90.0, 90.1, 89.9), seeds(90.0, 90.0, 90.0))  # diffs 0, +0.1, -0.1
    assert 0.02 < borderline.p_tost < 0.05 and borderline.verdict == "equivalent"  # alone: equivalent
    others = [stats.compare(seeds(90.0, 90.5, 89.5), seeds(90.0, 90.0, 90.0 + k)) for k in (0.1, 0.2, 0.3)]
    family = stats.holm([borderline, *others])
    assert len(family) == 4 and borderline.family == 4
    assert borderline.p_tost_holm > 0.05 and borderline.verdict == "inconclusive"
    assert rules.matches_or_beats(borderline, "paper")[0] == "inconclusive"
    assert "Holm over 4" in borderline.words()
    stats.holm([borderline])  # a family of its own again: the raw p values, not the last family's
    assert borderline.family == 1 and borderline.verdict == "equivalent"


# -- matches or beats, beats -------------------------------------------------------------------

def old_rule(a: dict, b: dict) -> bool:
    """The rule the paired statistics replace: diff >= -se - 1e-3 (se of the unpaired difference)."""
    va, vb = list(a.values()), list(b.values())
    se = math.sqrt(statistics.variance(va) / len(va) + statistics.variance(vb) / len(vb))
    return statistics.fmean(va) - statistics.fmean(vb) >= -se - 1e-3


@pytest.mark.parametrize("d", [0.8772, 2.0, 10.0])  # 0.8772: one of 114 test cases, Table 6's Breast Cancer
def test_table6_degenerate_case_mf_constant_bp_a_a_a_plus_d_is_not_confirmed(d):
    a = 97.3684
    mf, bp = seeds(a, a, a), seeds(a, a, a + d)
    assert old_rule(mf, bp)  # the old rule confirmed it for every d: diff equals -se
    c = stats.compare(mf, bp)
    verdict, why = rules.matches_or_beats(c, "paper")
    assert verdict != "confirmed" and c.verdict in ("inconclusive", "worse")
    assert f"diff {-d / 3:+.2f}" in why and "95 % CI" in why and "TOST" in why


def test_matches_or_beats_confirms_an_equivalent_or_better_result_and_rejects_a_worse_one():
    bp = seeds(98.5, 98.6, 98.7)
    assert rules.matches_or_beats(stats.compare(seeds(98.45, 98.6, 98.6), bp), "paper")[0] == "confirmed"
    assert rules.matches_or_beats(stats.compare(seeds(99.5, 99.3, 99.8), bp), "paper")[0] == "confirmed"
    worse = rules.matches_or_beats(stats.compare(seeds(97.5, 97.7, 97.6), bp), "paper")
    assert worse[0] == "not confirmed" and "paired verdict worse" in worse[1]
    noisy = rules.matches_or_beats(stats.compare(seeds(97.0, 99.5, 98.0), bp), "paper")
    assert noisy[0] == "inconclusive"


def test_a_quick_profile_comparison_is_never_confirmed():
    c = stats.compare(seeds(98.45, 98.6, 98.6), seeds(98.5, 98.6, 98.7))
    assert rules.matches_or_beats(c, "paper")[0] == "confirmed"
    verdict, why = rules.matches_or_beats(c, "quick")
    assert verdict == "not confirmed" and "quick profile only" in why and "agrees there" in why


def test_beats_needs_better_and_equivalence_refutes_it():
    bp = seeds(90.0, 90.2, 90.4)
    assert rules.beats(stats.compare(seeds(91.0, 91.3, 91.4), bp), "paper")[0] == "confirmed"
    assert rules.beats(stats.compare(seeds(90.0, 90.25, 90.35), bp), "paper")[0] == "not confirmed"  # equivalent


# -- the Mono-Forward paper's tables and figures ------------------------------------------------

def test_table1_deepest_layer_best_or_within_the_margin_and_every_layer_above_chance():
    assert rules.layer_readouts([("layer 1", 45.0), ("layer 2", 46.0), ("layer 3", 46.5)], "cifar10-jpeg",
                                "paper")[0] == "confirmed"
    assert rules.layer_readouts([("layer 1", 45.0), ("layer 2", 46.6), ("layer 3", 46.5)], "cifar10-jpeg",
                                "paper")[0] == "confirmed"  # 0.1 below the best: within 0.25


def test_table1_first_layer_best_is_rejected():
    verdict, why = rules.layer_readouts([("layer 1", 47.0), ("layer 2", 46.0), ("layer 3", 45.0)], "cifar10-jpeg",
                                        "paper")
    assert verdict == "not confirmed" and "layer 3" in why and "layer 1" in why


def test_table1_a_layer_at_chance_is_rejected():
    verdict, why = rules.layer_readouts([("layer 1", 10.0), ("layer 2", 50.0)], "cifar10-jpeg", "paper")
    assert verdict == "not confirmed" and "chance" in why


def test_table1_rule_through_the_report(tmp_path):
    path = tmp_path / "tables" / "table1.csv"
    path.parent.mkdir(parents=True)
    fields = ["table", "profile", "network", "dataset", "row", "published_mean", "mean", "n"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for row, mean in (("MF layer 1", "62.0"), ("MF layer 2", "61.0")):
            w.writerow({"table": "table1", "profile": "paper", "network": "lc-mlp 4,8", "dataset": "cifar10-jpeg",
                        "row": row, "published_mean": "", "mean": mean, "n": "3"})
    [claim] = [c for c in all_claims(tmp_path) if "readout" in c.claim]
    assert claim.verdict == "not confirmed" and claim.source == "Mono-Forward paper v1, Table 1"


def test_latency_needs_a_paper_record_with_enough_timed_calls():
    ratios = {"single_ms": 0.95, "batch_ms": 1.02}
    assert rules.prediction_as_fast(ratios, "paper", {"1 image": 3000, "batch": 150})[0] == "confirmed"
    quick = rules.prediction_as_fast(ratios, "quick", {"1 image": 3000, "batch": 150})
    assert quick[0] == "not confirmed" and "quick profile only" in quick[1]
    few = rules.prediction_as_fast(ratios, "paper", {"1 image": 3000, "batch": 1})
    assert few[0] == "inconclusive" and "fewer than 100 timed calls: batch 1" in few[1]
    assert rules.prediction_as_fast({"single_ms": 1.3}, "paper", {"1 image": 3000})[0] == "not confirmed"


def latency_results(tmp_path, profile: str, calls: int):
    tables = tmp_path / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    fields = ["device", "row", "single_ms", "batch_ms", "paper_single_ms"]
    with open(tables / "table4.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerow({"device": "CPU X (2 threads)", "row": "BP", "single_ms": "0.30", "batch_ms": "400"})
        w.writerow({"device": "CPU X (2 threads)", "row": "MF (BP pred)", "single_ms": "0.31", "batch_ms": "405"})
    (tmp_path / "latency").mkdir(exist_ok=True)
    timed = {"blocks": 10, "calls": calls, "median_ms": 1.0}
    (tmp_path / "latency" / "table4_cpu-x.json").write_text(json.dumps({
        "profile": profile, "environment": {"cpu_model": "CPU X", "cpu_threads": 2},
        "rows": [{"row": r, "single": dict(timed, calls=5000), "batch": timed} for r in ("BP", "MF (BP pred)")]}))
    [claim] = [c for c in all_claims(tmp_path) if "Table 4" in c.source]
    return claim


def test_a_quick_profile_latency_record_is_not_confirmed(tmp_path):
    quick = latency_results(tmp_path, "quick", 500)
    assert quick.verdict == "not confirmed" and "quick profile only" in quick.why and "quick profile" in quick.protocol
    assert latency_results(tmp_path, "paper", 500).verdict == "confirmed"
    one_call = latency_results(tmp_path, "paper", 1)
    assert one_call.verdict == "inconclusive" and "batch: 1 timed calls" in one_call.n


def test_memory_slope_epoch_time_and_convergence_rules():
    assert rules.memory_slope(20.0, 256.0, "paper")[0] == "confirmed"
    assert rules.memory_slope(150.0, 256.0, "paper")[0] == "not confirmed"
    assert rules.memory_slope(20.0, None, "paper")[0] == "not run"
    assert rules.faster_beyond_noise(1.2, "paper")[0] == "confirmed"
    assert rules.faster_beyond_noise(1.02, "paper")[0] == "inconclusive"  # inside 5 %: the sign alone is noise
    assert rules.faster_beyond_noise(0.8, "paper")[0] == "not confirmed"
    assert rules.converges_as_fast(3.0, 3.5, 2.0, 2.5, "paper")[0] == "confirmed"
    assert rules.converges_as_fast(3.0, 6.0, 2.0, 2.5, "paper")[0] == "not confirmed"


def test_missing_numbers_say_not_run_or_not_measurable_not_not_confirmed():
    assert rules.missing("dataset unavailable here")[0] == "not measurable here"
    assert rules.missing("not run yet")[0] == "not run"
    assert rules.missing("")[0] == "not run"
    assert rules.missing("diverged (seed 1, epoch 3)")[0] == "not confirmed"  # ran, and failed


# -- Section 3.3 ------------------------------------------------------------------------------------

def test_bitwise_equality_is_a_fact_on_any_profile():
    assert rules.bitwise_equal(True) == ("confirmed", "")
    assert rules.bitwise_equal(False)[0] == "not confirmed"
    assert rules.bitwise_equal(None)[0] == "not run"


def test_plugged_layer_as_good_and_cheaper():
    assert rules.plugged_as_good(98.3, 98.4, 0.5, "paper")[0] == "confirmed"
    assert rules.plugged_as_good(97.0, 98.4, 0.5, "paper")[0] == "not confirmed"
    assert rules.plugged_as_good(98.4, 98.4, 1.2, "paper")[0] == "not confirmed"


def test_an_unplug_that_loses_accuracy_is_rejected_even_when_the_equality_holds():
    # the unplugged net equals the 2-layer net bit for bit (the equality), but is 2 points below the full net
    verdict, why = rules.unplug_leaves_working_net(96.0, 98.0, 96.0, "paper")
    assert verdict == "not confirmed" and "costs 2.00 points" in why
    assert rules.unplug_leaves_working_net(98.19, 98.34, 98.19, "paper")[0] == "confirmed"
    assert rules.unplug_leaves_working_net(98.19, 98.34, 99.0, "paper")[0] == "not confirmed"  # below the shallower
    assert rules.unplug_leaves_working_net(None, 98.34, None, "paper")[0] == "not run"


def test_damage_rule_passes_when_mf_falls_back_and_bp_does_not():
    assert rules.damaged_layer(98.2, 98.1, 98.2, 98.0, 9.0, "paper")[0] == "confirmed"


def test_a_missing_retraining_result_is_rejected():
    verdict, why = rules.damaged_layer(98.2, 98.1, None, 98.0, 9.0, "paper")
    assert verdict == "not run" and "retraining" in why
    assert rules.damaged_layer(98.2, 98.1, 98.2, None, None, "paper")[0] == "not run"  # no BP to contrast


def test_damage_rule_needs_the_damage_to_show_in_bp_and_mf_below_k_within_the_margin():
    assert rules.damaged_layer(98.2, 98.1, 98.2, 98.0, 97.9, "paper")[0] == "not confirmed"  # BP unharmed
    assert rules.damaged_layer(98.2, 97.5, 98.2, 98.0, 9.0, "paper")[0] == "not confirmed"  # 0.7 below
    assert rules.damaged_layer(98.2, 98.1, 96.0, 98.0, 9.0, "paper")[0] == "not confirmed"  # not restored


def test_damage_claim_from_a_record_without_retraining_is_not_confirmed(tmp_path):
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    damages = {"reinit": {"no_retraining": {"below": 98.1, "ff": 97.0, "output": 9.0}}}  # no "retraining"
    runs = [{"algorithm": alg, "dataset": "mnist", "widths": [1000, 1000], "undamaged": {"ff": 98.2, "output": 98.0},
             "layers": {"2": {"damages": damages}}} for alg in ("mf", "bp")]
    (claims_dir / "damage_paper.json").write_text(json.dumps({"runs": runs}))
    [claim] = [c for c in all_claims(tmp_path) if "destroyed" in c.claim]
    assert claim.verdict == "not run" and "retraining" in claim.why


def test_layer_parallel_rule():
    assert rules.layer_parallel(1.9, 0.4, "paper")[0] == "confirmed"
    assert rules.layer_parallel(0.9, 0.4, "paper")[0] == "not confirmed"
    assert rules.layer_parallel(1.5, 1.8, "paper")[0] == "not confirmed"


# -- the energy study -------------------------------------------------------------------------------

def test_energy_difference_of_the_right_sign_beyond_the_noise_is_confirmed():
    noise, words = rules.difference_noise("%", 90.0, 1.0, 3, 100.0, 1.0, 3)
    assert noise == rules.RELATIVE_NOISE_PCT  # 2 s.e. = 1.6 %: the 5 % threshold is larger
    assert rules.same_direction_beyond_noise(-10.0, -13.3, noise, words, "paper")[0] == "confirmed"
    assert rules.same_direction_beyond_noise(+10.0, -13.3, noise, words, "paper")[0] == "not confirmed"


def test_energy_difference_of_the_right_sign_inside_the_noise_is_inconclusive():
    noise, words = rules.difference_noise("%", 97.0, 6.0, 3, 100.0, 6.0, 3)  # 2 s.e. = 9.8 %
    assert noise == pytest.approx(2 * 100 * math.sqrt(2 * 36 / 3) / 100)
    verdict, why = rules.same_direction_beyond_noise(-3.0, -13.3, noise, words, "paper")
    assert verdict == "inconclusive" and "inside the run-to-run noise" in why
    one_seed, words = rules.difference_noise("%", 97.0, 0.0, 1, 100.0, 0.0, 1)  # one seed: the threshold
    assert one_seed == rules.RELATIVE_NOISE_PCT and "one seed" in words
    assert rules.same_direction_beyond_noise(-3.0, -13.3, one_seed, words, "paper")[0] == "inconclusive"
    points, _ = rules.difference_noise("points", 98.0, 0.0, 1, 98.0, 0.0, 1)
    assert rules.same_direction_beyond_noise(0.1, 0.09, points, "", "paper")[0] == "inconclusive"


def test_energy_inside_the_noise_through_the_report(tmp_path):
    fields = ["network", "dataset", "algorithm", "status", "n", "note", "trials", "test_acc", "test_acc_std",
              "acc_diff_points", "study_acc_diff_points", "train_time_s", "train_time_std", "time_diff_pct",
              "study_time_diff_pct", "energy_j", "energy_std", "energy_diff_pct", "study_energy_diff_pct",
              "energy_source"]
    path = tmp_path / "tables" / "energy_study.csv"
    path.parent.mkdir(parents=True)
    common = {"network": "2x1000", "dataset": "mnist", "status": "completed", "n": "3", "note": "", "trials": "30",
              "energy_source": "NVML, training steps"}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerow(dict(common, algorithm="bp", test_acc="98.0", test_acc_std="0.1", train_time_s="100",
                        train_time_std="1", energy_j="1000", energy_std="80"))
        w.writerow(dict(common, algorithm="mf", test_acc="98.1", test_acc_std="0.1", acc_diff_points="0.1",
                        study_acc_diff_points="0.09", train_time_s="80", train_time_std="1", time_diff_pct="-20",
                        study_time_diff_pct="-12.1", energy_j="960", energy_std="80", energy_diff_pct="-4",
                        study_energy_diff_pct="-13.3"))
    claims = {c.claim: c for c in all_claims(tmp_path) if c.source.startswith("Spyra 2025")}
    assert claims["MF vs BP: 2x1000, mnist: training time"].verdict == "confirmed"
    energy = claims["MF vs BP: 2x1000, mnist: energy"]
    assert energy.verdict == "inconclusive" and "2 s.e." in energy.why  # -4 %, the seeds' spread 13 %
    assert claims["MF vs BP: 2x1000, mnist: accuracy"].verdict == "inconclusive"  # +0.1 points, inside 0.25
    assert energy.version.startswith("September 2025")


# -- local learning's costs ---------------------------------------------------------------------

def test_memory_and_speed_rules_of_the_local_learning_claims():
    assert rules.lighter_memory(0.7, "paper")[0] == "confirmed"
    assert rules.lighter_memory(1.1, "paper")[0] == "not confirmed"
    assert rules.similar_speed(1.2, "paper")[0] == "confirmed"
    assert rules.similar_speed(1.6, "paper")[0] == "not confirmed"
    assert rules.similar_speed(None, "paper")[0] == "not run"


# -- the report ---------------------------------------------------------------------------------

def test_every_verdict_is_one_of_the_reports_and_counted_in_its_header(tmp_path):
    from benchmarks.report import to_markdown
    from benchmarks.report.common import VERDICTS

    claims = [Claim("s", "c", "p", "o", "paper", "1", v) for v in VERDICTS]
    head = to_markdown(claims).split("\n")[2]
    assert all(f"1 {v}" in head for v in VERDICTS)
    assert set(VERDICTS) == {"confirmed", "not confirmed", "inconclusive", "not run", "not measurable here"}


def test_the_committed_report_judges_every_paired_claim_by_the_paired_rule():
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "results"
    claims = all_claims(results)
    paired = [c for c in claims if c.paired is not None]
    assert paired and all(c.rule in rules.PAIRED_RULES for c in paired)
    for c in paired:
        assert c.verdict != "confirmed" or (c.profile == "paper" and c.paired.verdict in ("better", "equivalent"))
    breast = next(c for c in claims if "breast_cancer" in c.claim and "Table 6" in c.source)
    assert breast.verdict != "confirmed"  # MF constant, BP [a, a, a + d]: the old rule confirmed it

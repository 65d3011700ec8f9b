"""Every verdict rule of the claim-by-claim report, each in one place: one small function per rule, which
takes the numbers the claim rests on and returns ``(verdict, why)``. The modules that build the claims
(``mono_forward``, ``section_3_3``, ``energy``, ``local_learning``) read the results and call these;
tests/test_verdict_rules.py holds, for each rule, a case it passes and a counter-example it rejects.

Verdicts (``common.VERDICTS``): ``confirmed``, ``not confirmed``, ``inconclusive`` (the numbers
cannot tell: too few seeds, a difference inside the noise), ``not run`` (nothing was run that the
claim needs), ``not measurable here`` (what the claim needs is not on this machine). A claim judged on
reduced-profile (``quick``) numbers is never ``confirmed`` (``reduced``); an exact equality, which no
scale changes, is the one exception.

The thresholds, stated once:

* ``stats.MARGIN`` (±0.25 accuracy points): the equivalence margin of "matches", and the margin of
  every single-run accuracy comparison (Table 1's layers, Section 3.3);
* ``COMPARABLE_POINTS`` (1 point): the equivalence margin of SFF's "comparable";
* ``RELATIVE_NOISE_PCT`` (5 %): the least relative difference in time or energy that counts, where
  the seeds' spread does not give a larger one (or there is one seed only); ``NOISE_SE`` standard
  errors of the difference: the seeds' spread;
* ``MIN_TIMED_CALLS`` (100, the paper's "mean of 100 runs"): the least timed calls a latency figure
  rests on;
* ``MEMORY_SLOPE_SHARE`` (0.5): "far slower" memory growth is at most half BP's slope per layer;
  ``SIMILAR_SPEED`` (1.25): "similar training speed" is an epoch at most 25 % longer than BP's.
"""

from __future__ import annotations

import math
from typing import Sequence

import benchmarks.report.stats as stats
from .common import quick_note

Verdict = tuple[str, str]

MARGIN = stats.MARGIN
COMPARABLE_POINTS = 1.0
RELATIVE_NOISE_PCT = 5.0
NOISE_SE = 2.0
MIN_TIMED_CALLS = 100
MEMORY_SLOPE_SHARE = 0.5
SIMILAR_SPEED = 1.25
LATENCY_SLACK = 1.10  # "as fast": MF's BP-mode prediction at most 10 % slower than BP's (the same layers' work)
CLASSES = {"mnist": 10, "fmnist": 10, "cifar10": 10, "cifar10-jpeg": 10, "cifar100": 100, "digits": 10,
           "breast_cancer": 2, "santander": 2, "imdb": 2}


def reduced(verdict: Verdict, profile: str) -> Verdict:
    """A verdict from a reduced profile: never ``confirmed``; what the numbers say there, in the why.
    ``not run`` and ``not measurable here`` stand as they are."""
    v, why = verdict
    if profile == "paper" or v in ("not run", "not measurable here"):
        return verdict
    there = {"confirmed": "agrees there", "not confirmed": "disagrees there",
             "inconclusive": "inconclusive there"}[v]
    return "not confirmed", f"{quick_note(profile)}; {there}" + (f" ({why})" if why else "")


def missing(note: str) -> Verdict:
    """A claim without numbers: why (the table's note) decides between a dataset that is not here, a
    run that failed or diverged (the algorithm's result: not confirmed), and nothing run yet."""
    note = note or "no finished run"
    if "unavailable" in note or "not on this machine" in note:
        return "not measurable here", note
    if "diverged" in note or "failed" in note:
        return "not confirmed", note
    return "not run", note


# -- accuracy against BP, paired by seed (stats) ------------------------------------------------

def _paired(c: stats.Paired, wins: tuple[str, ...], loses: tuple[str, ...], profile: str) -> Verdict:
    if c.n == 0:
        return reduced(("inconclusive", "no seed with both results (no per-seed values in the table, or no seed "
                                        "in common)"), profile)
    v = c.verdict
    why = f"paired verdict {v}: {c.words()}"
    if v == "inconclusive (n too small)":
        why += f"; fewer than {c.min_pairs} paired seeds: nothing is claimed"
    elif v == "worse" and c.p_tost_holm is not None and c.p_tost_holm < stats.ALPHA:
        why += f"; also within ±{c.margin:g} (equivalent), but reliably below"
    verdict = "confirmed" if v in wins else "not confirmed" if v in loses else "inconclusive"
    return reduced((verdict, why), profile)


def matches_or_beats(c: stats.Paired, profile: str) -> Verdict:
    """"A matches or beats B" (MF against BP; FG against BP; SFF "comparable" with its own margin):
    ``confirmed`` when the paired verdict is ``better`` or ``equivalent`` (within ``c.margin``),
    ``not confirmed`` when ``worse``, else ``inconclusive`` (n too small included)."""
    return _paired(c, ("better", "equivalent"), ("worse",), profile)


def beats(c: stats.Paired, profile: str) -> Verdict:
    """"A beats B": ``confirmed`` only when ``better``; ``worse`` or ``equivalent`` refute it."""
    return _paired(c, ("better",), ("worse", "equivalent"), profile)


# -- the Mono-Forward paper's tables and figures ------------------------------------------------

def layer_readouts(layers: Sequence[tuple[str, float]], dataset: str, profile: str,
                   margin: float = MARGIN) -> Verdict:
    """Table 1, "each MF layer's own readout classifies, deeper ones best": the deepest layer's mean is
    the best, or within ``margin`` of the best, and every layer is above chance (100 / classes)."""
    if not layers:
        return "not run", "no MF layer readouts"
    classes = CLASSES.get(dataset)
    if classes is None:
        return "inconclusive", f"chance level unknown for {dataset}"
    chance = 100.0 / classes
    best_name, best = max(layers, key=lambda nv: nv[1])
    deepest_name, deepest = layers[-1]
    below_chance = [name for name, v in layers if v <= chance]
    if below_chance:
        verdict = ("not confirmed", f"{', '.join(below_chance)} at or below chance ({chance:.0f} %)")
    elif deepest < best - margin:
        verdict = ("not confirmed", f"the deepest layer ({deepest_name}, {deepest:.2f}) is more than "
                                    f"{margin:g} points below the best ({best_name}, {best:.2f})")
    else:
        verdict = ("confirmed", f"the deepest layer is the best or within {margin:g} points of it; every layer "
                                f"above chance ({chance:.0f} %)")
    return reduced(verdict, profile)


def prediction_as_fast(ratios: dict[str, float], profile: str, calls: dict[str, int],
                       min_calls: int = MIN_TIMED_CALLS) -> Verdict:
    """Table 4, "MF (BP pred) predicts as fast as BP": every MF/BP ratio of the median time per call at
    most ``LATENCY_SLACK``, from a ``paper``-profile record whose every compared figure rests on at
    least ``min_calls`` timed calls (``calls``: figure -> its fewest timed calls of MF and BP)."""
    if not ratios:
        return "not run", "no latency of both MF (BP pred) and BP"
    few = {k: n for k, n in calls.items() if n < min_calls}
    agrees = all(v <= LATENCY_SLACK for v in ratios.values())
    too_few = (f"fewer than {min_calls} timed calls: " + ", ".join(f"{k} {n}" for k, n in few.items())) if few else ""
    if agrees:
        verdict = ("inconclusive", too_few) if few else ("confirmed", f"within {LATENCY_SLACK - 1:.0%} of BP's time")
    else:
        verdict = ("inconclusive" if few else "not confirmed",
                   "; ".join(w for w in (f"MF's BP-mode prediction more than {LATENCY_SLACK - 1:.0%} slower than "
                                         "BP's", too_few) if w))
    return reduced(verdict, profile)


def memory_slope(s_mf: float | None, s_bp: float | None, profile: str,
                 share: float = MEMORY_SLOPE_SHARE) -> Verdict:
    """Figure 3, "MF's memory grows far slower with depth than BP's": MF's slope (MB per added layer) at
    most ``share`` of BP's."""
    if s_mf is None or s_bp is None:
        return "not run", "no slope of both MF and BP"
    verdict = (("confirmed", "") if s_mf < share * s_bp else
               ("not confirmed", f"MF's slope is not below {share:g} of BP's"))
    return reduced(verdict, profile)


def faster_beyond_noise(ratio: float | None, profile: str, noise_pct: float = RELATIVE_NOISE_PCT) -> Verdict:
    """Table 5, "MF's epoch is cheaper than BP's": BP/MF above 1 by more than ``noise_pct`` (one timed
    run each: the stated threshold is the noise); below 1 by as much refutes it; between: inconclusive."""
    if ratio is None:
        return "not run", "no epoch time of both"
    margin = noise_pct / 100
    if ratio > 1 + margin:
        verdict = ("confirmed", "")
    elif ratio < 1 / (1 + margin):
        verdict = ("not confirmed", "BP's epoch is faster by more than the noise")
    else:
        verdict = ("inconclusive", f"BP/MF within {noise_pct:g} % of 1: inside the run-to-run noise")
    return reduced(verdict, profile)


def converges_as_fast(epochs_4: float, epochs_15: float, error_4: float, error_15: float, profile: str) -> Verdict:
    """Figure 5, "MF converges as fast with 15 layers as with 4": the 15-layer net reaches within 1 point
    of its best error at most 1 epoch later, and its best error is at most 1 point higher."""
    agrees = epochs_15 <= epochs_4 + 1 and error_15 <= error_4 + 1.0
    return reduced(("confirmed", "") if agrees else ("not confirmed", "the 15-layer net is slower or worse"), profile)


# -- Section 3.3 ------------------------------------------------------------------------------------

def bitwise_equal(equal: bool | None) -> Verdict:
    """Hot-plugging's equality: an exact fact of the code, confirmed on any profile."""
    if equal is None:
        return "not run", "no equality record"
    return ("confirmed", "") if equal else ("not confirmed", "the layers differ")


def plugged_as_good(plugged: float | None, scratch: float | None, time_share: float | None, profile: str,
                    margin: float = MARGIN) -> Verdict:
    """A layer plugged onto a trained MF net and trained alone: at least the from-scratch deeper net's
    accuracy less ``margin``, in less training time."""
    if plugged is None or scratch is None or time_share is None:
        return "not run", "no plugged or from-scratch result"
    agrees = plugged >= scratch - margin and time_share < 1
    return reduced(("confirmed", "") if agrees else ("not confirmed", f"the plugged net is more than {margin:g} "
                                                     "points below the one trained from scratch, or no cheaper"),
                   profile)


def unplug_leaves_working_net(unplugged: float | None, full: float | None, shallower: float | None, profile: str,
                              margin: float = MARGIN) -> Verdict:
    """The top layer of a trained MF net unplugged: the remaining net's accuracy within ``margin`` of the
    net it was cut from (unplugging costs at most the margin) and of the shallower net trained alone.
    (Once the bit-for-bit equality holds, the unplugged net *is* the shallower one: that comparison
    alone could not fail; the one with the full net can.)"""
    if unplugged is None or full is None:
        return "not run", "no unplugged or full-net accuracy"
    if unplugged < full - margin:
        verdict = ("not confirmed", f"unplugging costs {full - unplugged:.2f} points, more than {margin:g}")
    elif shallower is not None and unplugged < shallower - margin:
        verdict = ("not confirmed", f"the unplugged net is more than {margin:g} points below the shallower net "
                                    "trained alone")
    else:
        verdict = ("confirmed", f"within {margin:g} points of the full net")
    return reduced(verdict, profile)


def damaged_layer(whole: float | None, below: float | None, retrained: float | None, bp_whole: float | None,
                  bp_damaged: float | None, profile: str, margin: float = MARGIN) -> Verdict:
    """Layer k destroyed (re-initialised): MF's prediction from the layers below k within ``margin`` of the
    undamaged net, while BP's damaged stack is not (the damage is real, and BP has no such fallback), and
    retraining layer k alone brings MF back within ``margin``. Each of the four results is required."""
    if whole is None or below is None:
        return "not run", "no MF undamaged or below-k accuracy"
    if retrained is None:
        return "not run", "no retraining result for the damaged layer"
    if bp_whole is None or bp_damaged is None:
        return "not run", "no BP run with the same damage to contrast"
    if below < whole - margin:
        verdict = ("not confirmed", f"MF's layers below k are {whole - below:.2f} points below the undamaged net, "
                                    f"more than {margin:g}")
    elif bp_damaged >= bp_whole - margin:
        verdict = ("not confirmed", "BP's damaged stack is as good as undamaged: the damage shows nothing")
    elif retrained < whole - margin:
        verdict = ("not confirmed", f"the retrained net is more than {margin:g} points below the undamaged one")
    else:
        verdict = ("confirmed", f"below-k and retrained within {margin:g} points of undamaged; BP's damaged stack "
                                f"{bp_whole - bp_damaged:.2f} points below its own")
    return reduced(verdict, profile)


def layer_parallel(mf_speedup: float | None, bp_speedup: float | None, profile: str) -> Verdict:
    """MF trains layer-parallel faster than BP with data parallelism: MF's speed-up over one process above
    1 and above BP's (DDP)."""
    if mf_speedup is None or bp_speedup is None:
        return "not run", "no speed-up of both"
    agrees = mf_speedup > 1 and mf_speedup > bp_speedup
    return reduced(("confirmed", "") if agrees else ("not confirmed", "no speed-up over one process, or not "
                                                     "above BP's"), profile)


# -- the energy study (Spyra 2025) ------------------------------------------------------------------

def difference_noise(unit: str, mean: float | None, std: float | None, n: int, bp_mean: float | None,
                     bp_std: float | None, bp_n: int) -> tuple[float, str]:
    """The run-to-run noise of a difference to BP, in the difference's unit (``points`` or ``%`` of BP):
    ``NOISE_SE`` standard errors of the difference of the means where both have two seeds or more, and
    never less than the stated threshold (``MARGIN`` points, ``RELATIVE_NOISE_PCT`` %)."""
    floor = MARGIN if unit == "points" else RELATIVE_NOISE_PCT
    if min(n, bp_n) < 2 or std is None or bp_std is None or mean is None or bp_mean in (None, 0):
        return floor, f"one seed: no spread; the stated threshold {floor:g}{' points' if unit == 'points' else ' %'}"
    se = math.sqrt(std ** 2 / n + bp_std ** 2 / bp_n)
    if unit != "points":
        se = 100 * se / abs(bp_mean)
    noise = max(floor, NOISE_SE * se)
    return noise, f"noise {noise:.2f} ({NOISE_SE:g} s.e. of the difference, at least {floor:g})"


def same_direction_beyond_noise(ours: float | None, study: float, noise: float, noise_words: str,
                                profile: str) -> Verdict:
    """The energy study's difference to BP (accuracy, training time, energy): ours outside the noise and
    of the study's sign; outside the noise and of the other sign refutes it; inside: inconclusive."""
    if ours is None:
        return "not run", "no difference measured"
    if abs(ours) <= noise:
        verdict = ("inconclusive", f"the difference is inside the run-to-run noise ({noise_words})")
    elif (ours > 0) == (study > 0):
        verdict = ("confirmed", noise_words)
    else:
        verdict = ("not confirmed", f"the difference has the other sign, beyond the noise ({noise_words})")
    return reduced(verdict, profile)


# -- the local-learning papers' costs -----------------------------------------------------------

def lighter_memory(ratio: float | None, profile: str) -> Verdict:
    """SFF "often lighter on memory": peak memory below BP's."""
    if ratio is None:
        return "not run", "no memory measurement"
    return reduced(("confirmed", "") if ratio < 1 else ("not confirmed", "not lighter here"), profile)


def similar_speed(ratio: float | None, profile: str, limit: float = SIMILAR_SPEED) -> Verdict:
    """The SFF hybrid "trains at a speed similar to BP's": an epoch at most ``limit`` times BP's."""
    if ratio is None:
        return "not run", "no timed run with these settings yet (the sff table's runs of this network)"
    return reduced(("confirmed", "") if ratio <= limit else ("not confirmed", f"more than {limit}x BP's epoch"),
                   profile)


# -- the family of paired accuracy claims ---------------------------------------------------------

PAIRED_RULES = {"matches or beats": matches_or_beats, "beats": beats}


def judge_paired(claims) -> list:
    """Judge every claim that carries a paired comparison (``Claim.paired``) by its rule, after Holm's
    correction over the family: the paper-profile paired claims among ``claims`` that have at least
    ``stats.MIN_PAIRS`` seeds (reduced-profile ones decide nothing and stay out of it). Called by each
    module on its own claims and by the report on all of them (the family is then the whole report's
    accuracy claims). Returns the family's claims."""
    paired = [c for c in claims if c.paired is not None]
    family = [c for c in paired if c.profile == "paper"]
    stats.holm([c.paired for c in family])
    for c in paired:
        c.verdict, c.why = PAIRED_RULES[c.rule](c.paired, c.profile)
    return [c for c in family if c.paired.family > 1 or c.paired.testable]

"""Paired statistics for the report's accuracy claims: two algorithms compared over the seeds they share.

The suite's seed k gives every algorithm the same split, initial data order and test set, so the
accuracy of algorithm A on seed k and that of B on seed k form a pair; the question is about the
mean of the differences ``d_k = a_k - b_k`` (in accuracy points), with n - 1 degrees of freedom:

* ``diff``: the mean paired difference; ``ci``: its two-sided 95 % confidence interval
  (Student t, ``scipy.stats.t``);
* ``p_better`` / ``p_worse``: one-sided paired t-tests of "A above B" and "A below B"
  (``scipy.stats.ttest_1samp(d, 0, alternative="greater"/"less")``);
* ``p_tost``: equivalence at a stated margin (default ``MARGIN``, ±0.25 points), two one-sided
  tests (TOST): ``ttest_1samp(d, -margin, alternative="greater")`` and ``ttest_1samp(d, +margin,
  alternative="less")``; its p is the larger of the two;
* Holm's correction over a family of comparisons (``holm``; statsmodels'
  ``multipletests(method="holm")``), applied to each of the three questions (ahead, behind,
  equivalent) separately over the family's comparisons.

The verdict (``verdict``):

* ``better``: the CI lies above 0 and the Holm-adjusted ``p_better`` < ``ALPHA``;
* ``worse``: the CI lies below 0 and the Holm-adjusted ``p_worse`` < ``ALPHA``;
* ``equivalent``: the Holm-adjusted ``p_tost`` < ``ALPHA`` (checked after ``better`` and ``worse``);
* ``inconclusive (n too small)``: fewer than ``MIN_PAIRS`` paired seeds (with n = 2, nothing is
  claimed: one degree of freedom); such a comparison takes no part in a Holm family;
* ``inconclusive``: otherwise.

Zero variance of the differences (every seed's difference the same, e.g. two algorithms that score
identically on every seed) is decided explicitly, as the limit of the t-tests: the CI is the point
``[d, d]``; ``p_better`` is 0 if d > 0 else 1, ``p_worse`` 0 if d < 0 else 1; TOST's p is 0 when d
lies strictly inside the margin (|d| < margin) and 1 otherwise (a constant difference on the margin
itself is not inside it). "Zero" means a standard deviation below ``ZERO_SD`` points: the tables keep
4 decimals, so differences that agree to that precision are equal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

MARGIN = 0.25  # accuracy points: the equivalence margin of "matches"
MIN_PAIRS = 3  # fewer paired seeds: inconclusive (n too small)
ALPHA = 0.05
CONFIDENCE = 0.95
ZERO_SD = 1e-6  # points: a standard deviation of the differences below this is zero (the CSV keeps 4 decimals)

VERDICTS = ("better", "worse", "equivalent", "inconclusive (n too small)", "inconclusive")


@dataclass
class Paired:
    """One paired comparison, A against B; ``*_holm`` are set by ``holm`` (else equal to the raw ones)."""
    pairs: list[tuple[int, float, float]]  # (seed, a, b) over the seeds both have
    margin: float = MARGIN
    min_pairs: int = MIN_PAIRS
    n: int = 0
    diff: float | None = None  # mean of a - b
    sd: float | None = None  # sample std of a - b (ddof 1)
    ci: tuple[float, float] | None = None
    p_better: float | None = None
    p_worse: float | None = None
    p_tost: float | None = None
    p_better_holm: float | None = None
    p_worse_holm: float | None = None
    p_tost_holm: float | None = None
    family: int = 1  # the number of comparisons Holm's correction was taken over
    zero_variance: bool = False
    only_a: list[int] = field(default_factory=list)  # seeds with a value of A only
    only_b: list[int] = field(default_factory=list)

    @property
    def testable(self) -> bool:
        return self.n >= self.min_pairs

    @property
    def verdict(self) -> str:
        return verdict(self)

    def numbers(self) -> dict:
        """The comparison's numbers for report.json (pairs included)."""
        out = asdict(self)
        out["verdict"] = self.verdict
        return out

    def words(self) -> str:
        """n, diff, CI and the p values in a few words, for the report's row."""
        if self.n == 0:
            return "no paired seeds"
        text = f"paired n={self.n}, diff {self.diff:+.2f}"
        if self.n < 2:
            return text
        lo, hi = self.ci
        text += f" [95 % CI {lo:+.2f}, {hi:+.2f}]"
        if self.zero_variance:
            text += " (every seed's difference the same: the CI is a point)"
        if not self.testable:
            return text
        text += (f"; p(ahead) {_p(self.p_better)}, p(behind) {_p(self.p_worse)}, "
                 f"TOST ±{self.margin:g} p {_p(self.p_tost)}")
        if self.family > 1:
            text += (f"; Holm over {self.family}: p(ahead) {_p(self.p_better_holm)}, p(behind) "
                     f"{_p(self.p_worse_holm)}, TOST p {_p(self.p_tost_holm)}")
        return text


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def compare(a: Mapping[int, float], b: Mapping[int, float], margin: float = MARGIN,
            min_pairs: int = MIN_PAIRS) -> Paired:
    """A against B over the seeds both have (``{seed: accuracy}`` each)."""
    seeds = sorted(set(a) & set(b))
    result = Paired([(s, float(a[s]), float(b[s])) for s in seeds], margin, min_pairs, n=len(seeds),
                    only_a=sorted(set(a) - set(b)), only_b=sorted(set(b) - set(a)))
    if not seeds:
        return result
    d = [x - y for _, x, y in result.pairs]
    n = len(d)
    result.diff = sum(d) / n
    if n < 2:
        return result
    result.sd = math.sqrt(sum((x - result.diff) ** 2 for x in d) / (n - 1))
    if result.sd < ZERO_SD:  # the t statistic is undefined: decide as its limit (module docstring)
        result.sd, result.zero_variance = 0.0, True
        result.ci = (result.diff, result.diff)
        result.p_better = 0.0 if result.diff > 0 else 1.0
        result.p_worse = 0.0 if result.diff < 0 else 1.0
        result.p_tost = 0.0 if abs(result.diff) < margin else 1.0
    else:
        from scipy import stats

        se = result.sd / math.sqrt(n)
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * se
        result.ci = (result.diff - half, result.diff + half)
        result.p_better = float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)
        result.p_worse = float(stats.ttest_1samp(d, 0.0, alternative="less").pvalue)
        lower = float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
        upper = float(stats.ttest_1samp(d, margin, alternative="less").pvalue)
        result.p_tost = max(lower, upper)
    result.p_better_holm, result.p_worse_holm, result.p_tost_holm = result.p_better, result.p_worse, result.p_tost
    return result


def holm(comparisons: Iterable[Paired], alpha: float = ALPHA) -> list[Paired]:
    """Holm's correction over the family of ``comparisons`` that can be tested (n >= their
    ``min_pairs``), in place, for each of the three p values separately; returns the family. The
    others keep their raw p values (and ``family`` 1)."""
    from statsmodels.stats.multitest import multipletests

    comparisons = list(comparisons)
    for c in comparisons:  # from the raw p values again: a comparison may have been in another family before
        c.p_better_holm, c.p_worse_holm, c.p_tost_holm, c.family = c.p_better, c.p_worse, c.p_tost, 1
    family = [c for c in comparisons if c.testable and c.p_better is not None]
    for c in family:
        c.family = len(family)
    if not family:
        return family
    for raw, adjusted in (("p_better", "p_better_holm"), ("p_worse", "p_worse_holm"), ("p_tost", "p_tost_holm")):
        _, corrected, _, _ = multipletests([getattr(c, raw) for c in family], alpha=alpha, method="holm")
        for c, p in zip(family, corrected):
            setattr(c, adjusted, float(p))
    return family


def verdict(c: Paired, alpha: float = ALPHA) -> str:
    """``better``, ``worse``, ``equivalent``, ``inconclusive (n too small)`` or ``inconclusive``."""
    if not c.testable or c.p_better is None:
        return "inconclusive (n too small)"
    lo, hi = c.ci
    if lo > 0 and c.p_better_holm < alpha:
        return "better"
    if hi < 0 and c.p_worse_holm < alpha:
        return "worse"
    if c.p_tost_holm < alpha:
        return "equivalent"
    return "inconclusive"

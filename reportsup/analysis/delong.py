"""DeLong's nonparametric AUC variance, confidence interval and tests for two ROC curves.

Wood et al. 2021 ("Statistical analysis"): "DeLong's test [33] was used to determine the statistical
significance of AUC-ROC values for different classifiers and for different evaluation [test sets]".
Two situations occur there, and both are here:

* **correlated** curves (two classifiers scored on the same reports, ALARM vs word2vec on one test
  set): DeLong, DeLong & Clarke-Pearson (1988), z = (A1 - A2) / sqrt(V1 + V2 - 2 C12), where the
  covariance C12 comes from the structural components of both curves on the same cases;
* **uncorrelated** curves (disjoint test sets: report labels vs image labels): the two variances add;
  as in R's pROC (``roc.test(paired = FALSE)``) the statistic D is referred to a t distribution with
  Welch-Satterthwaite degrees of freedom, which matters for test sets of a few hundred cases.

The structural components are computed with midranks in O(n log n) (Sun & Xu 2014, "Fast
implementation of DeLong's algorithm", IEEE SPL 21(11)) instead of the O(m n) pairwise kernel of the
1988 paper. The AUC is the Mann-Whitney estimate (ties count 1/2). Results agree with pROC to 1e-12
on its own aSAH example (tests/test_delong.py). Higher scores are taken to mean "positive" (no
automatic direction, unlike pROC's default: a classifier worse than chance stays below 0.5).

Why not a PyPI package: the ones available (e.g. MLstatkit's ``Delong_test``) give the paired test
only; the unpaired test, the covariance and the single-AUC CI are needed here as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from scipy.stats import rankdata


@dataclass(frozen=True)
class StructuralComponents:
    """DeLong's placement values of one or more scorers on the same cases (rows = scorers)."""

    auc: np.ndarray  # (k,)
    v10: np.ndarray  # (k, m): for each positive, the share of negatives it out-scores
    v01: np.ndarray  # (k, n): for each negative, the share of positives that out-score it

    @property
    def covariance(self) -> np.ndarray:
        """(k, k) covariance of the AUC estimates: S10 / m + S01 / n (DeLong 1988, eq. 4-5)."""
        m, n = self.v10.shape[1], self.v01.shape[1]
        s10 = np.atleast_2d(np.cov(self.v10, ddof=1))
        s01 = np.atleast_2d(np.cov(self.v01, ddof=1))
        return s10 / m + s01 / n


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    if y.ndim != 1 or s.shape[1] != len(y):
        raise ValueError(f"DeLong: {len(y)} labels but scores of shape {s.shape}; one score per case needed.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("DeLong: labels must be 0/1 (remove unknown labels before testing).")
    if np.isnan(s).any():
        raise ValueError("DeLong: scores contain NaN.")
    positive = y.astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong: needs at least 2 positive and 2 negative cases (got {m} positive, {n} negative)."
        )
    return positive, s


def structural_components(y_true: np.ndarray, scores: np.ndarray) -> StructuralComponents:
    """Placement values of ``scores`` (shape (n_cases,) or (k, n_cases)) with midranks (Sun & Xu 2014)."""
    positive, s = _check(y_true, scores)
    x, y = s[:, positive], s[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)  # midranks: ties count 1/2
    tx, ty = rankdata(x, axis=1), rankdata(y, axis=1)
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return StructuralComponents(auc=auc, v10=v10, v01=v01)


def delong_auc_variance(y_true: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """``(auc, variance)`` of one scorer (pROC ``var(roc)``)."""
    comp = structural_components(y_true, score)
    return float(comp.auc[0]), float(comp.covariance[0, 0])


def auc_ci_delong(y_true: np.ndarray, score: np.ndarray, ci: float = 0.95) -> dict[str, float]:
    """AUC with its DeLong normal-approximation CI, clipped to [0, 1] (pROC ``ci.auc``)."""
    auc, var = delong_auc_variance(y_true, score)
    half = stats.norm.ppf(0.5 + ci / 2) * np.sqrt(var)
    return {"value": auc, "ci_low": max(0.0, auc - half), "ci_high": min(1.0, auc + half), "variance": var}


def auc_ci_bootstrap(
    y_true: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """AUC with a percentile bootstrap CI; ``groups`` (patient ids) are resampled as units when given.
    Replicates with a single class are skipped and counted (``n_bootstrap_valid``). Scores may be any
    real numbers (ranks only), unlike a probability-based AUROC that squashes them first."""
    y, p = np.asarray(y_true), np.asarray(score, dtype=float)
    _check(y, p)
    _, codes = np.unique(
        np.arange(len(y)) if groups is None else np.asarray(groups).astype(str), return_inverse=True
    )
    rows_of = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_bootstrap):
        idx = np.concatenate([rows_of[c] for c in rng.integers(0, len(rows_of), len(rows_of))])
        yb = y[idx]
        if 0 < yb.sum() < len(yb):
            draws.append(_auc(yb.astype(bool), p[idx]))
    low, high = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2]) if draws else (np.nan, np.nan)
    return {
        "value": _auc(y.astype(bool), p),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_bootstrap_valid": float(len(draws)),
    }


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC from midranks (ties count 1/2)."""
    m, n = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(score)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


@dataclass(frozen=True)
class DeLongTest:
    """Result of comparing two AUCs: A1 - A2, its variance, the statistic and the two-sided p-value."""

    auc1: float
    auc2: float
    difference: float
    variance: float
    statistic: float  # z (paired) or D (unpaired, t-distributed)
    p_value: float
    ci_low: float
    ci_high: float
    paired: bool
    df: float | None = None  # degrees of freedom of the unpaired test
    n1: int = 0
    n2: int = 0

    def as_dict(self) -> dict[str, float | bool | None]:
        return asdict(self)


def delong_paired_test(
    y_true: np.ndarray, score1: np.ndarray, score2: np.ndarray, ci: float = 0.95
) -> DeLongTest:
    """Two correlated ROC curves: both scorers on the same cases (pROC ``roc.test(paired = TRUE)``)."""
    comp = structural_components(y_true, np.vstack([score1, score2]))
    cov = comp.covariance
    diff = float(comp.auc[0] - comp.auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 0:  # identical rankings: no evidence of a difference
        z, p = 0.0, 1.0
    else:
        z = diff / np.sqrt(var)
        p = float(2 * stats.norm.sf(abs(z)))
    half = stats.norm.ppf(0.5 + ci / 2) * np.sqrt(max(var, 0.0))
    n = len(np.asarray(y_true))
    return DeLongTest(
        float(comp.auc[0]),
        float(comp.auc[1]),
        diff,
        var,
        float(z),
        p,
        diff - half,
        diff + half,
        True,
        None,
        n,
        n,
    )


def delong_unpaired_test(
    y1: np.ndarray, score1: np.ndarray, y2: np.ndarray, score2: np.ndarray, ci: float = 0.95
) -> DeLongTest:
    """Two uncorrelated ROC curves on disjoint cases (pROC ``roc.test(paired = FALSE)``):
    D = (A1 - A2) / sqrt(V1 + V2), two-sided p from t with Welch-Satterthwaite df."""
    a1, v1 = delong_auc_variance(y1, score1)
    a2, v2 = delong_auc_variance(y2, score2)
    n1, n2 = len(np.asarray(y1)), len(np.asarray(y2))
    var = v1 + v2
    diff = a1 - a2
    df = var**2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)) if var > 0 else float("inf")
    d = diff / np.sqrt(var) if var > 0 else 0.0
    p = float(2 * stats.t.sf(abs(d), df)) if var > 0 else 1.0
    half = stats.t.ppf(0.5 + ci / 2, df) * np.sqrt(var) if var > 0 else 0.0
    return DeLongTest(a1, a2, diff, var, float(d), p, diff - half, diff + half, False, float(df), n1, n2)


def compare_aucs(
    ids1: np.ndarray,
    y1: np.ndarray,
    score1: np.ndarray,
    ids2: np.ndarray,
    y2: np.ndarray,
    score2: np.ndarray,
    ci: float = 0.95,
) -> DeLongTest:
    """The right DeLong test for two scored case lists: paired on the same cases (matched by id),
    unpaired on disjoint ones. Partly overlapping sets have no valid DeLong test: ValueError."""
    ids1, ids2 = np.asarray(ids1).astype(str), np.asarray(ids2).astype(str)
    for ids, name in ((ids1, "first"), (ids2, "second")):
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"DeLong: the {name} case list repeats ids; one score per case is needed.")
    common = np.intersect1d(ids1, ids2)
    if len(common) == 0:
        return delong_unpaired_test(y1, score1, y2, score2, ci)
    if len(common) != len(ids1) or len(common) != len(ids2):
        raise ValueError(
            f"DeLong: the two case lists share {len(common)} of {len(ids1)} / {len(ids2)} ids; compare "
            "either the same cases (paired test) or disjoint ones (unpaired test)."
        )
    order1, order2 = np.argsort(ids1), np.argsort(ids2)
    y1s, y2s = np.asarray(y1)[order1], np.asarray(y2)[order2]
    if not np.array_equal(y1s, y2s):
        raise ValueError("DeLong: the same cases carry different labels in the two lists.")
    return delong_paired_test(y1s, np.asarray(score1)[order1], np.asarray(score2)[order2], ci)

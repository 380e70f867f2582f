"""DeLong's test against published known answers: R pROC's own tests on its aSAH example data.

``tests/data/pROC_aSAH.csv`` holds the columns outcome (1 = poor), wfns, s100b and ndka of the 113
patients of pROC's ``aSAH`` data set (Turck et al. 2010, Intensive Care Med 36:107-115; distributed with
pROC, Robin et al. 2011, BMC Bioinformatics 12:77). The expected values are those asserted in pROC's
tests (tests/testthat/test-roc.test.R, test-var.R, test-ci.auc.R), 15 significant digits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from reportsup.analysis.delong import (
    auc_ci_bootstrap,
    auc_ci_delong,
    compare_aucs,
    delong_auc_variance,
    delong_paired_test,
    delong_unpaired_test,
    structural_components,
)
from tests.conftest import ROOT

ASAH = pd.read_csv(ROOT / "tests" / "data" / "pROC_aSAH.csv")
Y = ASAH["poor_outcome"].to_numpy()


@pytest.mark.parametrize(
    ("marker", "variance"),
    [("wfns", 0.00146991470882363), ("ndka", 0.0031908105493913), ("s100b", 0.00266868245717244)],
)
def test_variance_matches_proc(marker: str, variance: float) -> None:
    auc, var = delong_auc_variance(Y, ASAH[marker].to_numpy())
    assert var == pytest.approx(variance, rel=1e-10)
    # The AUC is the Mann-Whitney statistic U / (m n).
    u = mannwhitneyu(ASAH[marker][Y == 1], ASAH[marker][Y == 0]).statistic
    assert auc == pytest.approx(u / ((Y == 1).sum() * (Y == 0).sum()))


def test_ci_matches_proc() -> None:
    ci = auc_ci_delong(Y, ASAH["ndka"].to_numpy())
    assert [ci["ci_low"], ci["value"], ci["ci_high"]] == pytest.approx(
        [0.501244999271703, 0.611957994579946, 0.722670989888189], rel=1e-10
    )


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "low", "high"),
    [
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)
def test_paired_test_matches_proc(a: str, b: str, z: float, p: float, low: float, high: float) -> None:
    res = delong_paired_test(Y, ASAH[a].to_numpy(), ASAH[b].to_numpy())
    assert res.statistic == pytest.approx(z, rel=1e-10)
    assert res.p_value == pytest.approx(p, rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((low, high), rel=1e-9)
    assert res.paired and res.difference == pytest.approx(res.auc1 - res.auc2)


@pytest.mark.parametrize(
    ("a", "b", "d", "p"),
    [
        ("wfns", "s100b", 1.43490640926908, 0.152825378808796),
        ("wfns", "ndka", 3.10125096778969, 0.00220950791756457),
        ("ndka", "s100b", -1.55995743389685, 0.120192832430845),
    ],
)
def test_unpaired_test_matches_proc(a: str, b: str, d: float, p: float) -> None:
    res = delong_unpaired_test(Y, ASAH[a].to_numpy(), Y, ASAH[b].to_numpy())
    assert res.statistic == pytest.approx(d, rel=1e-10)
    assert res.p_value == pytest.approx(p, rel=1e-9)
    assert not res.paired and res.df > 0


def test_identical_curves_give_p_one() -> None:
    res = delong_paired_test(Y, ASAH["wfns"].to_numpy(), ASAH["wfns"].to_numpy())
    assert res.statistic == 0 and res.p_value == 1


def test_fast_components_equal_the_pairwise_definition() -> None:
    """Sun & Xu's midrank placements equal DeLong 1988's psi-kernel averages (ties count 1/2)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(y, 1.0), 1)  # rounded: many ties
    comp = structural_components(y, s)
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    np.testing.assert_allclose(comp.v10[0], psi.mean(axis=1))
    np.testing.assert_allclose(comp.v01[0], psi.mean(axis=0))
    assert comp.auc[0] == pytest.approx(psi.mean())


def test_compare_aucs_chooses_the_test_by_ids() -> None:
    ids = ASAH.index.astype(str).to_numpy()
    shuffled = np.random.default_rng(1).permutation(len(ids))
    paired = compare_aucs(
        ids, Y, ASAH["wfns"], ids[shuffled], Y[shuffled], ASAH["s100b"].to_numpy()[shuffled]
    )
    assert paired.paired and paired.statistic == pytest.approx(2.20898359144091, rel=1e-10)
    half = len(ids) // 2
    unpaired = compare_aucs(
        ids[:half], Y[:half], ASAH["wfns"][:half], ids[half:], Y[half:], ASAH["s100b"][half:]
    )
    assert not unpaired.paired
    with pytest.raises(ValueError, match="share"):
        compare_aucs(ids[:80], Y[:80], ASAH["wfns"][:80], ids[40:], Y[40:], ASAH["s100b"][40:])


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="at least 2 positive"):
        delong_auc_variance(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0/1"):
        delong_auc_variance(np.array([1, 0, np.nan, 1, 0]), np.arange(5.0))


def test_bootstrap_ci_brackets_the_delong_ci() -> None:
    boot = auc_ci_bootstrap(Y, ASAH["ndka"].to_numpy(), n_bootstrap=2000, seed=0)
    delong = auc_ci_delong(Y, ASAH["ndka"].to_numpy())
    assert boot["value"] == pytest.approx(delong["value"])
    assert abs(boot["ci_low"] - delong["ci_low"]) < 0.03 and abs(boot["ci_high"] - delong["ci_high"]) < 0.03

"""Known answers for every DaMIL loss, in both variants, on hand-built maps worked out by hand.

Maps (batch 1; the loss tests stack a second, unclear copy). Three regions A, B, C, two types T1, T2.
Coarse grid 4 x 4 x 2 (index [x, y, z]), fine grid 8 x 8 x 4 (index [X, Y, Z]); the fine maps are the
coarse ones repeated 2 x 2 x 2, except D1 in the fine block of coarse voxel (0,0,0): 0.9 at Z = 0, 0.7 at Z = 1.

* S_A = 1 at x < 2 (16 coarse / 128 fine voxels), S_B = 1 at x >= 2 (16 / 128), S_C = 0.5 at x < 2, y < 2
  (8 / 64 voxels, sums 4 / 32); D1 = 0.1 except D1[0,0,0] = 0.8, D1[1,0,0] = 0.6; D2 = 0.1 except D2[2,0,0] = 0.9.
* Coarse products S_i D_j (32 voxels): A1 {0.8, 0.6, 14 x 0.1, 16 x 0}; A2 {16 x 0.1}; B1 {16 x 0.1};
  B2 {0.9, 15 x 0.1}; C1 {0.4, 0.3, 6 x 0.05}; C2 {8 x 0.05}. Fine (256 voxels): A1 {4 x 0.9, 4 x 0.7,
  8 x 0.6, 112 x 0.1}; C1 {4 x 0.45, 4 x 0.35, 8 x 0.3, 48 x 0.05}; the others 8 x their coarse counts.
* Labels y = [[1, 1], [0, 1], [0, 0]] (rows A, B, C), scan labels [1, 1]; training rates
  f = [[1, 0], [0.5, 0.5], [0, 0]] (f = 1 at A1 and f = 0 at A2, both positive here), scan rates [0.5, 0.2].
* Target label map on the fine grid: C at X < 4, Y < 4 (64 voxels); A at X <= 2, Y >= 4 (48); B elsewhere
  (144, incl. the column X = 3, Y >= 4). Nearest to coarse (fine index 2x): C 8, A 8, B 16 voxels;
  2x max-pool: C 8, A 8, B 20 (coarse x = 1, y >= 2 holds fine X = 3 of B).

k (t = 0.5; c = count of coarse products above t = [[2, 0], [0, 1], [0, 0]]: k = 0 everywhere but A1, B2):

* paper (k_grid coarse, k_min 1): [[2, 1], [1, 1], [1, 1]]; paper with k_grid fine (x 8): [[16, 1], [1, 8], [1, 1]];
* released max(8c, 8) / 2 = max(4c, 4): [[8, 4], [4, 4], [4, 4]].

Paper variant (eps 1e-3, logs ln(p + 1e-8); w = sqrt((1 - f + eps)/(f + eps)): f = 1 -> 0.031607,
f = 0 -> 31.638584, f = 0.5 -> 1):

* bags, scale 1 (max): [[0.8, 0.1], [0.1, 0.9], [0.4, 0.05]]; scale 2 (top-k mean): [[0.9, 0.1], [0.1, 0.9],
  [0.45, 0.05]] (A1: top-2 of fine = 0.9, 0.9; C1: top-1 = 0.45); with k_grid fine A1 = (4 .9 + 8 .6 + 4 .7)/16 = 0.7.
* cells, scale 1: A1 -0.031607 ln 0.8 = 0.007053, A2 -31.638584 ln 0.1 = 72.850529 (f = 0 dominates),
  B1 -ln 0.9 = 0.105361, B2 0.105361, C1 -ln 0.6 = 0.510826, C2 -ln 0.95 = 0.051293 -> mean 12.271737;
  scale 2: A1 -0.031607 ln 0.9 = 0.003330, C1 -ln 0.55 = 0.597837, others as scale 1 -> mean 12.285618;
  L_ra = 12.278678.
* L_sa (finest): fine maxima 0.9, 0.9 -> -ln 0.9 = 0.105361; averaged over scales (coarse maxima 0.8, 0.9): 0.134806.
* L_s (smoothing 1e-5, nearest): fine Dice losses A 1 - 96/176, B 1 - 256/272, C 1 - 64/96 -> 0.282234;
  coarse A 1 - 16/24, B 0, C 1 - 8/12 -> 0.222222; L_s = 0.252228.
* total with lambda = 0.5: 0.5 L_s + L_ra + 0.1 L_sa = 12.415328. The unclear copy: 0.5 L_s = 0.126114
  (both MIL losses 0).

Released-code variant (rates smoothed to outer(row sums, column sums) / total = [[0.75, 0.25], [0.75, 0.25],
[0, 0]], so f = 1 and f = 0 of A become 0.75 / 0.25; w = sqrt((1 - f')/f'), f' = min(r + 1e-8, 1 - 1e-8):
0.577350, 1.732051, and 1e4 for row C, where r = 0; scan weights 1, 2):

* region cells = mean over the top-k voxels of the per-voxel weighted BCE. Coarse (k = 10):
  A1 0.57735 (-ln .8 - ln .6 - 8 ln .1)/10 = 1.105894, A2 1.732051 (-ln .1) = 3.988194, B1 0.105361,
  B2 1.732051 (-ln .9 - 9 ln .1)/10 = 3.607624, C1 (-ln .6 - ln .7 - 6 ln .95 - 2 ln 1)/10 = 0.117526,
  C2 8 (-ln .95)/10 = 0.041035 -> mean 1.494272. Fine: A1 (k 8) 0.57735 (-ln .9 - ln .7)/2 = 0.133378,
  A2 3.988194, B1 0.105361, B2 (k 4) 1.732051 (-ln .9) = 0.182490, C1 (k 4 of 0.45) 0.597837, C2 0.051293
  -> mean 0.843092; L_ra = 1.168682.
* L_sa, top 10 / 80 voxels of each map: coarse T1 (-ln .8 - ln .6 - 8 ln .1)/10 = 1.915465, T2
  2 (-ln .9 - 9 ln .1)/10 = 4.165725 -> 3.040595; fine T1 (-4 ln .9 - 4 ln .7 - 8 ln .6 - 64 ln .1)/80 =
  1.916252, T2 2 (-8 ln .9 - 72 ln .1)/80 = 4.165725 -> 3.040989; L_sa = 3.040792.
* L_s (smoothing 1, max-pool): fine A 1 - 97/177, B 1 - 257/273, C 1 - 65/97 -> 0.280161; coarse
  A 1 - 17/25, B 1 - 33/37, C 1 - 9/13 -> 0.245267; L_s = 0.262714.
* total 0.5 L_s + 0.2 L_ra + 0.02 L_sa = 0.425909; the unclear copy keeps its scan loss: 0.5 L_s + 0.02 L_sa
  = 0.192173.
* S_C = 0 (a blank region): C adds nothing, L_ra = ((sum of the A, B cells)/6 per scale, averaged) = 1.101375
  whatever C's labels; in the paper variant a positive C1 costs -31.638584 ln(0 + 1e-8) = 582.804 per scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_modules.crossdl.damil.losses import (
    DaMILLoss,
    bce,
    positive_weights,
    region_mil_loss,
    released_code_rates,
    released_region_mil_loss,
    released_scan_mil_loss,
    scan_mil_loss,
    segmentation_loss,
)
from lightning_modules.crossdl.damil.pooling import (
    k_factor,
    multiscale_region_predictions,
    scan_predictions,
    topk_counts,
)

LOG_EPS = 1e-8
Y = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
SCAN_Y = torch.tensor([[1.0, 1.0]])
RATES = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
SCAN_RATES = np.array([0.5, 0.2])
LAMBDA = 0.5


def term(p: float, y: float, w: float = 1.0) -> float:
    """The hand formula: -[w y ln(p + 1e-8) + (1 - y) ln(1 - p + 1e-8)]."""
    return -(w * y * math.log(p + LOG_EPS) + (1 - y) * math.log(1 - p + LOG_EPS))


def top_term(values: list[float], y: float, w: float = 1.0) -> float:
    """Released code: the per-voxel term averaged over the listed top-k voxels."""
    return sum(term(v, y, w) for v in values) / len(values)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def paper_w(f: float, eps: float = 1e-3) -> float:
    return math.sqrt((1 - f + eps) / (f + eps))


def released_w(f: float, eps: float = 1e-8) -> float:
    f = min(f + eps, 1 - eps)
    return math.sqrt((1 - f) / f)


def maps(blank_c: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(S, D) coarse (1, 3|2, 4, 4, 2), (S, D) fine (1, 3|2, 8, 8, 4)] as in the module docstring."""
    s = torch.zeros(1, 3, 4, 4, 2)
    s[0, 0, :2] = 1
    s[0, 1, 2:] = 1
    s[0, 2, :2, :2] = 0.0 if blank_c else 0.5
    d = torch.full((1, 2, 4, 4, 2), 0.1)
    d[0, 0, 0, 0, 0], d[0, 0, 1, 0, 0], d[0, 1, 2, 0, 0] = 0.8, 0.6, 0.9
    up = lambda x: x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)  # noqa: E731
    s_fine, d_fine = up(s), up(d)
    d_fine[0, 0, 0:2, 0:2, 0], d_fine[0, 0, 0:2, 0:2, 1] = 0.9, 0.7
    return [(s, d), (s_fine, d_fine)]


def target_map() -> torch.Tensor:
    """(1, 1, 8, 8, 4) labels 1 = A, 2 = B, 3 = C on the fine grid."""
    labels = torch.full((1, 1, 8, 8, 4), 2, dtype=torch.long)
    labels[0, 0, :3, 4:] = 1
    labels[0, 0, :4, :4] = 3
    return labels


def two_scans(outputs):
    """The scan and an unclear copy of it (batch 2)."""
    return [(s.repeat(2, 1, 1, 1, 1), d.repeat(2, 1, 1, 1, 1)) for s, d in outputs]


# ------------------------------------------------------------------------------------------ hand values
PAPER_BAGS = [[[0.8, 0.1], [0.1, 0.9], [0.4, 0.05]], [[0.9, 0.1], [0.1, 0.9], [0.45, 0.05]]]
PAPER_W = [[paper_w(f) for f in row] for row in RATES]
PAPER_LRA = mean(
    mean(term(PAPER_BAGS[lv][i][j], Y[0, i, j].item(), PAPER_W[i][j]) for i in range(3) for j in range(2))
    for lv in range(2)
)
PAPER_LSA_FINEST = mean([term(0.9, 1), term(0.9, 1)])
PAPER_LSA_MEAN = mean([mean([term(0.8, 1), term(0.9, 1)]), PAPER_LSA_FINEST])


def dice_loss(i: float, t: float, p: float, smooth: float) -> float:
    return 1 - (2 * i + smooth) / (t + p + smooth)


def hand_ls(smooth: float, b_coarse_target: int) -> float:
    fine = mean(
        [dice_loss(48, 48, 128, smooth), dice_loss(128, 144, 128, smooth), dice_loss(32, 64, 32, smooth)]
    )
    coarse = mean(
        [dice_loss(8, 8, 16, smooth), dice_loss(16, b_coarse_target, 16, smooth), dice_loss(4, 8, 4, smooth)]
    )
    return mean([fine, coarse])


PAPER_LS = hand_ls(1e-5, 16)
RELEASED_LS = hand_ls(1.0, 20)

SMOOTHED = [[0.75, 0.25], [0.75, 0.25], [0.0, 0.0]]
REL_W = [[released_w(f) for f in row] for row in SMOOTHED]
SCAN_W = [released_w(f) for f in SCAN_RATES]
REL_COARSE = [
    top_term([0.8, 0.6] + [0.1] * 8, 1, REL_W[0][0]),
    top_term([0.1] * 10, 1, REL_W[0][1]),
    top_term([0.1] * 10, 0),
    top_term([0.9] + [0.1] * 9, 1, REL_W[1][1]),
    top_term([0.4, 0.3] + [0.05] * 6 + [0.0] * 2, 0),
    top_term([0.05] * 8 + [0.0] * 2, 0),
]
REL_FINE = [
    top_term([0.9] * 4 + [0.7] * 4, 1, REL_W[0][0]),  # k = 8
    top_term([0.1] * 4, 1, REL_W[0][1]),
    top_term([0.1] * 4, 0),
    top_term([0.9] * 4, 1, REL_W[1][1]),
    top_term([0.45] * 4, 0),
    top_term([0.05] * 4, 0),
]
REL_LRA = mean([mean(REL_COARSE), mean(REL_FINE)])
REL_LSA = mean(
    [
        mean([top_term([0.8, 0.6] + [0.1] * 8, 1, SCAN_W[0]), top_term([0.9] + [0.1] * 9, 1, SCAN_W[1])]),
        mean(
            [
                top_term([0.9] * 4 + [0.7] * 4 + [0.6] * 8 + [0.1] * 64, 1, SCAN_W[0]),
                top_term([0.9] * 8 + [0.1] * 72, 1, SCAN_W[1]),
            ]
        ),
    ]
)


def close(actual: torch.Tensor | float, expected: float, rel: float = 2e-5) -> bool:
    return float(actual) == pytest.approx(expected, rel=rel, abs=1e-6)


# ------------------------------------------------------------------------------------------ tests
def test_hand_values_match_the_docstring():
    """The formulas above give the numbers written in the module docstring (a typo check on both)."""
    for value, written in (
        (PAPER_LRA, 12.278678),
        (PAPER_LSA_FINEST, 0.105361),
        (PAPER_LSA_MEAN, 0.134806),
        (PAPER_LS, 0.252228),
        (LAMBDA * PAPER_LS + PAPER_LRA + 0.1 * PAPER_LSA_FINEST, 12.415328),
        (REL_LRA, 1.168682),
        (REL_LSA, 3.040792),
        (RELEASED_LS, 0.262714),
        (LAMBDA * RELEASED_LS + 0.2 * REL_LRA + 0.02 * REL_LSA, 0.425909),
    ):
        assert value == pytest.approx(written, abs=2e-6)


def test_k_values_including_k_zero_in_both_variants():
    (s1, d1), (s2, d2) = maps()
    fine, coarse = tuple(d2.shape[2:]), tuple(d1.shape[2:])
    assert topk_counts(s1, d1, 0.5, k_scale=0.0, k_min=0).tolist() == [[[0, 0], [0, 0], [0, 0]]]
    assert topk_counts(s1, d1, 0.5, 1.0, 0)[0].tolist() == [[2, 0], [0, 1], [0, 0]]  # c
    assert topk_counts(s1, d1, 0.5, k_factor("coarse", 1.0, fine, coarse), 1)[0].tolist() == [
        [2, 1],
        [1, 1],
        [1, 1],
    ]
    assert topk_counts(s1, d1, 0.5, k_factor("fine", 1.0, fine, coarse), 1)[0].tolist() == [
        [16, 1],
        [1, 8],
        [1, 1],
    ]
    released = topk_counts(s1, d1, 0.5, k_factor("fine", 0.5, fine, coarse), 4)[0].tolist()
    assert released == [[8, 4], [4, 4], [4, 4]]  # max(8c, 8) / 2


def test_paper_bag_and_scan_predictions():
    outputs = maps()
    preds = multiscale_region_predictions(outputs, threshold=0.5)
    for pred, hand in zip(preds, PAPER_BAGS, strict=True):
        assert torch.allclose(pred[0], torch.tensor(hand), atol=1e-6)
    fine_k = multiscale_region_predictions(outputs, threshold=0.5, k_grid="fine")[1][0]
    assert close(fine_k[0, 0], 0.7) and close(fine_k[1, 1], 0.9)  # top-16 and top-8
    assert np.array([p[0].tolist() for p in scan_predictions(outputs)]) == pytest.approx(
        np.array([[0.8, 0.9], [0.9, 0.9]])
    )


def test_positive_weights_at_f_zero_and_one():
    assert positive_weights(RATES, 1e-3).numpy() == pytest.approx(np.array(PAPER_W), rel=1e-6)
    assert PAPER_W[0][0] == pytest.approx(0.031607, abs=1e-6) and PAPER_W[0][1] == pytest.approx(31.638584)
    assert released_code_rates(RATES) == pytest.approx(np.array(SMOOTHED))
    released = positive_weights(released_code_rates(RATES), 1e-8, "released_code")
    assert released.numpy() == pytest.approx(np.array(REL_W), rel=1e-6)
    assert float(released[2, 0]) == pytest.approx(1e4, rel=1e-6)  # f' = 0: the released code's 1e4
    assert positive_weights(np.array([1.0]), 1e-8, "released_code").item() == pytest.approx(1e-4, rel=1e-3)


def test_paper_losses_and_total_with_an_unclear_scan():
    outputs = maps()
    preds = multiscale_region_predictions(outputs, threshold=0.5)
    assert close(region_mil_loss(preds, Y, positive_weights(RATES, 1e-3))[0], PAPER_LRA)
    scans = scan_predictions(outputs)
    assert close(scan_mil_loss(scans[-1:], SCAN_Y)[0], PAPER_LSA_FINEST)
    assert close(scan_mil_loss(scans, SCAN_Y)[0], PAPER_LSA_MEAN)
    assert close(segmentation_loss([s for s, _ in outputs], target_map())[0], PAPER_LS)

    crit = DaMILLoss(RATES, SCAN_RATES, variant="paper")
    out = crit(
        two_scans(outputs),
        target_map().repeat(2, 1, 1, 1, 1),
        Y.repeat(2, 1, 1),
        SCAN_Y.repeat(2, 1),
        torch.tensor([False, True]),
        seg_weight=LAMBDA,
    )
    assert close(out["region_mil"], PAPER_LRA / 2) and close(out["scan_mil"], PAPER_LSA_FINEST / 2)
    assert close(out["segmentation"], PAPER_LS)
    total_clear = LAMBDA * PAPER_LS + PAPER_LRA + 0.1 * PAPER_LSA_FINEST
    assert close(out["loss"], mean([total_clear, LAMBDA * PAPER_LS]))  # unclear: 0.5 L_s only
    mean_scales = DaMILLoss(RATES, SCAN_RATES, scan_loss_scales="mean")
    out = mean_scales(outputs, target_map(), Y, SCAN_Y, torch.tensor([False]), seg_weight=LAMBDA)
    assert close(out["scan_mil"], PAPER_LSA_MEAN)


def test_released_losses_and_total_with_an_unclear_scan():
    outputs = maps()
    w = positive_weights(released_code_rates(RATES), 1e-8, "released_code")
    assert close(released_region_mil_loss(outputs, Y, w)[0], REL_LRA)
    scan_w = positive_weights(SCAN_RATES, 1e-8, "released_code")
    assert close(released_scan_mil_loss(outputs, SCAN_Y, scan_w)[0], REL_LSA)
    seg = segmentation_loss([s for s, _ in outputs], target_map(), 1.0, "max_pool", 0.1)
    assert close(seg[0], RELEASED_LS)

    crit = DaMILLoss(RATES, SCAN_RATES, variant="released_code")
    assert (crit.alpha, crit.region_weight, crit.detach_region_maps) == (0.02, 0.2, False)
    out = crit(
        two_scans(outputs),
        target_map().repeat(2, 1, 1, 1, 1),
        Y.repeat(2, 1, 1),
        SCAN_Y.repeat(2, 1),
        torch.tensor([False, True]),
        seg_weight=LAMBDA,
    )
    assert close(out["region_mil"], REL_LRA / 2)
    assert close(out["scan_mil"], REL_LSA)  # not masked for the unclear scan
    assert close(out["segmentation"], RELEASED_LS)
    total_clear = LAMBDA * RELEASED_LS + 0.2 * REL_LRA + 0.02 * REL_LSA
    assert close(out["loss"], mean([total_clear, LAMBDA * RELEASED_LS + 0.02 * REL_LSA]))


def test_a_blank_region_adds_nothing_in_the_released_code_only():
    outputs = maps(blank_c=True)
    y = Y.clone()
    y[0, 2, 0] = 1  # C1 positive although C's predicted map is empty
    w = positive_weights(released_code_rates(RATES), 1e-8, "released_code")
    blank = mean([sum(REL_COARSE[:4]) / 6, sum(REL_FINE[:4]) / 6])
    assert close(released_region_mil_loss(outputs, y, w)[0], blank)
    assert blank == pytest.approx(1.101375, abs=2e-6)
    # Paper: every region is a bag; C1's bag is 0 at both scales and costs -31.638584 ln(1e-8) each.
    preds = multiscale_region_predictions(outputs, threshold=0.5)
    assert float(preds[0][0, 2, 0]) == 0 and float(preds[1][0, 2, 0]) == 0
    paper = region_mil_loss(preds, y, positive_weights(RATES, 1e-3))[0]
    c1 = term(0.0, 1, PAPER_W[2][0])
    assert c1 == pytest.approx(582.804256, abs=1e-5)
    scale_sums = [
        sum(term(PAPER_BAGS[lv][i][j], Y[0, i, j].item(), PAPER_W[i][j]) for i in range(2) for j in range(2))
        for lv in range(2)
    ]
    assert close(paper, mean([(s + c1 + term(0.0, 0)) / 6 for s in scale_sums]))


def test_an_empty_target_has_no_dice_loss_in_the_released_code_only():
    outputs = maps()
    empty = torch.zeros(1, 1, 8, 8, 4, dtype=torch.long)
    assert float(segmentation_loss([s for s, _ in outputs], empty, 1.0, "max_pool", 0.1)[0]) == 0.0
    # Paper: the Dice loss of predicted regions against an empty target is ~1 (smoothing 1e-5).
    assert close(segmentation_loss([s for s, _ in outputs], empty)[0], 1.0, rel=1e-5)


def test_the_log_keeps_a_gradient_where_a_clamp_would_not():
    """ln(p + 1e-8) at a zero product of a positive bag still pushes p up (a clamp at 1e-7 gives 0)."""
    p = torch.zeros(1, requires_grad=True)
    bce(p, torch.ones(1)).sum().backward()
    assert float(p.grad) == pytest.approx(-1e8, rel=1e-3)
    q = torch.ones(1, requires_grad=True)  # a negative bag at 1: gradient pushes it down
    bce(q, torch.zeros(1)).sum().backward()
    assert float(q.grad) == pytest.approx(1e8, rel=1e-3)


def test_variant_released_code_alone_switches_every_paper_valued_option(caplog):
    """``model.variant=released_code`` on the paper's model config: every option still at the paper's value
    takes the released code's (logged, and recorded in hparams); a deliberately changed one is kept."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lightning_modules.crossdl.damil.module import DaMILModule
    from lightning_modules.crossdl.damil.variants import VARIANT_VALUES
    from reportsup.runner.setup import PROJECT_ROOT

    with initialize_config_dir(str(PROJECT_ROOT / "configs" / "model"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("damil"))
    assert {k: cfg[k] for k in VARIANT_VALUES["paper"]} == VARIANT_VALUES["paper"]  # the config's defaults
    cfg = {k: v for k, v in cfg.items() if k not in ("_target_", "label_space")}
    cfg["network"] = {"base_filters": 4, "depth": 4}
    with caplog.at_level("INFO"):
        module = DaMILModule(**{**cfg, "variant": "released_code", "k_min": 2})
    expected = {**VARIANT_VALUES["released_code"], "k_min": 2}
    assert {k: module.hparams[k] for k in expected} == expected
    assert "detach_region_maps=False (config: True)" in caplog.text and "k_min" not in caplog.text
    assert module.criterion.k_min == 2 and module.criterion.alpha == 0.02
    optim = module.configure_optimizers()
    assert isinstance(optim["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert all(head.activation == "softmax" for head in module.net.heads)

"""The faster paths of the DaMIL heads and losses (issue 23 item 4) give what the plain formulas give.

Each fast path is checked against the plain computation it replaces, written out here: the top-k of
the instance products (selected a few regions at a time, gradient through the gathered voxels) against
``torch.topk(instance_products(s, d))``; the one-hot region masks against ``F.one_hot``; the heads' one
matrix product against the two ``nn.Conv3d``; the released code's region loss against
``topk_voxel_bce`` of the full products. Values are equal (the same fp32 products), gradients equal up
to float summation order. No timing is asserted (``benchmarks/damil_overhead.py`` measures).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.crossdl.damil.losses import (
    bce,
    region_one_hot,
    released_region_mil_loss,
    topk_voxel_bce,
)
from lightning_modules.crossdl.damil.network import DaMILHead
from lightning_modules.crossdl.damil.pooling import (
    SELECT_BLOCK,
    instance_products,
    k_factor,
    topk_counts,
    topk_mil_pooling,
    topk_products,
    topk_voxels,
)


def maps(b: int = 2, n: int = 17, m: int = 4, shape=(6, 5, 4), seed: int = 0, ties: bool = False):
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(b, n, *shape, generator=gen)
    d = torch.rand(b, m, *shape, generator=gen)
    if ties:  # many equal products: S = 1 on half the voxels, D rounded to 0.1
        s = (s > 0.5).float()
        d = (d * 10).round() / 10
    return s, d


def plain_topk(s: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(instance_products(s, d), k, dim=-1).values


def plain_topk_pooling(s: torch.Tensor, d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    products = instance_products(s, d)
    k = k.clamp(1, products.shape[-1])
    top = torch.topk(products, int(k.max()), dim=-1).values
    keep = (torch.arange(top.shape[-1]) < k.unsqueeze(-1)).to(top.dtype)
    return (top * keep).sum(-1) / k.to(top.dtype)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [1, SELECT_BLOCK, 17])
@pytest.mark.parametrize("k", [1, 7, 120])
def test_topk_voxels_selects_what_one_topk_of_all_products_selects(n, k, ties):
    s, d = maps(n=n, ties=ties)
    assert torch.equal(topk_voxels(s, d, k), torch.topk(instance_products(s, d), k, dim=-1).indices)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("detach_s", [True, False])
def test_topk_products_values_and_gradients_match_the_plain_topk(ties, detach_s):
    s, d = maps(ties=ties)
    s_fast, d_fast = s.clone().requires_grad_(not detach_s), d.clone().requires_grad_(True)
    s_ref, d_ref = s.clone().requires_grad_(not detach_s), d.clone().requires_grad_(True)
    weights = torch.rand(2, 17, 4, 9, generator=torch.Generator().manual_seed(1))
    fast, ref = topk_products(s_fast, d_fast, 9), plain_topk(s_ref, d_ref, 9)
    assert torch.equal(fast, ref)  # the same fp32 products, the same order
    (fast * weights).sum().backward()
    (ref * weights).sum().backward()
    # with ties too: the blocks select the voxels one topk over all products selects
    assert torch.allclose(d_fast.grad, d_ref.grad, rtol=1e-5, atol=1e-7)
    if not detach_s:
        assert torch.allclose(s_fast.grad, s_ref.grad, rtol=1e-5, atol=1e-7)
    assert (s_fast.grad is None) == detach_s


def test_topk_mil_pooling_equals_the_mean_of_the_plain_topk_per_bag():
    s, d = maps(shape=(8, 8, 4))
    s_prev, d_prev = maps(shape=(4, 4, 2), seed=3)
    k = topk_counts(s_prev, d_prev, 0.2, k_factor("fine", 0.5, (8, 8, 4), (4, 4, 2)), 1)
    assert k.max() > k.min()  # bags with different k
    d_fast, d_ref = d.clone().requires_grad_(True), d.clone().requires_grad_(True)
    fast, ref = topk_mil_pooling(s, d_fast, k), plain_topk_pooling(s, d_ref, k)
    assert torch.equal(fast, ref)
    fast.sum().backward()
    ref.sum().backward()
    assert torch.allclose(d_fast.grad, d_ref.grad, rtol=1e-5, atol=1e-7)


def test_released_region_loss_equals_topk_voxel_bce_of_the_full_products():
    outputs = [maps(shape=(4, 4, 2), seed=5), maps(shape=(8, 8, 4), seed=6)]
    labels = (torch.rand(2, 17, 4, generator=torch.Generator().manual_seed(7)) > 0.7).float()
    w = torch.rand(17, 4, generator=torch.Generator().manual_seed(8)) * 3
    fast_maps = [(s.clone().requires_grad_(True), d.clone().requires_grad_(True)) for s, d in outputs]
    ref_maps = [(s.clone().requires_grad_(True), d.clone().requires_grad_(True)) for s, d in outputs]
    fast = released_region_mil_loss(fast_maps, labels, w, threshold=0.3, min_region_sum=0.0)
    ref_losses = []
    for level, (s, d) in enumerate(ref_maps):
        if level == 0:
            k = torch.full((2, 17, 4), 10, dtype=torch.long)
        else:
            s_prev, d_prev = ref_maps[0]
            k = topk_counts(s_prev, d_prev, 0.3, k_factor("fine", 0.5, (8, 8, 4), (4, 4, 2)), 4)
        ref_losses.append(topk_voxel_bce(instance_products(s, d), k, labels, w).flatten(1).mean(1))
    ref = torch.stack(ref_losses).mean(0)
    assert torch.allclose(fast, ref, rtol=1e-6)
    fast.sum().backward()
    ref.sum().backward()
    for (s_f, d_f), (s_r, d_r) in zip(fast_maps, ref_maps, strict=True):
        assert torch.allclose(d_f.grad, d_r.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(s_f.grad, s_r.grad, rtol=1e-4, atol=1e-6)


def test_topk_bce_of_one_voxel_is_the_bce():
    top = torch.tensor([[[[0.9, 0.2]]]])
    k = torch.tensor([[[1]]])
    assert torch.allclose(topk_voxel_bce(top, k, torch.ones(1, 1, 1), 2.0), bce(torch.tensor(0.9), 1.0, 2.0))


def test_region_one_hot_equals_f_one_hot_without_the_background():
    gen = torch.Generator().manual_seed(0)
    region_map = torch.randint(-2, 21, (2, 1, 5, 4, 3), generator=gen)  # below 0 and above N too
    plain = F.one_hot(region_map[:, 0].clamp(0, 17), 18).movedim(-1, 1)[:, 1:].float()
    fast = region_one_hot(region_map, 17)
    assert fast.dtype == torch.float32
    assert torch.equal(fast, plain)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_the_heads_matrix_product_gives_the_maps_of_the_two_convolutions(activation):
    torch.manual_seed(0)
    head = DaMILHead(32, 17, 4, activation)
    with torch.no_grad():  # weights of a trained size, not the prior-initialised ones
        head.regions.weight.normal_(0, 0.3)
        head.abnormality.weight.normal_(0, 0.3)
    x = torch.randn(2, 32, 6, 5, 4, requires_grad=True)
    s, d = head(x)
    s_ref = torch.sigmoid(head.regions(x))
    logits = head.abnormality(x)
    d_ref = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=1)[:, :-1]
    assert s.shape == s_ref.shape and d.shape == d_ref.shape
    assert torch.allclose(s, s_ref, atol=1e-6) and torch.allclose(d, d_ref, atol=1e-6)
    params = [x, head.regions.weight, head.regions.bias, head.abnormality.weight, head.abnormality.bias]
    grads = torch.autograd.grad((s**2).sum() + (d**2).sum(), params)
    grads_ref = torch.autograd.grad((s_ref**2).sum() + (d_ref**2).sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-5)


def test_the_heads_give_fp32_maps_under_bf16_autocast():
    torch.manual_seed(0)
    head = DaMILHead(32, 17, 4)
    x = torch.randn(1, 32, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, d = head(x)
    s_ref, d_ref = head(x)
    assert s.dtype == d.dtype == torch.float32
    assert torch.allclose(s, s_ref, atol=2e-2) and torch.allclose(d, d_ref, atol=2e-2)

"""The DaMIL image analyzer network (Liu et al. 2023, "Image analyzer architecture and training",
Figure S4): a 3D U-Net backbone with one upsampling stage fewer than downsampling stages, so that its
outputs are at half the input resolution, and an output layer on each of the last K decoder stages
that predicts N region segmentation maps S and M abnormality maps D.

The paper gives no channel widths or block details; the defaults follow the released code
(``liuaohanjsj/Cross-DL``, ``unet3d/model/mil_multitask.py``): depth 5 (4 max-poolings), two 3x3x3
convolutions per level with 16*2^d and 32*2^d channels, instance normalisation and LeakyReLU (slope
0.3, Keras' default), nearest-neighbour upsampling + concatenation + two convolutions per decoder
stage, 1x1x1 output convolutions. For a 160 x 160 x 80 input the K = 2 heads sit at 40 x 40 x 20 and
80 x 80 x 40. Built from MONAI blocks (:class:`monai.networks.blocks.Convolution`,
:class:`~monai.networks.blocks.UpSample`).

``abnormality_activation``: ``sigmoid`` (paper: M independent maps) or ``softmax`` (released code: a
softmax over the M types plus "normal"; the M type channels are returned).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn
from torch.utils.checkpoint import checkpoint


def conv_block(in_ch: int, out_ch: int, norm: str, slope: float) -> Convolution:
    return Convolution(
        3, in_ch, out_ch, kernel_size=3, norm=norm, act=("leakyrelu", {"negative_slope": slope}), bias=True
    )


class DoubleConv(nn.Sequential):
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, norm: str, slope: float) -> None:
        super().__init__(conv_block(in_ch, mid_ch, norm, slope), conv_block(mid_ch, out_ch, norm, slope))


class DaMILHead(nn.Module):
    """1x1x1 convolutions to N region maps (sigmoid) and M abnormality maps."""

    def __init__(
        self,
        in_ch: int,
        n_regions: int,
        n_types: int,
        abnormality_activation: str = "sigmoid",
        region_prior: float | None = None,
        abnormality_prior: float | None = 0.01,
    ) -> None:
        super().__init__()
        if abnormality_activation not in ("sigmoid", "softmax"):
            raise ValueError(
                f"abnormality_activation must be sigmoid or softmax, got {abnormality_activation!r}"
            )
        self.activation = abnormality_activation
        self.regions = nn.Conv3d(in_ch, n_regions, 1)
        self.abnormality = nn.Conv3d(in_ch, n_types + (1 if abnormality_activation == "softmax" else 0), 1)
        # Prior-probability bias initialisation (our choice, the paper is silent): a region covers about
        # 1/(N+1) of the head and abnormal voxels are rare, so maps start near those rates instead of 0.5;
        # max-pooled MIL predictions then start low rather than saturated.
        region_prior = 1.0 / (n_regions + 1) if region_prior is None else region_prior
        nn.init.constant_(self.regions.bias, float(torch.logit(torch.tensor(region_prior))))
        if abnormality_prior and abnormality_activation == "sigmoid":
            nn.init.constant_(self.abnormality.bias, float(torch.logit(torch.tensor(abnormality_prior))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Both 1x1x1 convolutions as one matrix product over the voxels, (N + M) x C times C x V: the
        # maps of ``self.regions(x)`` and ``self.abnormality(x)`` (up to float rounding: another
        # summation order over the C channels), in one pass over x instead of two and without PyTorch's
        # convolution path, whose backward for 1x1x1 kernels is ~2x slower on a CPU
        # (benchmarks/damil_overhead.py). The two nn.Conv3d stay the parameters (same checkpoints).
        weight = torch.cat([self.regions.weight, self.abnormality.weight]).flatten(1)
        bias = torch.cat([self.regions.bias, self.abnormality.bias])
        flat = x.flatten(2)  # (B, C, V)
        out = torch.baddbmm(
            bias.view(1, -1, 1).expand(len(x), -1, flat.shape[-1]), weight.expand(len(x), -1, -1), flat
        ).unflatten(2, x.shape[2:])
        n = self.regions.out_channels
        # Maps in fp32 whatever the autocast dtype: the MIL products, top-k counts against t and the
        # log-losses need the resolution near 0 and 1 that bf16 (8 mantissa bits) does not have.
        s = torch.sigmoid(out[:, :n].float())
        d = out[:, n:].float()
        d = torch.sigmoid(d) if self.activation == "sigmoid" else torch.softmax(d, dim=1)[:, :-1]
        return s, d


class DaMILBackbone(nn.Module):
    """3D U-Net encoder (``depth`` levels) and decoder with ``depth - 2`` stages (half resolution out).

    ``forward`` returns the feature maps of every decoder stage, coarse to fine.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_filters: int = 16,
        depth: int = 5,
        norm: str = "instance",
        negative_slope: float = 0.3,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth must be >= 3 (got {depth}): the decoder has depth - 2 stages.")
        self.gradient_checkpointing = gradient_checkpointing
        self.encoder = nn.ModuleList()
        ch = in_channels
        self.skip_channels: list[int] = []
        for d in range(depth):
            block = DoubleConv(ch, base_filters * 2**d, base_filters * 2 ** (d + 1), norm, negative_slope)
            self.encoder.append(block)
            ch = base_filters * 2 ** (d + 1)
            self.skip_channels.append(ch)
        self.pool = nn.MaxPool3d(2)
        self.up = UpSample(3, scale_factor=2, mode="nontrainable", interp_mode="nearest", align_corners=None)
        self.decoder = nn.ModuleList()
        self.decoder_channels: list[int] = []
        for d in range(depth - 2, 0, -1):  # one stage fewer than poolings: stops at half resolution
            out = base_filters * 2 ** (d + 1)  # released code: the skip width of that level
            self.decoder.append(DoubleConv(ch + self.skip_channels[d], out, out, norm, negative_slope))
            ch = out
            self.decoder_channels.append(out)

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and x.requires_grad:
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for d, block in enumerate(self.encoder):
            x = self._run(block, x if d == 0 else self.pool(x))
            skips.append(x)
        features = []
        for i, block in enumerate(self.decoder):
            skip = skips[len(skips) - 2 - i]
            x = self._run(block, torch.cat([self.up(x), skip], dim=1))
            features.append(x)
        return features


class DaMILNet(nn.Module):
    """Backbone + output heads on the last ``n_scales`` decoder stages.

    ``forward(image)`` returns a list of ``(S, D)`` pairs from the coarsest to the finest scale; the
    finest is the model's final prediction (paper: "the prediction of the highest scale").
    """

    def __init__(
        self,
        n_regions: int = 17,
        n_types: int = 4,
        n_scales: int = 2,
        base_filters: int = 16,
        depth: int = 5,
        norm: str = "instance",
        negative_slope: float = 0.3,
        abnormality_activation: str = "sigmoid",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = DaMILBackbone(1, base_filters, depth, norm, negative_slope, gradient_checkpointing)
        if not 1 <= n_scales <= len(self.backbone.decoder_channels):
            raise ValueError(
                f"n_scales={n_scales}: the decoder has {len(self.backbone.decoder_channels)} stages (depth {depth})."
            )
        self.n_scales = n_scales
        self.heads = nn.ModuleList(
            DaMILHead(ch, n_regions, n_types, abnormality_activation)
            for ch in self.backbone.decoder_channels[-n_scales:]
        )

    def forward(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.backbone(image)[-self.n_scales :]
        return [head(f) for head, f in zip(self.heads, features, strict=True)]

    @staticmethod
    def output_sizes(input_size: Sequence[int], depth: int = 5, n_scales: int = 2) -> list[tuple[int, ...]]:
        """Spatial sizes of the K outputs for an input size (coarse to fine)."""
        finest = [s // 2 for s in input_size]
        return [tuple(s // 2 ** (n_scales - 1 - k) for s in finest) for k in range(n_scales)]

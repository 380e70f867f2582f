"""Attention pooling of token vectors into one report vector (Wood et al. 2021, Fig. 2: "a custom attention
network aggregates these vectors into a report representation by taking a weighted sum of embedding
vectors, with the weight of each word determined by its importance to the classification decision").

The score of token t is ``v . tanh(W h_t + b)`` (additive attention with a learned context vector, as
in ALARM, MIDL 2020); padding tokens get weight exactly 0 by masking before the softmax.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionPooling(nn.Module):
    """``(B, T, H)`` token vectors + ``(B, T)`` mask -> ``(B, H)`` report vector and ``(B, T)`` weights."""

    def __init__(self, hidden_size: int, attention_size: int = 128) -> None:
        super().__init__()
        self.projection = nn.Linear(hidden_size, attention_size)
        self.context = nn.Linear(attention_size, 1, bias=False)

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.context(torch.tanh(self.projection(tokens))).squeeze(-1)
        scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * attention_mask  # exact zeros on padding
        pooled = torch.einsum("bt,bth->bh", weights, tokens)
        return pooled, weights

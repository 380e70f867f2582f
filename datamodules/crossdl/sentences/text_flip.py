"""Left-right flip of a report sentence and its region labels (Liu et al. 2023, "Discretizer model and
training": "a 50 % chance that characters 'left' and 'right' in the sentence were replaced by each
other, with the region labels replaced by the corresponding regions on the other side of the brain").

The word map is configuration (the language presets of :mod:`datamodules.crossdl.sentences.languages`).
The English map swaps left/right in lower case, capitalised and upper case and the abbreviations L/R and
Lt/Rt; the Chinese map swaps 左 and 右 but keeps 左右 ("about", as in 约20mm左右, or "both", as in 左右侧脑室).
Latin-script words are matched as whole words only ("leftover" stays), CJK characters anywhere. Applying
the flip twice gives back the original text and labels.

A sentence is flipped only when the flip changes its text or its region labels are side-symmetric
(:meth:`LeftRightFlip.can_flip`): mirroring the labels of a sentence whose text names no side (a Chinese
sentence under an English word map, or "hematoma in the surgery area" annotated as left frontal) would
teach the model lateral labels on unchanged text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from reportsup.contracts.labels.crossdl import LabelSpace

ENGLISH_SIDE_WORDS: dict[str, str] = {
    "left": "right",
    "Left": "Right",
    "LEFT": "RIGHT",
    "L": "R",
    "Lt": "Rt",
    "lt": "rt",
}
# 左右 maps to itself: it is matched before 左 (longest first), so "about"/"both" are never flipped.
CHINESE_SIDE_WORDS: dict[str, str] = {"左": "右", "左右": "左右"}


def symmetric_word_map(word_map: Mapping[str, str]) -> dict[str, str]:
    """``{a: b}`` completed with ``{b: a}``; a word mapped two ways is an error."""
    full = dict(word_map)
    for a, b in word_map.items():
        if full.get(b, a) != a:
            raise ValueError(
                f"flip word map: {b!r} maps to {full[b]!r} but {a!r} maps to {b!r}; the map must be symmetric."
            )
        full[b] = a
    return full


class LeftRightFlip:
    """Swap side words in text and mirror the region labels with the label space's pairing."""

    def __init__(self, space: LabelSpace, word_map: Mapping[str, str] = ENGLISH_SIDE_WORDS) -> None:
        self.words = symmetric_word_map(word_map)
        self.permutation = space.flip_permutation()
        alternatives = []
        for w in sorted(self.words, key=len, reverse=True):
            alternatives.append(rf"\b{re.escape(w)}\b" if w.isascii() else re.escape(w))
        self.pattern = re.compile("|".join(alternatives))

    @property
    def side_words(self) -> list[str]:
        """The words the flip actually swaps (not those mapped to themselves, such as 左右)."""
        return [w for w, v in self.words.items() if w != v]

    def names_a_side(self, text: str) -> bool:
        return any(self.words[m.group(0)] != m.group(0) for m in self.pattern.finditer(text))

    def can_flip(self, text: str, regions: np.ndarray) -> bool:
        """Whether flipping keeps text and labels consistent: the text changes (it names a side), or the
        labels are their own mirror image (no lateral label, bilateral, unknown on both sides)."""
        if self.names_a_side(text):
            return True
        regions = np.asarray(regions, dtype=np.float64)
        return bool(np.array_equal(self.flip_regions(regions), regions, equal_nan=True))

    def flip_text(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.words[m.group(0)], text)

    def flip_regions(self, regions: np.ndarray) -> np.ndarray:
        """Region vector(s) (last axis = regions) with each paired region taking its mirror's value."""
        return regions[..., self.permutation]

    def __call__(self, text: str, regions: np.ndarray) -> tuple[str, np.ndarray]:
        return self.flip_text(text), self.flip_regions(regions)

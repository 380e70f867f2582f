"""Findings-section extraction and sentence splitting (Liu et al. 2023, "Discretizer model and training":
"the 'findings' part of each report was first split into sentences").

Section headers are configuration (English defaults here; the Chinese ones, e.g. 检查所见/影像所见 and
诊断意见/印象, are the ``zh`` preset of :mod:`datamodules.crossdl.sentences.languages`). Sentences are split with pysbd for the languages it knows (English, Chinese, ...),
and for any other language by a punctuation rule (., !, ?, and the CJK full stops) followed by space,
line end or a CJK character.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

DEFAULT_FINDINGS_HEADERS: tuple[str, ...] = ("findings", "finding", "description")
DEFAULT_END_HEADERS: tuple[str, ...] = ("impression", "conclusion", "opinion", "diagnosis", "recommendation")
_FALLBACK_SPLIT = re.compile(r"(?<=[.!?。！？])(?:\s+|(?=[\u3000-\u9fff]))")


class MissingFindingsError(ValueError):
    """A report without a Findings section: reported per report, never silently dropped."""


def header_pattern(headers: Sequence[str]) -> re.Pattern:
    """A Findings or end header of ``headers`` where reports put one (case-insensitive)."""
    alternatives = "|".join(
        re.escape(h.strip().rstrip(":：")) for h in sorted(headers, key=len, reverse=True)
    )
    # A header at the start of a line (or of the text) followed by ':' / '：' or a line break, or right
    # after the end of a sentence followed by a colon (reports written as one paragraph).
    return re.compile(
        rf"(?:(?:^|\n)[ \t]*(?:{alternatives})[ \t]*(?:[:：]|\n)|(?<=[.。!?！？])\s*(?:{alternatives})[ \t]*[:：])",
        re.IGNORECASE,
    )


def extract_findings(
    text: str,
    findings_headers: Sequence[str] = DEFAULT_FINDINGS_HEADERS,
    end_headers: Sequence[str] = DEFAULT_END_HEADERS,
) -> str | None:
    """The text between a Findings header and the next end header (or the end); None without one."""
    start = header_pattern(findings_headers).search(text)
    if start is None:
        return None
    rest = text[start.end() :]
    end = header_pattern(end_headers).search(rest)
    findings = (rest[: end.start()] if end else rest).strip()
    return findings or None


@lru_cache(maxsize=8)
def _segmenter(language: str):
    import pysbd

    try:
        return pysbd.Segmenter(language=language, clean=False)
    except ValueError:  # pysbd does not know this language
        return None


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Sentences of ``text``, stripped, empty ones removed."""
    segmenter = _segmenter(language)
    parts = segmenter.segment(text) if segmenter is not None else _FALLBACK_SPLIT.split(text)
    return [p.strip() for p in parts if p and p.strip()]


def findings_sentences(
    text: str,
    language: str = "en",
    findings_headers: Sequence[str] = DEFAULT_FINDINGS_HEADERS,
    end_headers: Sequence[str] = DEFAULT_END_HEADERS,
) -> list[str]:
    """Sentences of the Findings section; :class:`MissingFindingsError` when there is none."""
    findings = extract_findings(text, findings_headers, end_headers)
    if findings is None:
        raise MissingFindingsError(
            f"no Findings section (headers {list(findings_headers)}) in: {text[:80]!r}"
        )
    return split_sentences(findings, language)

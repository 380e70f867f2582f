"""Language presets of the Cross-DL sentence pipeline: where the Findings section starts and ends, how it
is split into sentences, and which words name a side for the left-right flip.

The paper's reports are Chinese (Liu et al. 2023, "Datasets": "All reports were written in Chinese";
"Discretizer model and training": the flip swaps the characters 'left' and 'right', 左 and 右). A run
picks one preset with ``data.language`` (``zh`` for the paper's experiment, ``en`` for the English
synthetic demo reports); ``data.findings_headers``, ``data.end_headers`` and ``data.flip.word_map``
take the preset's values unless set explicitly. :func:`check_language` stops a run whose text matches
none of the configured side words or headers: with English settings on Chinese reports every flip would
otherwise leave the text unchanged and no Findings section would be found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from datamodules.common.report_sections import DEFAULT_END_HEADERS, DEFAULT_FINDINGS_HEADERS, header_pattern
from datamodules.crossdl.sentences.text_flip import CHINESE_SIDE_WORDS, ENGLISH_SIDE_WORDS, LeftRightFlip


class LanguageMismatchError(ValueError):
    """The text matches none of the configured side words or Findings headers; the message names the key."""


@dataclass(frozen=True)
class LanguagePreset:
    """``language`` is also the sentence splitter's language (pysbd code, :func:`split_sentences`)."""

    language: str
    findings_headers: tuple[str, ...]
    end_headers: tuple[str, ...]
    side_words: Mapping[str, str] = field(default_factory=dict)


PRESETS: dict[str, LanguagePreset] = {
    "en": LanguagePreset("en", DEFAULT_FINDINGS_HEADERS, DEFAULT_END_HEADERS, ENGLISH_SIDE_WORDS),
    # 检查所见 / 影像所见 / 影像表现 ("examination / imaging findings") open the Findings section of Chinese
    # CT reports; 诊断意见 / 影像诊断 / 印象 ("diagnostic opinion / imaging diagnosis / impression") end it.
    "zh": LanguagePreset(
        "zh", ("检查所见", "影像所见", "影像表现"), ("诊断意见", "影像诊断", "印象"), CHINESE_SIDE_WORDS
    ),
}
#: the values a preset gives to ``data.*`` keys (see :func:`preset_value`)
PRESET_KEYS = ("findings_headers", "end_headers", "side_words")


def language_preset(language: str) -> LanguagePreset:
    """The preset of ``data.language``; an unknown language names the keys to set instead."""
    try:
        return PRESETS[language]
    except KeyError:
        raise LanguageMismatchError(
            f"data.language={language!r} has no preset (presets: {sorted(PRESETS)}): use one of them, or set "
            "data.findings_headers, data.end_headers and data.flip.word_map for these reports."
        ) from None


def preset_value(language: str, key: str) -> list[str] | dict[str, str]:
    """One value of a preset, for the Hydra resolver ``${language_preset:${data.language},<key>}``."""
    if key not in PRESET_KEYS:
        raise KeyError(f"language_preset: unknown key {key!r}; one of {PRESET_KEYS}.")
    value = getattr(language_preset(language), key)
    return dict(value) if isinstance(value, Mapping) else list(value)


def check_language(
    sentences: Sequence[str],
    reports: Sequence[str] | None,
    flip: LeftRightFlip,
    findings_headers: Sequence[str],
    *,
    language: str,
    source: str,
) -> None:
    """Stop a run whose text matches none of the configured side words or Findings headers.

    Head-CT findings name sides all the time (the paper's 17 regions are lateralised but for the brain
    stem), and every report of a Findings/Impression layout has a Findings header. Sentences without a
    single configured side word *and* reports (if any) without a single configured header are text in
    another language than ``data.language`` (Chinese reports under the English preset, or the reverse),
    which would otherwise run silently: every flip skipped, every report listed as having no Findings.
    """
    if not sentences or any(flip.names_a_side(t) for t in sentences):
        return
    pattern = header_pattern(findings_headers)
    if reports and any(pattern.search(t) for t in reports):
        return
    reports_part = (
        f" and none of the {len(reports)} reports has a Findings header {list(findings_headers)}"
        if reports
        else ""
    )
    raise LanguageMismatchError(
        f"{source}: none of the {len(sentences)} sentences contains a side word of data.flip.word_map "
        f"({sorted(flip.side_words)[:6]}){reports_part}: the text is not in data.language={language!r}. Set "
        f"data.language to the reports' language (presets: {sorted(PRESETS)}), or data.flip.word_map and "
        "data.findings_headers / data.end_headers to its side words and section headers."
    )

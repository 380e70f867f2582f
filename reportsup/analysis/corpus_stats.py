"""Lexical complexity of a report corpus: type-token ratio and Yule's I (ALARM paper, Table 1).

Wood et al. 2021 (ALARM): "We used type-token ratio and Yules I [23] to calculate the linguistic
complexity of our report corpus", reported per data set as number of reports, total size of corpus
(words), total number of unique words, Yule I and type-token ratio (Table 1), plus unique words per
report in the text ("205,048 ... and per report (1.62)", i.e. unique words / reports).

Definitions, with N tokens, V types and V(i) the number of types that occur exactly i times:

* type-token ratio ``TTR = V / N``;
* ``M1 = N = sum_i i V(i)`` and ``M2 = sum_i i^2 V(i)`` (the sum of every type's frequency squared);
* Yule's characteristic ``K = 10^4 (M2 - M1) / M1^2`` and Yule's ``I = M1^2 / (M2 - M1) = 10^4 / K``.

K measures repetition (the chance that two tokens drawn at random are the same word, made
independent of N), so higher I means a richer vocabulary, as the paper reads it ("a higher number of
unique words ... reflected in a higher Yule I"). The paper cites Yule (1939) [23], a study of sentence
length; the characteristic K comes from Yule (1944), *The Statistical Study of Literary Vocabulary*,
and I as its inverse with ``M1 = N`` tokens as in Oakes (1998, p. 204).

Another definition is in circulation: ``I = V^2 / (M2 - V)``, with the number of *types* in place of
M1 (a widely copied blog snippet, and ``lexicalrichness.LexicalRichness.yulei``). It is not 10^4 / K
and it cannot give the paper's numbers: Cauchy-Schwarz gives ``M2 >= N^2 / V``, so that variant is at
most ``V^3 / (N^2 - V^2)``, about 43 for the head MRI corpus (N = 14,183,182, V = 205,048), whereas
Table 1 reports 79 (K = 127 under the definition used here). ``lexicalrichness``'s ``yulek`` does
equal K below.

Table 1 note: 205,048 / 14,183,182 = 0.0145, while the table prints a type-token ratio of 0.019 for
head MRI; the head CT (0.0120) and chest radiograph (0.0027) rows match V / N truncated to 0.011 and
0.002, so the head MRI entry looks like a typo for 0.014.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import pandas as pd

# A word is a run of letters/digits (any script), optionally joined by an apostrophe or hyphen
# ("don't", "well-defined", "c5-6"); a decimal number ("3.2", "1.5") is one word. For ASCII text this
# is ``[0-9]+(?:\.[0-9]+)+|[a-z0-9]+(?:['-][a-z0-9]+)*`` after lower-casing. Numbers and
# letter-digit mixes count as words: in MRI reports "t2", "flair", "5mm" and sizes carry content.
# Everything else (punctuation, "/", "(", underscores) separates words.
_ALNUM = r"[^\W_]"
TOKEN_PATTERN = re.compile(rf"[0-9]+(?:\.[0-9]+)+|{_ALNUM}+(?:['-]{_ALNUM}+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u2010": "-", "\u2011": "-"})

ALL = "all"  # the group label of the whole-corpus row
NO_GROUP = "(no site)"  # the group label of rows whose group value is empty

# Paper Table 1 headings, for the columns of corpus_statistics().
TABLE1_HEADINGS: dict[str, str] = {
    "n_reports": "Number of reports",
    "n_words": "Total size of corpus (words)",
    "n_unique_words": "Total number of unique words",
    "unique_words_per_report": "Unique words per report",
    "yules_i": "Yule I",
    "type_token_ratio": "Type-token-ratio",
}


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Word tokens of ``text`` (see :data:`TOKEN_PATTERN`); curly apostrophes and Unicode hyphens
    count as ``'`` and ``-``. ``"T2-weighted 3.2cm, Patient's"`` -> ``["t2-weighted", "3.2", "cm",
    "patient's"]``."""
    text = text.translate(_APOSTROPHES)
    if lowercase:
        text = text.lower()
    return TOKEN_PATTERN.findall(text)


def _nonempty(tokens: Sequence[str]) -> Sequence[str]:
    if len(tokens) == 0:
        raise ValueError("no tokens: type-token ratio and Yule's K and I are undefined for an empty text.")
    return tokens


def _moments(tokens: Sequence[str]) -> tuple[int, int]:
    """``(M1, M2)``: the number of tokens and the sum over types of frequency squared."""
    counts = Counter(_nonempty(tokens))
    return sum(counts.values()), sum(f * f for f in counts.values())


def type_token_ratio(tokens: Sequence[str]) -> float:
    """``V / N``: distinct tokens over tokens. Raises ``ValueError`` for no tokens."""
    return len(set(_nonempty(tokens))) / len(tokens)


def yules_k(tokens: Sequence[str]) -> float:
    """Yule's characteristic ``K = 10^4 (M2 - M1) / M1^2`` (``M1`` = tokens). 0 when no word repeats."""
    m1, m2 = _moments(tokens)
    return 1e4 * (m2 - m1) / (m1 * m1)


def yules_i(tokens: Sequence[str]) -> float:
    """Yule's ``I = M1^2 / (M2 - M1) = 10^4 / K`` (``M1`` = tokens, not types; see module docstring).

    ``nan`` when no word repeats (``M2 == M1``, K = 0): I grows without bound as repetition vanishes,
    so no finite value is right. Raises ``ValueError`` for no tokens.
    """
    m1, m2 = _moments(tokens)
    return m1 * m1 / (m2 - m1) if m2 > m1 else math.nan


def corpus_statistics(texts: Iterable[str]) -> dict[str, float]:
    """Paper Table 1 statistics of a corpus, each text tokenized on its own (no words across texts).

    ``unique_words_per_report`` is the paper's "unique words ... per report": the corpus's distinct
    words divided by the number of reports (205,048 / 126,556 = 1.62), not a mean of per-report
    counts. ``yules_k`` is given beside ``yules_i``. Raises ``ValueError`` if no text holds a word.
    """
    n_reports = 0
    counts: Counter[str] = Counter()
    for text in texts:
        n_reports += 1
        counts.update(tokenize(text))
    if not counts:
        raise ValueError(f"no word tokens in {n_reports} text(s): the corpus statistics are undefined.")
    m1 = sum(counts.values())
    m2 = sum(f * f for f in counts.values())
    return {
        "n_reports": n_reports,
        "n_words": m1,
        "n_unique_words": len(counts),
        "unique_words_per_report": len(counts) / n_reports,
        "yules_i": m1 * m1 / (m2 - m1) if m2 > m1 else math.nan,
        "yules_k": 1e4 * (m2 - m1) / (m1 * m1),
        "type_token_ratio": len(counts) / m1,
    }


def corpus_statistics_by_group(
    table: pd.DataFrame, text_column: str, group_column: str | None = None
) -> pd.DataFrame:
    """One row of :func:`corpus_statistics` per group (e.g. site), sorted, then an ``"all"`` row.

    The first column is ``group_column`` (``"dataset"`` without grouping). Rows whose group is empty
    or missing form the group ``"(no site)"`` rather than being dropped. Texts must be strings; clean
    empty rows before calling (``reportsup/cli/corpus_stats.py`` reports them).
    """
    for column in (text_column, group_column):
        if column is not None and column not in table.columns:
            raise ValueError(
                f"no column '{column}'; the table has {', '.join(repr(str(c)) for c in table.columns)}."
            )
    label = group_column or "dataset"
    rows = []
    if group_column is not None:
        groups = table[group_column].map(lambda g: NO_GROUP if pd.isna(g) or str(g).strip() == "" else str(g))
        if (groups == ALL).any():
            raise ValueError(
                f"column '{group_column}' holds the value '{ALL}', which names the whole-corpus row; "
                "rename that group."
            )
        for group, part in table.groupby(groups, sort=True):
            rows.append({label: group, **corpus_statistics(part[text_column])})
    rows.append({label: ALL, **corpus_statistics(table[text_column])})
    return pd.DataFrame(rows)


def statistics_markdown(stats: pd.DataFrame) -> str:
    """A Markdown table in the layout of the paper's Table 1 (plus unique words per report)."""
    label = stats.columns[0]
    columns = list(TABLE1_HEADINGS)
    lines = [
        f"| {label} | " + " | ".join(TABLE1_HEADINGS[c] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for _, row in stats.iterrows():
        cells = [
            f"{row['n_reports']:,}",
            f"{row['n_words']:,}",
            f"{row['n_unique_words']:,}",
            f"{row['unique_words_per_report']:.2f}",
            f"{row['yules_i']:.1f}" if not math.isnan(row["yules_i"]) else "n/a",
            f"{row['type_token_ratio']:.3f}",
        ]
        lines.append(f"| {row[label]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Lexical complexity (ALARM Table 1): hand-computed Yule's K and I, lexicalrichness cross-check, command."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import pytest

from reportsup.analysis.corpus_stats import (
    corpus_statistics,
    corpus_statistics_by_group,
    tokenize,
    type_token_ratio,
    yules_i,
    yules_k,
)
from reportsup.cli.corpus_stats import main

PARAGRAPH = (
    "MRI head with and without contrast. There is a 2.3 cm enhancing mass in the left frontal lobe with "
    "surrounding vasogenic oedema and 4 mm of midline shift to the right. No acute infarct. The ventricles "
    "are not dilated. There are a few scattered T2/FLAIR white matter hyperintensities in keeping with "
    "small vessel disease. The mass is in keeping with a high-grade glioma; a metastasis is less likely. "
    "The patient's previous CT of 03.02.2019 showed no mass. Normal flow voids in the major vessels."
)


def test_tokenize_rule():
    assert tokenize("T2-weighted 3.2cm, Patient\u2019s (normal)/abnormal.") == [
        "t2-weighted",
        "3.2",
        "cm",
        "patient's",
        "normal",
        "abnormal",
    ]
    assert tokenize("No MASS", lowercase=False) == ["No", "MASS"]
    assert tokenize(" .,;- ") == []


def test_a_a_b_by_hand():
    tokens = ["a", "a", "b"]  # M1 = 3, V(1) = 1, V(2) = 1, M2 = 1 + 4 = 5
    assert yules_i(tokens) == pytest.approx(4.5)  # 9 / 2
    assert yules_k(tokens) == pytest.approx(1e4 * 2 / 9)  # 2222.2...
    assert type_token_ratio(tokens) == pytest.approx(2 / 3)


def test_oakes_example_by_hand():
    # "One word occurs three times and four words occur five times": M1 = 23, M2 = 1*9 + 4*25 = 109.
    tokens = ["w"] * 3 + [w for w in "abcd" for _ in range(5)]
    assert yules_k(tokens) == pytest.approx(1e4 * 86 / 529)  # 1625.708...
    assert yules_i(tokens) == pytest.approx(529 / 86)  # 6.1512
    assert yules_i(tokens) * yules_k(tokens) == pytest.approx(1e4)
    assert type_token_ratio(tokens) == pytest.approx(5 / 23)


def test_no_repetition_and_empty():
    assert yules_k(["a", "b", "c"]) == 0.0
    assert math.isnan(yules_i(["a", "b", "c"]))  # I = 10^4 / K is unbounded
    for measure in (yules_k, yules_i, type_token_ratio):
        with pytest.raises(ValueError, match="no tokens"):
            measure([])


def test_corpus_statistics_by_hand():
    # normal x2, mri x2, head, no, mass: N = 7, V = 5, M2 = 4 + 4 + 1 + 1 + 1 = 11
    stats = corpus_statistics(["Normal MRI.", "Normal MRI head; no mass."])
    assert stats == pytest.approx(
        {
            "n_reports": 2,
            "n_words": 7,
            "n_unique_words": 5,
            "unique_words_per_report": 2.5,
            "yules_i": 49 / 4,
            "yules_k": 1e4 * 4 / 49,
            "type_token_ratio": 5 / 7,
        }
    )
    # texts are tokenized one by one: no word is glued across a report boundary
    assert corpus_statistics(["abc", "def"])["n_words"] == 2
    with pytest.raises(ValueError, match="no word tokens"):
        corpus_statistics(["", "..."])


def test_by_group_rows_and_all_row():
    table = pd.DataFrame(
        {
            "text": ["Normal MRI.", "Normal MRI head; no mass.", "a a b", "x y"],
            "site": ["KCH", "KCH", "GSTT", None],
        }
    )
    out = corpus_statistics_by_group(table, "text", "site")
    assert out["site"].tolist() == ["(no site)", "GSTT", "KCH", "all"]
    assert out.set_index("site").loc["KCH", "yules_i"] == pytest.approx(12.25)
    assert out.set_index("site").loc["all", "n_words"] == 7 + 3 + 2
    assert corpus_statistics_by_group(table, "text")["dataset"].tolist() == ["all"]
    with pytest.raises(ValueError, match="'report'.*'text', 'site'"):
        corpus_statistics_by_group(table, "report")


def test_yule_against_lexicalrichness():
    lr = pytest.importorskip("lexicalrichness")
    tokens = tokenize(PARAGRAPH)
    rich = lr.LexicalRichness(tokens, preprocessor=None, tokenizer=None)  # the same tokens
    assert rich.words == len(tokens)
    # K: identical definition, 10^4 (M2 - N) / N^2.
    assert yules_k(tokens) == pytest.approx(rich.yulek, rel=1e-12)
    assert yules_i(tokens) == pytest.approx(1e4 / rich.yulek, rel=1e-12)
    assert type_token_ratio(tokens) == pytest.approx(rich.ttr, rel=1e-12)
    # lexicalrichness's yulei puts V (types) where Yule/Oakes have M1 = N (tokens): a different number.
    counts = Counter(tokens)
    v, m2 = len(counts), sum(f * f for f in counts.values())
    assert rich.yulei == pytest.approx(v * v / (m2 - v), rel=1e-12)
    assert rich.yulei != pytest.approx(yules_i(tokens), rel=0.01)


def test_paper_table1_yule_i_needs_tokens_as_m1():
    # Head MRI, Table 1: N = 14,183,182 words, V = 205,048 types, Yule I = 79. With types in place of
    # M1, I <= V^3 / (N^2 - V^2) (since M2 >= N^2 / V), far below 79; with M1 = N any I >= 0 is possible.
    n, v = 14_183_182, 205_048
    assert v**3 / (n**2 - v**2) < 45 < 79


def _write(tmp_path, table: pd.DataFrame, name: str):
    path = tmp_path / name
    if name.endswith(".csv"):
        table.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        table.to_parquet(path)
    else:
        table.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("name", ["reports.csv", "reports.parquet", "reports.jsonl"])
def test_command_writes_table1(tmp_path, capsys, name):
    table = pd.DataFrame(
        {"report_id": ["1", "2", "3"], "text": ["Normal MRI.", "Normal MRI head; no mass.", "a a b"]}
    )
    table["site"] = ["KCH", "KCH", "GSTT"]
    path = _write(tmp_path, table, name)
    main([str(path), "--out", str(tmp_path / "stats.csv")])
    printed = capsys.readouterr().out
    assert "| site | Number of reports | Total size of corpus (words) |" in printed
    assert "| KCH | 2 | 7 | 5 | 2.50 | 12.2 | 0.714 |" in printed
    stats = pd.read_csv(tmp_path / "stats.csv")
    assert stats["site"].tolist() == ["GSTT", "KCH", "all"]
    assert stats.iloc[-1]["n_words"] == 10


def test_command_bad_column_and_file(tmp_path):
    path = _write(tmp_path, pd.DataFrame({"report_id": ["1"], "findings": ["Normal."]}), "reports.csv")
    with pytest.raises(
        SystemExit,
        match=r"reports\.csv: no column 'text' \(--text-column\); the table has 'report_id', 'findings'",
    ):
        main([str(path)])
    with pytest.raises(SystemExit, match=r"no column 'hospital' \(--site-column\)"):
        main([str(path), "--text-column", "findings", "--site-column", "hospital"])
    with pytest.raises(SystemExit, match=r"missing\.csv: no such file"):
        main([str(tmp_path / "missing.csv")])


def test_command_empty_rows_error_or_skip(tmp_path, capsys):
    texts = ["Normal MRI.", "", "Normal MRI head; no mass.", "  ", "--", None]
    path = _write(tmp_path, pd.DataFrame({"text": texts}), "reports.jsonl")
    with pytest.raises(SystemExit, match=r"4 of 6 row\(s\) have an empty.*'text' \(data rows 2, 4, 5, 6;"):
        main([str(path)])
    main([str(path), "--skip-empty"])
    printed = capsys.readouterr().out
    assert "skipped 4 of 6 row(s)" in printed and "data rows 2, 4, 5, 6" in printed
    assert "| all | 2 | 7 | 5 | 2.50 | 12.2 | 0.714 |" in printed

"""Wood et al. 2021's analyses end to end on demo runs: ALARM and the word2vec baseline over the same
repeated splits, their comparison with DeLong p-values, the t-SNE map and the attention page."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_train

pytestmark = pytest.mark.slow
SMALL = (
    "data.demo.n_reports=600",
    "callbacks.evaluator.n_bootstrap=50",
    "seed=0,1",
)


def _command(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_alarm_vs_word2vec_repeats_compare_with_delong_and_draw_the_figures(tmp_path):
    data = tmp_path / "data"
    run_train(
        "experiment=alarm_binary_10x",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data}",
        "trainer.max_epochs=2",
        *SMALL,
    )
    run_train(
        "experiment=alarm_baseline_word2vec_10x",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data}",
        "data.demo.n_unlabelled=1000",
        "model.features.vector_size=50",
        *SMALL,
    )
    (alarm,) = list((tmp_path / "alarm_binary_10x").iterdir())
    (w2v,) = list((tmp_path / "alarm_baseline_word2vec_10x").iterdir())
    # Both experiments trained and tested on the same split per seed.
    for seed in ("0", "1"):
        assert (alarm / seed / "splits.csv").read_text() == (w2v / seed / "splits.csv").read_text()
    # The multirun summary carries report-label vs image-label DeLong per repeat.
    summary = json.loads((w2v / "summary.json").read_text())
    across = summary["experiments"]["alarm_baseline_word2vec_10x"]["delong_test_sets"]
    assert {tuple(t["sets"]) for t in across} == {
        ("report_label", "image_label"),
        ("report_label", "external_site"),
    }
    assert all(0 <= t["p_value"] <= 1 and not t["paired"] for t in across)

    out = tmp_path / "cmp"
    _command("reportsup.cli.compare_runs", str(alarm), str(w2v), "--out", str(out))
    comparison = json.loads((out / "comparison.json").read_text())
    tests = comparison["delong"]["alarm_baseline_word2vec_10x"]
    assert len(tests) == 2 * 3 and all(t["paired"] and 0 <= t["p_value"] <= 1 for t in tests)
    md = (out / "comparison.md").read_text()
    # the table shows the runs' own metrics.json numbers (mean over the two repeats)
    aurocs = [
        json.loads((w2v / s / "metrics.json").read_text())["image_label"]["abnormal"]["auroc"]["value"]
        for s in "01"
    ]
    row = next(
        line for line in md.split("## image_label")[1].splitlines() if line.startswith("| alarm_baseline")
    )
    assert row.split("|")[3].strip().startswith(f"{sum(aurocs) / 2:.3f} [")
    assert (out / "comparison.html").exists() and (out / "plots" / "roc_image_label_abnormal.png").exists()
    assert "| alarm_baseline_word2vec_10x | 2 |" in md and "repeats p < 0.05" in md
    with pytest.raises(AssertionError, match="not empty"):
        _command(
            "reportsup.cli.compare_runs", str(alarm), str(w2v), "--out", str(out)
        )  # nothing is overwritten

    png = tmp_path / "fig4.png"
    _command(
        "reportsup.cli.embedding_map",
        "--alarm",
        str(alarm / "0"),
        "--word2vec",
        str(w2v / "0"),
        "--trust-checkpoint",  # the baseline's fitted models are a pickle; this is our own run
        "--out",
        str(png),
    )
    assert png.stat().st_size > 20_000 and png.with_suffix(".csv").exists()
    page = tmp_path / "fig5.html"
    _command(
        "reportsup.cli.attention_map", str(alarm / "0"), "--select", "all", "--limit", "5", "--out", str(page)
    )
    text = page.read_text()
    assert text.count("<section>") == 5 and "rgba(220, 38, 38" in text and "probability" in text

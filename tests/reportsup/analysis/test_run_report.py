"""report.html, one page per run (issue 22 item 5): what it shows, that it escapes, that compare links it."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reportsup.analysis.metrics import confusion_counts
from reportsup.analysis.plots import plot_roc
from reportsup.analysis.run_report import (
    REPORT_ATTENTION_JSON,
    REPORT_HTML,
    confident_errors,
    format_metric,
    write_run_report,
)
from reportsup.analysis.run_report import (
    main as run_report_main,
)

CELL = re.compile(r"<td>([^<]*)</td>")


def _embedded(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _report_run(root: Path, *, n: int = 40, seed: int = 0, name: str = "alarm_binary") -> Path:
    """A finished report-model run folder as train.py leaves it: config, data summary, splits, label
    manifest, metrics with CIs, predictions (n reports, about a third wrong) and a real ROC PNG."""
    rng = np.random.default_rng(seed)
    run = root / f"{name}_{seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {
        "name": name,
        "seed": seed,
        "model": {"threshold": 0.5},
        "callbacks": {"evaluator": {"threshold": 0.5}},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "config_resolved.yaml").write_text(
        yaml.safe_dump(config | {"data": {"path": "/data/reports.csv"}})
    )
    (run / "label_manifest.json").write_text(json.dumps({"labels": ["abnormal"]}))
    (run / "data_summary.json").write_text(json.dumps({"sizes": {"train": 30, "report_label": n}}))
    ids = [f"R{i:03d}" for i in range(n)]
    pd.DataFrame({"id": ids, "patient_id": [f"P{i // 2}" for i in range(n)], "split": "report_label"}).to_csv(
        run / "splits.csv", index=False
    )
    y = rng.integers(0, 2, n)
    prob = np.clip(np.where(rng.random(n) < 0.35, 1 - y, y) * 0.8 + rng.random(n) * 0.2, 0, 1)
    pd.DataFrame(
        {"id": ids, "patient_id": [f"P{i // 2}" for i in range(n)], "abnormal_true": y, "abnormal_prob": prob}
    ).to_csv(run / "predictions_report_label.csv", index=False)
    metrics = {
        "report_label": {
            "abnormal": {
                "auroc": {"value": 0.8123, "ci_low": 0.7011, "ci_high": 0.9034},
                "a_metric_added_later": {"value": 0.4242, "ci_low": 0.3131, "ci_high": 0.5353},
                "n": {"value": n},
            }
        }
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    plot_roc(
        {"report_label": (y, prob, 0.81, 0.70, 0.90)}, run / "plots" / "roc_abnormal.png", "ROC: abnormal"
    )
    return run


def test_page_shows_metrics_config_data_figures_confusion_and_ten_errors(tmp_path):
    run = _report_run(tmp_path)
    page = write_run_report(run).read_text()
    assert (run / REPORT_HTML).is_file()
    # the metric table, generic over metrics.json's keys (a metric added later shows without a change)
    cells = CELL.findall(page)
    assert "0.812 [0.701, 0.903]" in cells and "0.424 [0.313, 0.535]" in cells and "40" in cells
    assert "<th>a_metric_added_later</th>" in page
    # the config that ran, collapsible, and the data summary and split sizes
    assert "<details><summary>config_resolved.yaml" in page and "/data/reports.csv" in page
    assert "<td>sizes.train</td><td>30</td>" in page and "<td>report_label</td><td>40</td>" in page
    # the ROC figure, embedded byte for byte: one file, readable offline
    assert _embedded(page) == [(run / "plots" / "roc_abnormal.png").read_bytes()]
    # the confusion matrix at the threshold the metrics used, computed from the predictions
    pred = pd.read_csv(run / "predictions_report_label.csv")
    counts = confusion_counts(
        pred["abnormal_true"].to_numpy().copy(), pred["abnormal_prob"].to_numpy().copy(), 0.5
    )
    assert (
        f"<tr><th>true 1</th><td>{counts['tp']}</td><td>{counts['fn']}</td></tr>"
        f"<tr><th>true 0</th><td>{counts['fp']}</td><td>{counts['tn']}</td></tr>" in page
    )
    # the ten most confident errors (more than ten exist), without highlights: the page says so
    assert counts["fp"] + counts["fn"] > 10
    errors = re.findall(
        r"<tr><td>(R\d+)</td><td>P\d+</td><td>[01]</td><td>([\d.]+)</td><td>(false \w+)</td>", page
    )
    assert len(errors) == 10
    wrong = pred[(pred["abnormal_prob"] > 0.5).astype(int) != pred["abnormal_true"]]
    top = wrong.assign(c=(wrong["abnormal_prob"] - 0.5).abs()).sort_values("c", ascending=False)
    assert [e[0] for e in errors] == top["id"].head(10).tolist()
    assert "No attention highlights" in page


def test_errors_show_their_attention_highlights_and_escape_the_report_text(tmp_path):
    run = _report_run(tmp_path)
    pred = pd.read_csv(run / "predictions_report_label.csv", dtype={"id": str})
    first = confident_errors(pred, "abnormal", 0.5)["id"].iloc[0]
    text = 'Mass <script>alert("x")</script> & oedema.'
    # weights on "Mass" and on the script tag's span: the shading must not let the tag through
    attention = {
        "report_label": {"abnormal": [{"id": first, "text": text, "words": [[0, 4, 0.6], [5, 13, 0.4]]}]}
    }
    (run / REPORT_ATTENTION_JSON).write_text(json.dumps(attention))
    # user text elsewhere too: a label name and a config value
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["report_label"]["<b>bold</b>"] = metrics["report_label"]["abnormal"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config_resolved.yaml").write_text("data:\n  path: </pre><script>evil()</script>\n")
    page = write_run_report(run).read_text()
    assert "<script>" not in page and "<b>bold" not in page
    assert 'title="0.4000">&lt;script&gt;</span>alert(&quot;x&quot;)&lt;/script&gt; &amp; oedema.' in page
    assert "&lt;/pre&gt;&lt;script&gt;evil()" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert '<span style="background: rgba(220, 38, 38, 1.000)" title="0.6000">Mass</span>' in page
    assert "No attention highlights" not in page


def test_a_val_threshold_set_shows_its_confusion_matrix_at_the_chosen_threshold(tmp_path):
    run = _report_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["report_label@val_threshold"] = {
        "abnormal": {
            "sensitivity": {"value": 0.9, "ci_low": 0.8, "ci_high": 1.0},
            "threshold": {"value": 0.3},
        }
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = write_run_report(run).read_text()
    pred = pd.read_csv(run / "predictions_report_label.csv")
    counts = confusion_counts(
        pred["abnormal_true"].to_numpy().copy(), pred["abnormal_prob"].to_numpy().copy(), 0.3
    )
    assert '<h3 id="set-2">report_label@val_threshold</h3>' in page
    assert "<th>abnormal at 0.3</th>" in page
    assert f"<tr><th>true 1</th><td>{counts['tp']}</td><td>{counts['fn']}</td></tr>" in page


def test_damil_like_run_shows_overlays_per_test_set_and_no_report_errors(tmp_path):
    from reportsup.analysis.plots import plot_confusion

    run = tmp_path / "damil"
    (run / "overlays").mkdir(parents=True)
    (run / "holdouts" / "cq500" / "overlays").mkdir(parents=True)
    (run / "config_resolved.yaml").write_text("name: damil_multiscale\n")
    metrics = {
        "test": {
            "type:haemorrhage": {"auroc": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8}},
            "dice:haemorrhage": {
                "dice": {"value": 0.31},
                "dice_threshold": {"value": 0.4, "source": "validation"},
            },
        }
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame(
        {"id": ["s1", "s2"], "type:haemorrhage_true": [1, 0], "type:haemorrhage_prob": [0.2, 0.9]}
    ).to_csv(run / "predictions_test.csv", index=False)
    png = plot_confusion({"tp": 1, "tn": 2, "fp": 0, "fn": 1}, tmp_path / "c.png", "x").read_bytes()
    for i in range(8):
        (run / "overlays" / f"scan{i}_1_frontal__haemorrhage.png").write_bytes(png)
    (run / "holdouts" / "cq500" / "overlays" / "cq1_1_temporal__haemorrhage.png").write_bytes(png)
    page = write_run_report(run).read_text()
    assert "<h2>Abnormality overlays</h2>" in page
    assert "<h3>test: 6 of 8</h3>" in page and "<h3>cq500: 1 of 1</h3>" in page
    assert len(_embedded(page)) == 7 and "overlays/scan0_1_frontal__haemorrhage.png" in page
    assert (
        "0.310" in CELL.findall(page) and "most confident errors" not in page
    )  # no label_manifest: not a report model
    assert "<th>type:haemorrhage at 0.5</th>" in page  # confusion from predictions_test.csv


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}, "0.500 [0.250, 0.750]"),
        ({"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}, "n/a"),
        ({"value": 12}, "12"),
        ({"value": 0.9, "ci_low": float("nan"), "ci_high": float("nan")}, "0.900"),
    ],
)
def test_metric_cells(fields, shown):
    assert format_metric(fields) == shown


def test_regenerating_a_folder_that_is_not_a_finished_run_says_so(tmp_path):
    """``python -m reportsup.analysis.run_report DIR`` on a wrong folder: one line naming it, no traceback."""
    with pytest.raises(SystemExit) as stop:
        run_report_main([str(tmp_path)])
    assert str(stop.value) == (
        f"run_report: {tmp_path}: no metrics.json (the run failed, is still running, or is not a run)."
    )
    (tmp_path / "metrics.json").write_text('{"report_label": {')  # a run killed while writing it
    with pytest.raises(SystemExit) as stop:
        run_report_main([str(tmp_path)])
    assert str(stop.value).startswith(f"run_report: {tmp_path / 'metrics.json'}: not valid JSON")
    assert "rerun its test step" in str(stop.value)
    assert not (tmp_path / REPORT_HTML).exists()


def test_compare_links_the_report_pages_of_the_runs_it_compares(tmp_path):
    from reportsup.cli.compare_runs import compare_dirs

    runs = [
        _report_run(tmp_path / name, seed=0, name=name)
        for name in ("alarm_binary", "alarm_baseline_word2vec")
    ]
    write_run_report(runs[0])  # the second run finished before report.html existed
    json_path, md_path = compare_dirs([r.parent for r in runs], tmp_path / "cmp")
    md, page = md_path.read_text(), (tmp_path / "cmp" / "comparison.html").read_text()
    (link,) = re.findall(r'<a href="([^"]+)">alarm_binary_0 \(seed 0\)</a>', page)
    assert (tmp_path / "cmp" / link).resolve() == (runs[0] / REPORT_HTML).resolve()
    assert f"]({link})" in md
    assert (
        f"alarm_baseline_word2vec_0 (seed 0): no report.html; write it with `python -m reportsup.analysis.run_report {runs[1]}`"
        in md
    )
    reports = {k: v["reports"] for k, v in json.loads(json_path.read_text())["experiments"].items()}
    assert reports == {"alarm_binary": [str(runs[0] / REPORT_HTML)], "alarm_baseline_word2vec": [None]}


# Issue 22's done-when on the demos themselves: tests/test_train_e2e.py (ALARM) and
# tests/lightning_modules/crossdl/damil/test_damil_e2e.py (DaMIL) check their report.html with
# tests/report_page_checks.py.


def test_end_of_run_without_the_reports_table_writes_the_page_without_highlights(tmp_path, caplog):
    """The reports table the run read is gone by the end of the run: a warning naming it, and the page
    still lists the errors (without highlights, saying so); the run is not failed for it."""
    from types import SimpleNamespace

    from reportsup.runner.run_report_attention import finish_run_report, has_attention

    run = _report_run(tmp_path)  # its config_resolved.yaml reads /data/reports.csv, which does not exist
    model = SimpleNamespace(represent=lambda *a: None, encoder=SimpleNamespace(word_spans=lambda t: []))
    assert has_attention(model)
    with caplog.at_level("WARNING"):
        page = finish_run_report(run, model)
    assert page == run / REPORT_HTML and "No attention highlights" in page.read_text()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("[reportsup] report.html without attention highlights: ")
    assert "/data/reports.csv" in warning
    assert not (run / REPORT_ATTENTION_JSON).exists()

import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from reportsup.analysis.metrics import binary_metrics, patient_bootstrap_ci
from reportsup.analysis.summary import summarize_runs
from reportsup.runner.summary import summarize_multirun


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_sklearn(seed):
    y, p = _data(seed=seed)
    pred = (p >= 0.5).astype(int)
    m = binary_metrics(y, p, 0.5)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(y, pred))


def test_single_class_auroc_is_nan_not_an_error():
    assert np.isnan(binary_metrics(np.ones(5, int), np.linspace(0, 1, 5))["auroc"])


def test_patient_bootstrap_is_seeded_and_brackets_the_estimate():
    y, p = _data()
    patients = np.arange(len(y)) // 3  # three reports per patient
    a = patient_bootstrap_ci(y, p, patients, n_bootstrap=200, seed=1)
    b = patient_bootstrap_ci(y, p, patients, n_bootstrap=200, seed=1)
    assert a == b
    for m, f in a.items():
        assert f["ci_low"] <= f["value"] <= f["ci_high"], m
        assert f["n_bootstrap_valid"] == 200


def test_summary_mean_and_t_interval():
    aurocs = [0.90, 0.92, 0.95, 0.91]
    runs = [{"report_label": {"abnormal": {"auroc": {"value": v}}}} for v in aurocs]
    s = summarize_runs(runs)["report_label"]["abnormal"]["auroc"]
    half = stats.t.ppf(0.975, 3) * np.std(aurocs, ddof=1) / 2
    assert s["mean"] == pytest.approx(np.mean(aurocs)) and s["ci_high"] == pytest.approx(
        np.mean(aurocs) + half
    )
    assert s["n_runs"] == 4


def test_summarize_multirun_from_folder(tmp_path):
    for i, v in enumerate([0.8, 0.9, 1.0]):
        run = tmp_path / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("name: alarm_binary_10x\n")
        (run / "metrics.json").write_text(json.dumps({"image_label": {"abnormal": {"auroc": {"value": v}}}}))
    (tmp_path / "3" / ".hydra").mkdir(parents=True)
    (tmp_path / "3" / ".hydra" / "config.yaml").write_text("name: alarm_binary_10x\n")  # a failed run
    json_path, md_path = summarize_multirun(tmp_path)
    summary = json.loads(json_path.read_text())
    block = summary["experiments"]["alarm_binary_10x"]["metrics"]["image_label"]["abnormal"]["auroc"]
    assert block["mean"] == pytest.approx(0.9) and block["n_runs"] == 3
    assert summary["missing"] == [str(tmp_path / "3")]
    assert "0.900 [" in md_path.read_text()


def test_repeat_intervals_of_proportions_stay_in_unit_interval():
    runs = [{"s": {"a": {"specificity": {"value": v}, "n": {"value": 10}}}} for v in (1.0, 1.0, 0.9)]
    s = summarize_runs(runs)["s"]["a"]
    assert s["specificity"]["ci_high"] == 1.0 and s["specificity"]["ci_low"] < 1.0


def test_plot_file_names_are_safe():
    from lightning_modules.common.evaluation import safe_filename

    assert safe_filename("ich/sah") == "ich_sah" and safe_filename("Finding X") == "Finding_X"

"""Spine end to end on synthetic data (slow): report NLP -> machine labels -> 1step -> 2steps, and
step2only; the regimes differ in what they load and train on, read from their checkpoints and data
summaries (not from their names)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_modules.spine.image_module import state_digest
from tests.conftest import ROOT, SPINE_TEST_SESSIONS

pytestmark = pytest.mark.slow


def _train(*overrides: str) -> Path:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={"HF_HUB_OFFLINE": "1", **__import__("os").environ},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in (proc.stdout + proc.stderr).splitlines()[::-1] if "run directory:" in x)
    return Path(line.split("run directory:")[1].strip())


def _mean_auroc(run: Path, test_set: str) -> float:
    metrics = json.loads((run / "metrics.json").read_text())[test_set]
    return float(np.nanmean([m["auroc"]["value"] for m in metrics.values()]))


def _manifest(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["label_manifest"]


def _best(run: Path) -> Path:
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    return best


@pytest.fixture(scope="module")
def spine_runs(tmp_path_factory, spine_demo_data_dir):
    data, out = spine_demo_data_dir, tmp_path_factory.mktemp("spine_out")
    common = [f"paths.data_dir={data}", f"paths.output_dir={out}", "demo=true", SPINE_TEST_SESSIONS]
    two = _train("experiment=spine_resnet18_2steps", *common)
    # step2only's occlusion maps are not checked (2steps' are): 30 s saved
    only = _train("experiment=spine_resnet18_step2only", *common, "callbacks.occlusion.n_per_finding=0")
    (stages,) = (data / "spine_pipeline").iterdir()
    done = {s: json.loads((stages / s / "DONE.json").read_text()) for s in ("nlp", "machine_labels", "1step")}
    return {
        "nlp": Path(done["nlp"]["checkpoint"]).parent.parent,
        "labels": Path(done["machine_labels"]["machine_labels"]),
        "1step": Path(done["1step"]["checkpoint"]).parent.parent,
        "2steps": two,
        "step2only": only,
    }


def test_spine_nlp_demo_learns_every_finding_with_confusion_matrices(spine_runs):
    run = spine_runs["nlp"]
    metrics = json.loads((run / "metrics.json").read_text())["report_label"]
    assert len(metrics) == 12
    assert _mean_auroc(run, "report_label") > 0.8
    assert {"tp", "tn", "fp", "fn", "sensitivity", "specificity", "f1", "accuracy"} <= set(
        metrics["scoliosis"]
    )
    assert (run / "plots" / "confusion_report_label_scoliosis.png").stat().st_size > 0
    # the machine labels were made by this checkpoint (reportsup-label's manifest)
    manifest = json.loads((spine_runs["labels"] / "manifest.json").read_text())
    assert manifest["label_manifest"]["task"] == "spine_report_classifier"
    assert Path(manifest["checkpoint"]) == _best(run).resolve()


def test_1step_learns_from_machine_labels_above_chance(spine_runs):
    run = spine_runs["1step"]
    summary = json.loads((run / "data_summary.json").read_text())
    assert summary["train_on"] == "machine" and summary["label_source"].startswith("machine")
    assert summary["machine_labels"][0]["path"] == str(spine_runs["labels"])
    assert _mean_auroc(run, "image_test") > 0.6


def test_the_three_regimes_differ_in_what_they_load_and_train_on(spine_runs):
    one, two, only = (spine_runs[k] for k in ("1step", "2steps", "step2only"))
    s1, s2, s3 = (json.loads((r / "data_summary.json").read_text()) for r in (one, two, only))
    # 1step: machine labels on the whole pool; 2steps and step2only: the human refinement set only
    n_ref = s1["sizes"]["refinement"]
    assert s2["train_on"] == s3["train_on"] == "refinement" and "machine_labels" not in s2 | s3
    assert s2["sizes"]["train"] + s2["sizes"]["val"] == n_ref == s3["sizes"]["train"] + s3["sizes"]["val"]
    assert s1["sizes"]["train"] + s1["sizes"]["val"] > 3 * n_ref
    # 2steps starts from the 1step model's weights, step2only does not
    step1 = torch.load(_best(one), map_location="cpu", weights_only=False)["state_dict"]
    step1_digest = state_digest(
        {k.removeprefix("network."): v for k, v in step1.items() if k.startswith("network.")}
    )
    init2, init3 = _manifest(_best(two))["init"], _manifest(_best(only))["init"]
    assert init2["source"] == "checkpoint" and init2["file"] == str(_best(one).resolve())
    assert init2["state_sha256"] == step1_digest
    assert init3["source"] == "random" and init3["state_sha256"] != step1_digest  # demo: no ImageNet download
    assert _manifest(_best(one))["init"]["source"] == "random"


def test_youden_cutoffs_occlusion_maps_and_roc_curves_are_written(spine_runs):
    run = spine_runs["2steps"]
    cutoffs = json.loads((run / "youden_cutoffs.json").read_text())
    assert cutoffs["cutoff_set"] == "refinement" and len(cutoffs["cutoffs"]) >= 10
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"image_test", "refinement", "image_test@youden"}
    some = next(iter(metrics["image_test@youden"].values()))
    assert 0 < some["cutoff"]["value"] < 1 and "tp" in some
    assert len(list((run / "plots" / "occlusion").glob("*.png"))) >= 10
    assert len(list((run / "plots").glob("roc_*.png"))) == 12

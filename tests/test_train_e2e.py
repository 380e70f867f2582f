"""End-to-end runs of train.py, as users type them (slow: `make test` runs them too)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import ROOT, SPINE_TEST_SESSIONS, run_train, single_run_dir
from tests.report_page_checks import check_report_model_page

pytestmark = pytest.mark.slow
FAST = ("callbacks.evaluator.n_bootstrap=50",)


def test_every_experiment_runs_fast_dev_run_in_demo_mode(tmp_path, demo_data_dir, spine_demo_data_dir):
    experiments = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    # Test-only experiments (train: false, e.g. damil_cq500) test a trained model: without ckpt_path they
    # stop at once with the fix, before a demo writes any data (their runs: their own tests).
    test_only = [
        e
        for e in experiments
        if yaml.safe_load((ROOT / "experiments" / f"{e}.yaml").read_text()).get("train") is False
    ]
    for name in test_only:
        data_dir = tmp_path / name / "data"
        proc = run_train(
            f"experiment={name}",
            "demo=true",
            f"paths.output_dir={tmp_path / name}",
            f"paths.data_dir={data_dir}",
            check=False,
        )
        assert proc.returncode != 0 and "ckpt_path=outputs/" in proc.stderr + proc.stdout, name
        assert not data_dir.exists()
    experiments = [e for e in experiments if e not in test_only]
    spine = [e for e in experiments if e.startswith("spine")]
    ran = []
    # Two multiruns: the spine experiments on the spine tests' smaller data set, whose report NLP and
    # machine labels the spine tests have made (or this run makes for them), the rest on the CT phantoms.
    # (``++``: a multirun composes its sweep config from the primary config, whose data has no demo keys.)
    for i, (pattern, data_dir, extra, expected) in enumerate(
        (
            (
                f"glob(*,exclude=[spine*,{','.join(test_only)}])",
                demo_data_dir,
                (),
                len(experiments) - len(spine),
            ),
            ("glob(spine*)", spine_demo_data_dir, ("++" + SPINE_TEST_SESSIONS,), len(spine)),
        )
    ):
        out = tmp_path / str(i)
        proc = run_train(
            "-m",
            f"experiment={pattern}",
            "demo=true",
            "debug=fast_dev_run",
            f"paths.output_dir={out}",
            f"paths.data_dir={data_dir}",
            *extra,
        )
        assert f"Launching {expected} jobs" in proc.stdout + proc.stderr
        (multirun,) = list((out / "default").iterdir())
        summary = json.loads((multirun / "summary.json").read_text())
        assert summary["missing"] == []
        ran += summary["experiments"]
    assert sorted(ran) == experiments


def test_demo_training_reaches_auroc_09_and_fills_the_run_directory(tmp_path):
    proc = run_train(
        "experiment=alarm_binary",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
    )
    run = single_run_dir(tmp_path, "alarm_binary")
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"report_label", "image_label", "external_site"}
    assert metrics["report_label"]["abnormal"]["auroc"]["value"] >= 0.9
    for name in (
        "splits.csv",
        "label_manifest.json",
        "config_resolved.yaml",
        ".hydra/config.yaml",
        "predictions_report_label.csv",
        "predictions_image_label.csv",
        "plots/roc_abnormal.png",
        "checkpoints/last.ckpt",
        "csv/version_0/metrics.csv",
    ):
        assert (run / name).exists(), name
    assert len(list((run / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    pred = pd.read_csv(run / "predictions_image_label.csv")
    assert list(pred.columns) == ["id", "patient_id", "abnormal_true", "abnormal_prob"]
    assert str(run) in proc.stdout + proc.stderr and "report_label" in proc.stdout + proc.stderr
    assert json.loads((run / "provenance.json").read_text())["command_line"]
    assert json.loads((run / "resources_used.json").read_text())["wall_seconds"]["fit"] > 0
    check_report_model_page(run)  # issue 22's done-when: the demo's report.html shows it all
    _readme_snippet_labels_three_reports(run, tmp_path)
    _export_gives_the_same_probabilities(run, tmp_path)


def _readme_snippet_labels_three_reports(run, tmp_path):
    """README's five-line Python API example, run as written from a folder whose outputs/ is this run's."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) == 5, snippet
    cwd = tmp_path / "user"
    cwd.mkdir()
    (cwd / "outputs").symlink_to(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", snippet], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "abnormal" in proc.stdout and len([ln for ln in proc.stdout.splitlines() if ln.strip()]) >= 4


def _export_gives_the_same_probabilities(run, tmp_path):
    """reportsup-export of the demo checkpoint, then from_pretrained of the folder: same probabilities."""
    from reportsup import ReportLabeller

    out = tmp_path / "exported"
    # The console script of the interpreter running the tests: CI does not put .venv/bin on PATH.
    export = Path(sys.executable).parent / "reportsup-export"
    subprocess.run([str(export), str(run), str(out)], check=True, stdin=subprocess.DEVNULL)
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in out.iterdir()}
    texts = [
        "No acute intracranial abnormality.",
        "Large enhancing mass in the left frontal lobe with surrounding oedema.",
        "Chronic small vessel ischaemic change.",
    ]
    direct = ReportLabeller.from_pretrained(run).predict(texts)
    shared = ReportLabeller.from_pretrained(out).predict(texts)
    np.testing.assert_allclose(direct["abnormal_prob"], shared["abnormal_prob"], rtol=0, atol=1e-6)


def test_resume_continues_the_epoch_count(tmp_path):
    common = (
        "experiment=alarm_binary",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
        "data.demo.n_reports=600",
        *FAST,
    )
    run_train(*common, "trainer.max_epochs=1", "test=false")
    run = single_run_dir(tmp_path, "alarm_binary")
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    proc = run_train(*common, "trainer.max_epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert "Restoring states from the checkpoint" in proc.stdout + proc.stderr
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["epoch"] == 0 and resumed["epoch"] == 2
    assert resumed["global_step"] == 3 * first["global_step"]
    assert single_run_dir(tmp_path, "alarm_binary") == run  # resumed inside the same run directory
    assert list(run.glob(".hydra_resumed_*")) and (run / ".hydra" / "config.yaml").exists()
    logged_epochs = pd.read_csv(run / "csv" / "version_1" / "metrics.csv")["epoch"].dropna().unique()
    assert set(logged_epochs) >= {1.0, 2.0} and 0.0 not in set(logged_epochs)
    # A test-only run of the best checkpoint scores its weights, the same as the training run's test.
    trained = json.loads((run / "metrics.json").read_text())
    kept = set(run.glob("metrics.*.json"))
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    run_train(*common, "train=false", f"ckpt_path={best}")
    (set_aside,) = set(run.glob("metrics.*.json")) - kept  # written in the same run directory ...
    assert json.loads(set_aside.read_text()) == trained  # ... keeping the training run's metrics
    assert json.loads((run / "metrics.json").read_text()) == trained
    proc = run_train(*common, "train=false", check=False)
    assert proc.returncode != 0 and "train=false tests a trained model" in proc.stderr


def test_ten_repeat_multirun_leaves_ten_runs_and_a_summary(tmp_path):
    run_train(
        "experiment=alarm_binary_10x",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
        "data.demo.n_reports=600",
        "trainer.max_epochs=1",
        *FAST,
    )
    (multirun,) = list((tmp_path / "alarm_binary_10x").iterdir())
    runs = sorted(p for p in multirun.iterdir() if p.is_dir())
    assert len(runs) == 10 and all((r / "metrics.json").exists() for r in runs)
    seeds = {json.loads((r / "data_summary.json").read_text())["sizes"]["train"] for r in runs}
    assert len(seeds) > 1  # different seeds, different patient-level splits
    summary = json.loads((multirun / "summary.json").read_text())
    auroc = summary["experiments"]["alarm_binary_10x"]["metrics"]["report_label"]["abnormal"]["auroc"]
    assert auroc["n_runs"] == 10 and auroc["ci_low"] < auroc["mean"] < auroc["ci_high"]
    assert "report_label" in (multirun / "summary.md").read_text()


def test_users_own_csv_with_any_label_names(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(240):
        has_x, has_y = rng.random() < 0.4, rng.random() < 0.3
        text = " ".join(
            [
                "finding xylo present." if has_x else "no xylo.",
                "yam seen." if has_y else "yam absent.",
                "routine study.",
            ]
        )
        rows.append(
            {
                "report_id": f"u{i}",
                "patient_id": f"pt{i // 2}",
                "text": text,
                "Finding X": int(has_x),
                "finding_y": "" if i % 7 == 0 else int(has_y),
            }
        )
    csv = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    run_train(
        f"data.path={csv}",
        "data.labels=[Finding X,finding_y]",
        "encoder=tiny",
        "model.optimizer.lr=1e-3",
        "trainer.max_epochs=2",
        f"paths.output_dir={tmp_path}",
        "name=mine",
        *FAST,
    )
    run = single_run_dir(tmp_path, "mine")
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["report_label"]) == {"Finding X", "finding_y"}
    pred = pd.read_csv(run / "predictions_report_label.csv")
    assert {"Finding X_true", "Finding X_prob", "finding_y_true", "finding_y_prob"} <= set(pred.columns)


def test_wandb_logger_runs_offline_without_credentials(tmp_path):
    # Not fast_dev_run: Lightning replaces every logger by a dummy there.
    proc = run_train(
        "experiment=alarm_binary",
        "demo=true",
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "data.demo.n_reports=600",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
        *FAST,
        env={"WANDB_API_KEY": "", "NETRC": str(tmp_path / "none"), "HOME": str(tmp_path)},
    )
    run = single_run_dir(tmp_path, "alarm_binary")
    (offline,) = list((run / "wandb").glob("offline-run-*"))
    assert "wandb sync" in proc.stdout + proc.stderr
    media = offline / "files" / "media"
    assert {p.name.split("_")[0] for p in (media / "table" / "predictions").glob("*.table.json")} >= {
        "image",
        "external",
    }
    assert list((media / "images" / "roc").glob("abnormal_*.png"))
    record = next(offline.glob("*.wandb")).read_bytes()
    for needle in (
        b"test/report_label/abnormal/auroc",
        b"val/loss",
        b"unknown_policy",
        b"alarm_binary",
        b"seed_0",
    ):
        assert needle in record, needle  # metrics, config and group are in the offline run
    assert (run / "csv").exists()  # CSV always


def test_ddp_gloo_two_processes_log_once(tmp_path):
    run_train(
        "experiment=alarm_binary",
        "demo=true",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
        "data.demo.n_reports=600",
        *FAST,
    )
    run = single_run_dir(tmp_path, "alarm_binary")
    assert (run / "train_ddp_process_1.log").exists()  # the second rank ran
    metrics = json.loads((run / "metrics.json").read_text())
    split_sizes = json.loads((run / "data_summary.json").read_text())["sizes"]
    # Predictions of both ranks gathered, DistributedSampler padding removed: every test report exactly once.
    assert metrics["report_label"]["abnormal"]["n"]["value"] == split_sizes["report_label"]
    assert len(list(run.glob("csv/version_*"))) == 1


def test_missing_data_and_offline_encoder_give_clear_errors(tmp_path, synthetic_dir):
    proc = run_train("experiment=alarm_binary", f"paths.output_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "data.path" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_train(
        "experiment=alarm_binary",
        f"data.path={synthetic_dir / 'reports.csv'}",
        f"paths.output_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0 and "encoder.path" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_train(
        f"data.path={synthetic_dir / 'reports.csv'}",
        "encoder=tiny",
        f"paths.output_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0 and "data.labels" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_train(
        "experiment=alarm_binary",
        "sweep=alarm_lr",
        "train=false",
        f"paths.output_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0 and "drop train=false" in proc.stderr and "Traceback" not in proc.stderr


def test_crossdl_discretizer_demo_reaches_f1_09_and_its_checkpoint_labels_reports(tmp_path):
    import subprocess
    import sys

    run_train(
        "experiment=crossdl_discretizer",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
    )
    run = single_run_dir(tmp_path, "crossdl_discretizer")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sentence"]["micro"]["f1"]["value"] >= 0.9
    for t in ("intraparenchymal_hyperdensity", "extraparenchymal_hypodensity"):
        assert metrics["report"][f"type:{t}"]["auroc"]["value"] >= 0.9
    assert (
        "region:frontal_lobe" in metrics["report"]
        and "scan:extraparenchymal_hyperdensity" in metrics["report"]
    )
    for name in (
        "plots/roc_report_types.png",
        "plots/roc_report_regions.png",
        "predictions_sentence.csv",
        "predictions_report.csv",
        "reports_without_findings.csv",
        "splits.csv",
    ):
        assert (run / name).exists(), name
    (ckpt,) = list((run / "checkpoints").glob("best-*.ckpt"))
    from datamodules.synthetic.datasets.ct_reports import generate_ct_tables

    reports = generate_ct_tables(400, seed=11)["ct_reports"]
    reports[["report_id", "patient_id", "scan_id", "text"]].to_csv(tmp_path / "new.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reportsup.cli.discretize",
            str(ckpt),
            str(tmp_path / "new.csv"),
            str(tmp_path / "labels.parquet"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "400/400" in proc.stderr and "reports/s" in proc.stderr  # progress bar and throughput
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    ok = labels["status"] == "ok"
    gold = reports.loc[ok.to_numpy(), [c for c in labels.columns if "__" in c and not c.startswith("scan__")]]
    agreement = (labels.loc[ok, gold.columns].to_numpy() == gold.to_numpy()).mean()
    assert agreement > 0.99  # cell-wise agreement of pseudo labels with the lesion specification
    # the same checkpoint through the resumable bulk labeller gives the same matrices
    from reportsup.contracts.label_folder import read_label_folder
    from reportsup.labelling import label_archive

    label_archive(ckpt, tmp_path / "new.csv", tmp_path / "bulk", chunk_size=150, progress=False)
    bulk, _ = read_label_folder(tmp_path / "bulk")
    assert (
        len(bulk) == 400
        and json.loads((tmp_path / "bulk" / "manifest.json").read_text())["label_manifest"]["task"]
        == "crossdl_discretizer"
    )
    pd.testing.assert_frame_equal(bulk.reset_index(drop=True)[labels.columns], labels, check_dtype=False)
    # Scored on a new annotated set without retraining (the paper's prospective set, Fig. S2H): a
    # test-only run of the checkpoint with the set as a hold-out. Its patients are new ones, so the
    # internal split and its scores stay those of the training run.
    prospective = reports.assign(patient_id="PROSPECTIVE-" + reports["patient_id"].astype(str))
    prospective.to_csv(tmp_path / "prospective.csv", index=False)
    run_train(
        "experiment=crossdl_discretizer",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
        "train=false",
        f"ckpt_path={ckpt}",
        f"+data.holdouts.prospective={tmp_path / 'prospective.csv'}",
    )
    scored = json.loads((run / "metrics.json").read_text())
    assert scored["sentence"] == metrics["sentence"] and scored["report"] == metrics["report"]
    for t in ("intraparenchymal_hyperdensity", "extraparenchymal_hypodensity"):
        assert scored["prospective"][f"type:{t}"]["auroc"]["value"] >= 0.9
    assert (run / "predictions_prospective.csv").exists()
    assert (run / "plots" / "roc_report_types_prospective.png").exists()


def test_crossdl_trainsize_multirun_summarises_each_size(tmp_path):
    run_train(
        "experiment=crossdl_discretizer_trainsize",
        "demo=true",
        "debug=fast_dev_run",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
        *FAST,
    )
    (multirun,) = list((tmp_path / "crossdl_discretizer_trainsize").iterdir())
    summary = json.loads((multirun / "summary.json").read_text())
    sizes = {name.split("=")[-1].rstrip("]") for name in summary["experiments"]}
    assert sizes == {"100", "200", "500", "1000", "1500", "3000"}
    sizes_used = sorted(
        json.loads((r / "data_summary.json").read_text())["sizes"]["train"]
        for r in multirun.iterdir()
        if r.is_dir()
    )
    assert sizes_used == [100, 200, 500, 1000, 1500, 3000]

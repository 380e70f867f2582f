"""The run-directory contract: names, atomic writers and readers round-trip, run discovery."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from reportsup.contracts import run_dir as rd

ROOT = Path(__file__).resolve().parents[3]


def _fake_run(folder: Path, metrics: dict | None = None, name: str = "alarm_binary", seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    (folder / rd.CONFIG_DIR).mkdir()
    (folder / rd.CONFIG_DIR / rd.HYDRA_CONFIG).write_text(yaml.safe_dump({"name": name, "seed": seed}))
    (folder / rd.CONFIG_DIR / rd.HYDRA_OVERRIDES).write_text(yaml.safe_dump([f"seed={seed}", "demo=true"]))
    if metrics is not None:
        rd.write_json(folder / rd.METRICS_JSON, metrics)
    return folder


def test_names_follow_the_design():
    assert rd.predictions_csv("report_label") == "predictions_report_label.csv"
    assert rd.checkpoints_dir("/r") == Path("/r/checkpoints")
    assert rd.sweep_trial_dir(7) == "trial_0007"
    assert rd.parameter_digest_json(1) == "parameter_digest_rank1.json"
    assert rd.run_dir_of_checkpoint("/x/run/checkpoints/last.ckpt") == Path("/x/run")
    assert rd.run_dir_of_checkpoint("/x/elsewhere/model.ckpt") == Path("/x/elsewhere")


@pytest.mark.parametrize("group", ["default", "damil", "spine"])
def test_checkpoint_callbacks_write_where_the_contract_reads(group):
    """YAML cannot import the names: the callback configs must agree with them."""
    cfg = OmegaConf.load(ROOT / "configs" / "callbacks" / f"{group}.yaml")
    ckpt = OmegaConf.to_container(cfg.model_checkpoint, resolve=False)  # ${paths.run_dir} stays as typed
    assert ckpt["dirpath"] == "${paths.run_dir}/" + rd.CHECKPOINTS
    assert ckpt["filename"].startswith(rd.BEST_CHECKPOINT_PREFIX)
    assert ckpt["save_last"] and rd.LAST_CHECKPOINT == "last.ckpt"  # Lightning's CHECKPOINT_NAME_LAST


def test_the_demo_encoder_keeps_its_tokenizer_where_the_contract_says():
    save_dir = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "encoder" / "tiny.yaml"))["save_dir"]
    assert save_dir == "${paths.run_dir}/" + rd.TOKENIZER_DIR


def test_write_json_round_trips_and_leaves_no_temporary_file(tmp_path):
    data = {"report_label": {"abnormal": {"auroc": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95}}}}
    path = rd.write_json(tmp_path / "a" / rd.METRICS_JSON, data)
    assert rd.read_json(path) == data
    assert rd.read_metrics(tmp_path / "a") == data
    assert sorted(os.listdir(tmp_path / "a")) == [rd.METRICS_JSON]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = rd.write_json(tmp_path / "m.json", {"old": 1})
    with pytest.raises(TypeError):
        rd.write_json(path, {"new": object()})  # not JSON-serialisable: fails before the rename
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_corrupt_and_missing_metrics_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        rd.read_metrics(tmp_path)
    (tmp_path / rd.METRICS_JSON).write_text('{"report_label": ')
    with pytest.raises(ValueError, match=r"metrics\.json: not valid JSON"):
        rd.read_metrics(tmp_path)


def test_predictions_round_trip_with_string_ids(tmp_path):
    table = pd.DataFrame(
        {
            "id": ["007", "010"],
            "patient_id": ["p01", "0002"],
            "abnormal_true": pd.array([1, pd.NA], dtype="Int64"),
            "abnormal_prob": [0.9, 0.2],
        }
    )
    table.to_csv(tmp_path / rd.predictions_csv("external"), index=False)
    back = rd.read_predictions(tmp_path, "external")
    assert back["id"].tolist() == ["007", "010"] and back["patient_id"].tolist() == ["p01", "0002"]
    assert back["abnormal_prob"].tolist() == [0.9, 0.2]
    assert rd.prediction_sets(tmp_path) == ["external"]
    with pytest.raises(FileNotFoundError, match=r"has test sets \['external'\]"):
        rd.read_predictions(tmp_path, "report_label")


def test_config_and_overrides_prefer_hydras_record(tmp_path):
    run = _fake_run(tmp_path / "run", seed=3)
    (run / rd.CONFIG_RESOLVED).write_text(yaml.safe_dump({"name": "other", "seed": 9}))
    assert rd.read_config(run)["seed"] == 3
    assert rd.read_resolved_config(run)["seed"] == 9
    assert rd.read_overrides(run) == ["seed=3", "demo=true"]
    assert rd.read_overrides(tmp_path) == [] and rd.read_config(tmp_path) == {}
    with pytest.raises(FileNotFoundError, match="config_resolved.yaml not found"):
        rd.read_resolved_config(tmp_path)


def test_best_checkpoint_is_the_newest_best_else_last(tmp_path):
    run = tmp_path / "multirun" / "0"  # a job folder of a multirun
    run.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rd.best_checkpoint(run)
    ckpts = rd.checkpoints_dir(run)
    ckpts.mkdir()
    (ckpts / rd.LAST_CHECKPOINT).write_bytes(b"")
    assert rd.best_checkpoint(run) == ckpts / "last.ckpt" == rd.last_checkpoint(run)
    old, new = ckpts / "best-epoch09.ckpt", ckpts / "best-epoch02.ckpt"
    old.write_bytes(b"")
    new.write_bytes(b"")
    os.utime(old, (time.time() - 60, time.time() - 60))  # a resumed run's newer best has a lower epoch
    assert rd.best_checkpoints(run) == [old, new]
    assert rd.best_checkpoint(run) == new
    assert rd.best_checkpoints_below(tmp_path) == [new, old]  # by path, at any depth; never last.ckpt


def test_find_runs_orders_jobs_numerically_and_filters_unfinished(tmp_path):
    multirun = tmp_path / "multirun"
    for job in (10, 2, 0):
        _fake_run(multirun / str(job), metrics={"t": {}})
    _fake_run(multirun / "3")  # failed: no metrics.json
    (multirun / "notes").mkdir()  # not a run
    assert [p.name for p in rd.find_runs(multirun)] == ["0", "2", "10"]
    assert [p.name for p in rd.find_runs(multirun, finished=False)] == ["0", "2", "3", "10"]
    assert rd.find_runs(multirun / "2") == [multirun / "2"]
    assert rd.find_runs(tmp_path) == []  # one level only by default
    assert [p.name for p in rd.find_runs(tmp_path, recursive=True)] == ["0", "2", "10"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        rd.find_runs(tmp_path / "missing")

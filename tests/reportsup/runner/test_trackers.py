"""Issue 22 item 4: TensorBoard and MLflow beside CSV and W&B, read back offline.

One ALARM demo run with ``logger=[tensorboard,mlflow,wandb]`` (a list of logger configs, which also checks
that they compose with each other and with the CSV logger) is read back through TensorBoard's
EventAccumulator, the MLflow file store's client and W&B's offline run record: the test metrics are the
values of ``metrics.json`` under the same names, the resolved config is there (``model.optimizer.lr``), the
group and tags are there, and MLflow and W&B hold the best checkpoint, ``metrics.json`` and the exported
model as artifacts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lightning_modules.common.loggers import flatten, tracker_key, tracker_params
from tests.conftest import run_train, single_run_dir

FAST = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "data.demo.n_reports=600",
    "callbacks.evaluator.n_bootstrap=50",
)


def metrics_json_flat(run: Path) -> dict[str, float]:
    """``metrics.json`` under the names every logger receives (``test/<set>/<label>/<metric>``)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        tracker_key(f"test/{test_set}/{label}/{metric}"): fields["value"]
        for test_set, per_label in metrics.items()
        for label, per_metric in per_label.items()
        for metric, fields in per_metric.items()
    }


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, output folder) of one short ALARM demo logged to TensorBoard, MLflow and W&B (offline:
    no credentials in this environment)."""
    out = tmp_path_factory.mktemp("trackers")
    run_train(
        "experiment=alarm_binary",
        "demo=true",
        "logger=[tensorboard,mlflow,wandb]",
        *FAST,
        f"paths.output_dir={out}",
        f"paths.data_dir={out / 'd'}",
        env={"WANDB_API_KEY": "", "NETRC": str(out / "none"), "HOME": str(out), "WANDB_MODE": "offline"},
    )
    return single_run_dir(out, "alarm_binary"), out


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_metrics_config_and_group(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked_run
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    expected = metrics_json_flat(run)
    assert expected and set(expected) <= set(events.Tags()["scalars"])
    for name, value in expected.items():
        (logged,) = events.Scalars(name)
        assert same(logged.value, value), name
    assert {"val/loss", "val/auroc"} <= set(events.Tags()["scalars"])  # training curves too
    hparams = yaml.safe_load((run / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["model.optimizer.lr"] == OmegaConf.load(run / "config_resolved.yaml").model.optimizer.lr
    assert hparams["run.group"] == "alarm_binary" and hparams["run.tags"] == "alarm, binary, seed_0"
    # the HParams tab: the run's config against its test metrics
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(
        events.PluginTagToContent("hparams")
    )
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "optimizer:" in config_text and "alarm_binary" in config_text  # the resolved config as text


@pytest.mark.slow
def test_mlflow_file_store_holds_the_metrics_params_tags_and_artifacts(tracked_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    run, out = tracked_run
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store
    client = MlflowClient((out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("alarm_binary")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "alarm_binary_seed0" and mlrun.info.status == "FINISHED"

    expected = metrics_json_flat(run)
    assert expected and set(expected) <= set(mlrun.data.metrics)
    for name, value in expected.items():
        assert same(mlrun.data.metrics[name], value), name

    params = mlrun.data.params
    config = OmegaConf.load(run / "config_resolved.yaml")
    assert float(params["model.optimizer.lr"]) == config.model.optimizer.lr
    assert (
        params["name"] == "alarm_binary" and params["data_summary.labels"] == "['abnormal']"
    )  # + data summary
    tags = mlrun.data.tags
    assert tags["group"] == "alarm_binary" and tags["job_type"] == "train"
    assert tags["tags"] == "alarm,binary,seed_0" and tags["seed_0"] == "true"

    def artifacts(path: str | None = None) -> list[str]:
        found = []
        for a in client.list_artifacts(mlrun.info.run_id, path):
            found += artifacts(a.path) if a.is_dir else [a.path]
        return found

    logged = artifacts()
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert f"checkpoints/{best.name}" in logged and "metrics.json" in logged
    assert {
        "exported_model/model.safetensors",
        "exported_model/config.json",
        "exported_model/README.md",
    } <= set(logged)
    # the artifact is the run's metrics.json and the exported model loads offline
    local = Path(client.download_artifacts(mlrun.info.run_id, "exported_model", str(out / "pulled")))
    assert json.loads(
        Path(client.download_artifacts(mlrun.info.run_id, "metrics.json", str(out / "m"))).read_text()
    ) == (json.loads((run / "metrics.json").read_text()))
    from reportsup.api.reports import ReportLabeller

    labeller = ReportLabeller.from_pretrained(local)
    assert labeller.labels == ["abnormal"]


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metric_names_and_a_model_artifact(tracked_run):
    run, _ = tracked_run
    (offline,) = (run / "wandb").glob("offline-run-*")
    record = next(offline.glob("*.wandb")).read_bytes()
    for name in metrics_json_flat(run):
        assert name.encode() in record, name  # the same metric names as TensorBoard and MLflow
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    run_id = offline.name.rsplit("-", 1)[-1]
    for needle in (
        f"model-{run_id}",
        f"checkpoints/{best.name}",
        "metrics.json",
        "exported_model/model.safetensors",
    ):
        assert needle.encode() in record, needle  # the model artifact's manifest


def test_tracker_params_flatten_the_config_to_command_line_names():
    params = tracker_params(
        {
            "config": {"model": {"optimizer": {"lr": 1e-3}}, "data": {"labels": ["a"]}, "x": {}},
            "data": {"n": 3},
        }
    )
    assert params == {"model.optimizer.lr": 1e-3, "data.labels": ["a"], "x": "{}", "data_summary.n": 3}
    assert flatten({"a": {"b": 1}}) == {"a.b": 1}


def test_tracker_key_keeps_names_mlflow_accepts_and_maps_the_others():
    assert tracker_key("test/report_label/abnormal/auroc") == "test/report_label/abnormal/auroc"
    assert (
        tracker_key("test/report_label@val_threshold/Lésion/ppv")
        == "test/report_label_val_threshold/L_sion/ppv"
    )


def test_mlflow_logger_uses_a_local_file_store_by_default_and_a_given_tracking_uri(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from reportsup.runner.setup import PROJECT_ROOT, register_all

    register_all()
    with initialize_config_dir(str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train", ["experiment=alarm_binary", "logger=[csv,mlflow]", f"paths.output_dir={tmp_path}"]
        )
        given = compose(
            "train",
            ["experiment=alarm_binary", "logger=mlflow", "logger.mlflow.tracking_uri=http://mlflow.lan:5000"],
        )
    assert set(cfg.logger) == {"csv", "mlflow"}
    assert cfg.logger.mlflow.tracking_uri == f"file:{tmp_path}/mlruns"
    assert cfg.logger.mlflow.experiment_name == "alarm_binary" and list(cfg.logger.mlflow.tags) == [
        "alarm",
        "binary",
    ]
    assert given.logger.mlflow.tracking_uri == "http://mlflow.lan:5000"


def test_an_unwritable_mlflow_file_store_is_named_with_the_fix(tmp_path):
    from lightning_modules.common.loggers import TrackerUnavailableError, mlflow_logger

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(TrackerUnavailableError, match=r"cannot create the MLflow file store .*a_file/mlruns"):
        mlflow_logger("alarm_binary", f"file:{blocker}/mlruns")


@pytest.mark.slow
def test_an_unreachable_mlflow_server_stops_the_run_before_training_with_one_message(tmp_path):
    # port 9 (discard) on the loopback: refused at once, no network needed
    proc = run_train(
        "experiment=alarm_binary",
        "demo=true",
        "logger=mlflow",
        "logger.mlflow.tracking_uri=http://127.0.0.1:9",
        *FAST,
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
        check=False,
    )
    assert proc.returncode != 0
    (message,) = [
        line for line in proc.stderr.splitlines() if line.startswith("reportsup: TrackerUnavailableError")
    ]
    assert "http://127.0.0.1:9 does not answer" in message and "logger.mlflow.tracking_uri" in message
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "alarm_binary").glob("*/checkpoints/*.ckpt"))  # stopped before training


def test_a_checkpoint_that_cannot_be_exported_is_logged_without_the_export_and_named(tmp_path, monkeypatch):
    import torch
    from mlflow.tracking import MlflowClient

    from lightning_modules.common.loggers import mlflow_logger
    from reportsup.runner.trackers import log_run_artifacts

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best-epoch03.ckpt"
    torch.save({"state_dict": {}}, ckpt)  # no label manifest: nothing reportsup-export can load
    (run / "metrics.json").write_text(json.dumps({"t": {"l": {"auroc": {"value": 0.5}}}}))
    store = tmp_path / "mlruns"
    logger = mlflow_logger("exp", f"file:{store}", run_name="r", tags=["x"], seed=1)
    with pytest.warns(
        UserWarning, match=r"best-epoch03.ckpt was not exported .*reportsup-export .*best-epoch03"
    ):
        logged = log_run_artifacts([logger], run, ckpt)
    assert logged == ["checkpoints/best-epoch03.ckpt", "metrics.json"]
    client = MlflowClient(store.resolve().as_uri())
    top = {a.path for a in client.list_artifacts(logger.run_id)}
    assert top == {"checkpoints", "metrics.json"}
    assert log_run_artifacts([], run, ckpt) == []  # no tracker that keeps artifacts: nothing to do


def test_a_resumed_run_continues_its_mlflow_run_and_names_changed_settings(tmp_path):
    """A run resumed in its own folder (ckpt_path=..., a requeued SLURM job) logs into the same MLflow
    run: one run in the store, the metric history continued, changed settings named, not an error."""
    from mlflow.tracking import MlflowClient

    from lightning_modules.common.loggers import mlflow_logger

    store, id_file = f"file:{tmp_path / 'mlruns'}", tmp_path / "run" / "mlflow_run_id.txt"
    first = mlflow_logger("exp", store, run_name="exp_seed0", seed=0, run_id_file=str(id_file))
    first.log_hyperparams({"model": {"lr": 0.1}, "ckpt_path": None})
    first.log_metrics({"val/loss": 1.0}, step=0)
    first.finalize("success")
    assert id_file.read_text().strip() == first.run_id
    again = mlflow_logger("exp", store, run_name="exp_seed0", seed=0, run_id_file=str(id_file))
    with pytest.warns(UserWarning, match=r"resumed with 1 changed setting\(s\) \(ckpt_path\)"):
        again.log_hyperparams({"model": {"lr": 0.1}, "ckpt_path": "last.ckpt", "new_key": 3})
    again.log_metrics({"val/loss": 0.5}, step=1)
    again.finalize("success")
    assert again.run_id == first.run_id
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "exp"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val/loss")] == [1.0, 0.5]
    assert run.data.params["ckpt_path"] == "None" and run.data.params["new_key"] == "3"

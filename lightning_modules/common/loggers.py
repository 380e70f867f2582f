"""Experiment loggers. CSV always; W&B (``logger=wandb``, offline when there are no credentials), TensorBoard
(``logger=tensorboard``) and MLflow (``logger=mlflow``, a local file store unless a tracking URI is given) on
request, each with the same metric names, the resolved config, the group and the tags (issue 22 item 4).

Lightning loggers write from rank 0 only, so a DDP job logs once.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn


def wandb_credentials_available() -> bool:
    """An API key in the environment or in ``~/.netrc`` (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return (
            netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
            is not None
        )
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Log offline: asked for (``WANDB_MODE=offline``) or no credentials to go online with."""
    return os.environ.get("WANDB_MODE") == "offline" or not wandb_credentials_available()


def wandb_logger(
    project: str,
    save_dir: str,
    group: str | None = None,
    tags: Sequence[str] = (),
    name: str | None = None,
    offline: bool | None = None,
    seed: int | None = None,
    job_type: str | None = None,
    log_artifacts: bool = True,
    **kwargs,
) -> WandbLogger:
    """A :class:`WandbLogger` grouped by experiment name (``group``), typed by ``job_type`` (train, eval,
    sweep) and tagged with the experiment's tags plus ``seed_<split seed>``; offline unless credentials
    exist (or ``offline`` is set). ``log_artifacts`` (``+logger.wandb.log_artifacts=false`` to skip): after
    testing, a ``model`` artifact with the best checkpoint, ``metrics.json`` and the exported model
    (:func:`reportsup.runner.trackers.log_run_artifacts`)."""
    tags = [*tags, *([f"seed_{seed}"] if seed is not None else [])]
    if offline is None:
        offline = wandb_offline()
    if offline:
        rank_zero_info(
            "[reportsup] W&B: no credentials found, logging offline. Upload later with "
            f"`wandb sync {Path(save_dir) / 'wandb'}/offline-run-*`."
        )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        save_dir=save_dir,
        group=group,
        tags=list(dict.fromkeys(tags)),
        name=name,
        offline=offline,
        job_type=job_type or "train",
        **kwargs,
    )
    logger.log_run_artifacts = log_artifacts
    return logger


# --- TensorBoard and MLflow (issue 22 item 4: any tracker, offline) ----------------------------------------

#: characters Lightning's MLFlowLogger keeps in a metric name (it silently drops the others); the trackers
#: below replace the others by "_" instead, so a name maps the same way in every tracker and in the docs
TRACKER_KEY_UNSAFE = re.compile(r"[^a-zA-Z0-9_/. -]")
#: train.py logs ``{"config": <resolved config>, "data": <DataModule summary>}``; the trackers flatten the
#: config to the names typed on the command line (``model.optimizer.lr``) and put the summary beside it
HPARAM_PREFIXES = {"config": "", "data": "data_summary."}
#: MLflow's limit on a parameter value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in 3.x)
MLFLOW_PARAM_MAX = 6000
#: MLflow accepts at most 100 parameters per log_batch call
MLFLOW_BATCH = 100


def tracker_key(name: str) -> str:
    """``name`` as TensorBoard and MLflow store it: characters MLflow rejects (``@`` of
    ``<test set>@val_threshold``, non-ASCII label names) become ``_``."""
    return TRACKER_KEY_UNSAFE.sub("_", name)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys; lists stay one value (``data.labels: [abnormal]``)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out if value else {prefix.rstrip("."): "{}"}
    return {prefix.rstrip("."): value}


def tracker_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """train.py's hyper-parameters as one flat table: the config under its own dotted names
    (``model.optimizer.lr``), the data summary under ``data_summary.``, anything else under its key."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        prefix = HPARAM_PREFIXES.get(key, f"{key}.")
        flat.update(
            flatten(value, prefix) if isinstance(value, Mapping) else {prefix.rstrip(".") or key: value}
        )
    return flat


def run_tags(tags: Sequence[str], seed: int | None) -> list[str]:
    """The experiment's tags plus ``seed_<n>``, in W&B's order, without repeats."""
    return list(dict.fromkeys([*tags, *([f"seed_{seed}"] if seed is not None else [])]))


class TrackerTensorBoardLogger(TensorBoardLogger):
    """TensorBoard with the flat config as hparams (HParams tab), the resolved config as text (Text tab) and
    the W&B group, job type and tags as hparams and text: TensorBoard has no tags or groups of its own,
    and no artifacts (checkpoints and the exported model stay in the run folder)."""

    def __init__(self, *args: Any, run_info: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_info = dict(run_info or {})
        self._session_params: dict[str, Any] = {}
        self._session_written = False

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        params = dict(params) if isinstance(params, Mapping) else vars(params)
        flat = {f"run.{k}": ", ".join(v) if isinstance(v, list) else v for k, v in self.run_info.items()}
        flat |= {tracker_key(k): v for k, v in tracker_params(params).items()}
        super().log_hyperparams(flat, metrics=metrics, step=step)
        # the HParams tab's types: a list or None becomes its text
        self._session_params = {
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()
        }
        if "config" in params:
            text = yaml.safe_dump(params["config"], sort_keys=False)
            # four-space indent: TensorBoard renders text as Markdown, this keeps the YAML verbatim
            self.experiment.add_text("config", "    " + text.replace("\n", "\n    "), global_step=0)
        if self.run_info:
            self.experiment.add_text("run", yaml.safe_dump(self.run_info, sort_keys=False), global_step=0)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = {tracker_key(k): v for k, v in metrics.items()}
        super().log_metrics(metrics, step=step)
        test = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
        if test and self._session_params and not self._session_written:
            self._write_session(test)

    def _write_session(self, metrics: Mapping[str, float]) -> None:
        """The HParams tab's record of this run: its config against its test metrics, so runs can be
        compared by config there (TensorBoard shows a run in that tab only with metrics)."""
        from torch.utils.tensorboard.summary import hparams

        writer = self.experiment._get_file_writer()
        for summary in hparams(self._session_params, dict(metrics)):
            writer.add_summary(summary)
        self._session_written = True


def tensorboard_logger(
    save_dir: str,
    name: str = "tensorboard",
    group: str | None = None,
    tags: Sequence[str] = (),
    seed: int | None = None,
    job_type: str | None = None,
    train: bool = True,
    **kwargs: Any,
) -> TrackerTensorBoardLogger:
    """Event files under ``<save_dir>/<name>/`` (``tensorboard --logdir outputs/`` shows every run);
    ``job_type`` null: train, or eval for a test-only run (``train=false``)."""
    info = {
        "group": group,
        "job_type": job_type or ("train" if train else "eval"),
        "tags": run_tags(tags, seed),
    }
    # version "": one folder per run directory (the run directory is already unique); no hp_metric placeholder
    kwargs.setdefault("version", "")
    kwargs.setdefault("default_hp_metric", False)
    return TrackerTensorBoardLogger(save_dir=save_dir, name=name, run_info=info, **kwargs)


class TrackerMLFlowLogger(MLFlowLogger):
    """MLflow with the flat config as parameters (``model.optimizer.lr``), values kept up to MLflow's
    6000 characters (Lightning cuts them at 250), and metric names mapped by :func:`tracker_key`."""

    #: where the run's MLflow run id is kept (``<run dir>/mlflow_run_id.txt``), so that a resumed run
    #: (``ckpt_path=...`` or a requeued SLURM job, same run folder) continues the same MLflow run
    run_id_file: Path | None = None

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        from mlflow.entities import Param

        params = dict(params) if isinstance(params, Mapping) else vars(params)
        values = {tracker_key(k): str(v)[:MLFLOW_PARAM_MAX] for k, v in tracker_params(params).items()}
        # MLflow parameters cannot change: a resumed run logs only the new ones and names the changed
        earlier = self.experiment.get_run(self.run_id).data.params
        changed = sorted(k for k, v in values.items() if k in earlier and earlier[k] != v)
        if changed:
            rank_zero_warn(
                f"[reportsup] MLflow run {self.run_id} resumed with {len(changed)} changed setting(s) "
                f"({', '.join(changed[:8])}); MLflow keeps the first values (config_resolved.yaml of the "
                "run folder has the new ones)."
            )
        batch = [Param(key=k, value=v) for k, v in values.items() if k not in earlier]
        for i in range(0, len(batch), MLFLOW_BATCH):
            self.experiment.log_batch(run_id=self.run_id, params=batch[i : i + MLFLOW_BATCH])
        if self.run_id_file is not None and not self.run_id_file.exists():
            self.run_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.run_id_file.write_text(f"{self.run_id}\n")

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({tracker_key(k): v for k, v in metrics.items()}, step=step)


class TrackerUnavailableError(FileNotFoundError):
    """The tracker's store cannot be reached or written. A FileNotFoundError so that train.py reports it as
    one line naming the store and the fix (its user errors), like a missing data file."""


#: seconds to wait for an MLflow server before the run stops (MLflow's own default is 120 s x 7 retries)
MLFLOW_CONNECT_TIMEOUT = 10


def check_mlflow_server(tracking_uri: str, timeout: int = MLFLOW_CONNECT_TIMEOUT) -> None:
    """Stop before training when the MLflow server at ``tracking_uri`` does not answer: found after
    training, a run's metrics would be lost; MLflow itself retries for minutes and then fails deep in
    Lightning's logger."""
    from mlflow.tracking import MlflowClient

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)})
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure of the first call means the server is unusable
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise TrackerUnavailableError(
            f"logger=mlflow: the MLflow tracking server {tracking_uri} does not answer ({reason}). Start it or "
            "correct logger.mlflow.tracking_uri=...; without a server, drop the override to log to the local "
            "file store (<output_dir>/mlruns) and copy it later."
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mlflow_logger(
    experiment_name: str,
    tracking_uri: str,
    run_name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    seed: int | None = None,
    job_type: str | None = None,
    train: bool = True,
    log_artifacts: bool = True,
    run_id_file: str | None = None,
    **kwargs: Any,
) -> TrackerMLFlowLogger:
    """An MLflow run in experiment ``experiment_name`` named ``run_name``, tagged ``group``, ``job_type``,
    ``tags`` (comma-separated) and one ``<tag>: "true"`` per tag (``tags.seed_0 = 'true'`` in a search).

    ``tracking_uri``: ``file:<folder>`` (the default, ``<output_dir>/mlruns``: no server, readable with
    ``mlflow ui --backend-store-uri``), ``sqlite:///mlflow.db`` or a server's ``http(s)://`` address.
    ``log_artifacts``: after testing, :func:`reportsup.runner.trackers.log_run_artifacts` logs the best
    checkpoint, ``metrics.json`` and the exported model to the run.
    ``run_id_file``: where the run id is kept; when it exists (a resumed run in the same folder) the
    logger continues that MLflow run instead of starting a new one."""
    if tracking_uri.startswith("file:") or ":" not in tracking_uri:
        # MLflow 3 keeps the file store but refuses it unless asked; a local folder is this logger's default
        # because it needs no server and no database (issue 22: hospitals without a cloud tracker)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        folder = Path(tracking_uri.removeprefix("file://").removeprefix("file:")).resolve()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackerUnavailableError(
                f"logger=mlflow: cannot create the MLflow file store {folder} ({err.strerror}). Give a folder you "
                "can write, e.g. logger.mlflow.tracking_uri=file:/path/to/mlruns, or a server's address."
            ) from None
        tracking_uri = folder.as_uri()  # absolute: the store is the same whatever the working directory
    elif tracking_uri.startswith(("http://", "https://")):
        check_mlflow_server(tracking_uri)
    all_tags = run_tags(tags, seed)
    mlflow_tags = {t: "true" for t in all_tags} | {
        "group": group or "",
        "job_type": job_type or ("train" if train else "eval"),
        "tags": ",".join(all_tags),
    }
    rank_zero_info(f"[reportsup] MLflow: logging to {tracking_uri} (experiment {experiment_name!r}).")
    id_file = Path(run_id_file) if run_id_file else None
    if id_file is not None and id_file.is_file():
        kwargs["run_id"] = id_file.read_text().strip()
        rank_zero_info(f"[reportsup] MLflow: resuming run {kwargs['run_id']} ({id_file}).")
    logger = TrackerMLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=tracking_uri,
        tags=mlflow_tags,
        **kwargs,
    )
    logger.log_run_artifacts = log_artifacts
    logger.run_id_file = id_file
    return logger

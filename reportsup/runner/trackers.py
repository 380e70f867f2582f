"""Artifacts of a finished run in the trackers that keep them (issue 22 item 4).

After testing, ``train.py`` calls :func:`log_run_artifacts`: every MLflow logger made with
``log_artifacts: true`` (configs/logger/mlflow.yaml) and every W&B logger (``logger=wandb``; skip with
``+logger.wandb.log_artifacts=false``) receives, as MLflow artifacts or as one W&B ``model`` artifact,

* ``checkpoints/<best checkpoint>.ckpt``: the checkpoint the test metrics come from,
* ``metrics.json``: the test metrics with their 95 % CIs (the same values as the logged metrics),
* ``exported_model/``: the folder ``reportsup-export`` writes (safetensors weights, config, tokenizer,
  model card), so a model can be pulled from the tracker and loaded with ``from_pretrained``.

TensorBoard has no artifacts; the CSV logger writes to the run folder, which holds all of the above.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_modules.common.checkpoints import UnsafeCheckpointError
from lightning_modules.common.label_manifest import CheckpointManifestError
from lightning_modules.common.loggers import TrackerMLFlowLogger
from reportsup.api.loading import ModelSourceError
from reportsup.contracts.run_dir import CHECKPOINTS, METRICS_JSON

#: artifact folder of the exported model inside the tracker's run
EXPORTED_MODEL_ARTIFACT = "exported_model"
#: what an export may raise for a checkpoint that cannot be exported (a model without an API class)
EXPORT_ERRORS = (ModelSourceError, CheckpointManifestError, UnsafeCheckpointError, FileNotFoundError)


def export_for_trackers(checkpoint: Path, run_dir: Path, out_dir: Path) -> Path | None:
    """``reportsup-export``'s folder of ``checkpoint`` in ``out_dir``; None (with a warning saying how to
    export by hand) when the checkpoint cannot be exported."""
    from reportsup.export import export_model  # the API classes: imported only when a tracker needs them

    try:
        return export_model(checkpoint, out_dir, run_dir=run_dir)
    except EXPORT_ERRORS as err:
        rank_zero_warn(
            f"[reportsup] trackers: {checkpoint} was not exported ({type(err).__name__}: {err}); the checkpoint "
            f"and {METRICS_JSON} are logged without it. Export by hand with `reportsup-export {checkpoint} <folder>`."
        )
        return None


def log_run_artifacts(
    loggers: Iterable[Logger], run_dir: str | Path, checkpoint: str | Path | None
) -> list[str]:
    """Log the best checkpoint, ``metrics.json`` and the exported model to every MLflow and W&B logger
    asking for artifacts (``log_artifacts``); returns the artifact paths logged (in the last tracker)."""
    targets = [
        lg
        for lg in loggers
        if isinstance(lg, TrackerMLFlowLogger | WandbLogger) and getattr(lg, "log_run_artifacts", False)
    ]
    if not targets:
        return []
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    files = {f"{CHECKPOINTS}/{ckpt.name}": ckpt} if ckpt else {}
    if (run_dir / METRICS_JSON).is_file():
        files[METRICS_JSON] = run_dir / METRICS_JSON
    logged: list[str] = []
    with tempfile.TemporaryDirectory(prefix="reportsup-export-") as tmp:
        exported = export_for_trackers(ckpt, run_dir, Path(tmp) / EXPORTED_MODEL_ARTIFACT) if ckpt else None
        for logger in targets:
            if isinstance(logger, WandbLogger):
                logged = _to_wandb(logger, files, exported)
            else:
                logged = _to_mlflow(logger, files, exported)
    return logged


def _to_mlflow(logger: TrackerMLFlowLogger, files: dict[str, Path], exported: Path | None) -> list[str]:
    """Into the MLflow run's artifact store, under the run folder's own names."""
    client, run_id = logger.experiment, logger.run_id
    for name, path in files.items():
        client.log_artifact(run_id, str(path), str(Path(name).parent) if "/" in name else None)
    if exported is not None:
        client.log_artifacts(run_id, str(exported), EXPORTED_MODEL_ARTIFACT)
    logged = [*files, *([f"{EXPORTED_MODEL_ARTIFACT}/"] if exported is not None else [])]
    rank_zero_info(
        f"[reportsup] MLflow run {run_id}: logged {', '.join(logged) or 'no artifacts'} "
        f"to {getattr(logger, '_tracking_uri', None) or 'MLflow'}"
    )
    return logged


def _to_wandb(logger: WandbLogger, files: dict[str, Path], exported: Path | None) -> list[str]:
    """One W&B ``model`` artifact ``model-<run id>`` (Lightning's name for checkpoint artifacts), alias
    ``best``; offline runs keep it in the run folder until ``wandb sync``."""
    import wandb

    run = logger.experiment
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"files": sorted(files)})
    for name, path in files.items():
        artifact.add_file(str(path), name=name)
    if exported is not None:
        artifact.add_dir(str(exported), name=EXPORTED_MODEL_ARTIFACT)
    run.log_artifact(artifact, aliases=["best"])
    logged = [*files, *([f"{EXPORTED_MODEL_ARTIFACT}/"] if exported is not None else [])]
    rank_zero_info(f"[reportsup] W&B run {run.id}: logged artifact model-{run.id} ({', '.join(logged)})")
    return logged

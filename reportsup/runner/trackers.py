"""Artifacts of a finished run in the trackers that keep them (issue 22 item 4).

After testing, ``train.py`` calls :func:`log_run_artifacts`: every MLflow logger made with
``log_artifacts: true`` (configs/logger/mlflow.yaml) receives

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

from lightning.pytorch.loggers import Logger
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
    """Log the best checkpoint, ``metrics.json`` and the exported model to every MLflow logger asking for
    artifacts; returns the artifact paths logged (empty when no logger keeps artifacts)."""
    targets = [lg for lg in loggers if isinstance(lg, TrackerMLFlowLogger) and lg.log_run_artifacts]
    if not targets:
        return []
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint else None
    metrics = run_dir / METRICS_JSON
    logged: list[str] = []
    with tempfile.TemporaryDirectory(prefix="reportsup-export-") as tmp:
        exported = export_for_trackers(ckpt, run_dir, Path(tmp) / EXPORTED_MODEL_ARTIFACT) if ckpt else None
        for logger in targets:
            client, run_id = logger.experiment, logger.run_id
            if ckpt is not None and ckpt.is_file():
                client.log_artifact(run_id, str(ckpt), CHECKPOINTS)
                logged.append(f"{CHECKPOINTS}/{ckpt.name}")
            if metrics.is_file():
                client.log_artifact(run_id, str(metrics))
                logged.append(METRICS_JSON)
            if exported is not None:
                client.log_artifacts(run_id, str(exported), EXPORTED_MODEL_ARTIFACT)
                logged.append(f"{EXPORTED_MODEL_ARTIFACT}/")
            rank_zero_info(
                f"[reportsup] MLflow run {run_id}: logged {', '.join(logged) or 'no artifacts'} "
                f"to {getattr(logger, '_tracking_uri', None) or 'MLflow'}"
            )
    return logged

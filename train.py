"""reportsup entry point: compose -> instantiate -> fit -> test -> return the optimised metric.

python train.py experiment=alarm_binary demo=true
python train.py experiment=alarm_binary data.path=reports.csv data.labels=[abnormal]
python train.py -m experiment=glob(alarm_*) demo=true
python train.py experiment=alarm_binary ckpt_path=outputs/alarm_binary/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from datamodules.common.tables import ReportTableError
from lightning_modules.common.checkpoints import UnsafeCheckpointError, load_checkpoint
from lightning_modules.common.encoders import EncoderUnavailableError, TextEncoder
from lightning_modules.common.evaluation import CollectingEvaluator, keep_previous
from lightning_modules.common.label_manifest import CheckpointManifestError
from lightning_modules.spine.image_module import PretrainedWeightsUnavailableError
from reportsup.analysis.summary import metrics_table
from reportsup.contracts.run_dir import (
    CONFIG_RESOLVED,
    LABEL_MANIFEST,
    write_json,
    write_text,
)
from reportsup.contracts.splits import SplitError
from reportsup.runner.provenance import record_provenance, record_resources
from reportsup.runner.run_report_attention import finish_run_report
from reportsup.runner.setup import apply_demo, register_all, requeued_checkpoint
from reportsup.runner.sweep import SweepConfigError, run_sweep
from reportsup.runner.trackers import log_run_artifacts

register_all()

# Errors about the user's data or configuration, reported as one clear message.
USER_ERRORS = (
    ReportTableError,
    SplitError,
    EncoderUnavailableError,
    CheckpointManifestError,
    FileNotFoundError,
    SweepConfigError,
    PretrainedWeightsUnavailableError,
    UnsafeCheckpointError,
)


def build_encoder(cfg: DictConfig, train_texts: list[str]) -> TextEncoder:
    """The configured encoder; when resuming, the checkpoint's own (same tokenizer, same architecture)."""
    if cfg.ckpt_path:
        # weights_only: a checkpoint given to resume from cannot run code while its manifest is read
        manifest = load_checkpoint(cfg.ckpt_path).get("label_manifest") or {}
        if "encoder" in manifest:
            return TextEncoder.from_manifest(manifest["encoder"])
    return instantiate(cfg.encoder)(train_texts)


def optimized_metric(trainer: pl.Trainer, name: str) -> float | None:
    """The checkpointed (best) value when the checkpoint monitors ``name``, else the last logged value."""
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.monitor == name and ckpt.best_model_score is not None:
        return float(ckpt.best_model_score)
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def run(
    cfg: DictConfig, command_line: list[str] | None = None, extra_callbacks: Sequence[pl.Callback] = ()
) -> float | None:
    """Train and test one configured run; return ``cfg.optimized_metric`` (``extra_callbacks``: e.g.
    a sweep's pruning callback)."""
    started = datetime.now(UTC)
    if cfg.test and not cfg.train and not cfg.ckpt_path:  # before a demo writes any data
        raise SystemExit(
            "reportsup: train=false tests a trained model: give its checkpoint, e.g. "
            "ckpt_path=outputs/<experiment>/<run>/checkpoints/best-epoch<N>.ckpt"
        )
    if cfg.demo:
        cfg = apply_demo(cfg, command_line_overrides=command_line)
    run_dir = Path(cfg.paths.run_dir)
    pl.seed_everything(cfg.seed, workers=True)

    # `data.demo` is the synthetic-data recipe of demo=true, not a DataModule argument.
    data_cfg = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in ((k, cfg.data[k]) for k in cfg.data if k != "demo")
    }
    datamodule = instantiate(data_cfg, _convert_="all")
    datamodule.setup()
    # Report models read text through an encoder; image models (DaMIL) have none (`encoder: null`).
    encoder = build_encoder(cfg, datamodule.train_texts) if cfg.get("encoder") is not None else None
    if encoder is not None:
        datamodule.set_tokenizer(encoder.tokenize)
        model = instantiate(cfg.model, encoder=encoder, _convert_="all")
    else:
        model = instantiate(cfg.model, _convert_="all")
        if hasattr(model, "tokenize") and hasattr(datamodule, "set_tokenizer"):
            datamodule.set_tokenizer(model.tokenize)  # a report model without an encoder (word2vec baseline)

    if cfg.logger.get("wandb") is not None and cfg.logger.wandb.get("job_type") is None:
        with open_dict(cfg):
            cfg.logger.wandb.job_type = "train" if cfg.train else "eval"
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + list(extra_callbacks)
    loggers = [instantiate(lg) for lg in cfg.logger.values() if lg is not None]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for logger in trainer.loggers:
        logger.log_hyperparams(
            {"config": OmegaConf.to_container(cfg, resolve=True), "data": datamodule.summary}
        )
    if trainer.is_global_zero:
        # A resumed run keeps the previous start's files beside the new ones (<name>.<time>.<suffix>).
        record_provenance(run_dir, started, overrides=command_line)
        keep_previous(run_dir / CONFIG_RESOLVED)
        write_text(run_dir / CONFIG_RESOLVED, OmegaConf.to_yaml(cfg, resolve=True))
    if trainer.is_global_zero and encoder is not None:
        write_json(
            run_dir / LABEL_MANIFEST,
            {k: v for k, v in model.label_manifest().items() if k != "encoder"}
            | {"encoder": {k: v for k, v in encoder.manifest().items() if k != "files"}},
        )

    metric = None
    ckpt_path = cfg.ckpt_path
    if ckpt_path is None and (requeued := requeued_checkpoint(run_dir)) is not None:
        rank_zero_info(f"[reportsup] requeued SLURM job: resuming from {requeued}")
        ckpt_path = str(requeued)
    seconds: dict[str, float] = {}
    if cfg.train:
        tic = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        seconds["fit"] = time.perf_counter() - tic
        metric = optimized_metric(trainer, cfg.optimized_metric)
    if cfg.test:
        tic = time.perf_counter()
        if cfg.train:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            test_ckpt = best or None
        else:  # a test-only run: the given checkpoint's weights, never the freshly initialised ones
            test_ckpt = ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt)
        evaluator = next((c for c in callbacks if isinstance(c, CollectingEvaluator)), None)
        if evaluator is not None and evaluator.metrics:
            rank_zero_info("\n" + metrics_table(evaluator.headline()))
        seconds["test"] = time.perf_counter() - tic
        if trainer.is_global_zero:
            finish_run_report(run_dir, model)  # report.html, one page per run (issue 22 item 5)
        if trainer.is_global_zero:  # checkpoint, metrics.json, exported model to MLflow (issue 22 item 4)
            log_run_artifacts(trainer.loggers, run_dir, test_ckpt)
    if trainer.is_global_zero:
        record_resources(run_dir, seconds)
    rank_zero_info(f"[reportsup] run directory: {run_dir}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Wait for every rank, then release gloo/NCCL: a process group left to the interpreter's exit
        # can abort a rank ("terminate called without an active exception", seen with 2 gloo ranks).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metric


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    # Lightning set up its own console handler at import, before Hydra configured logging; hand its
    # records (and reportsup's rank-zero messages) to Hydra's handlers so they also reach <run>/train.log.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("lightning")]:
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    with open_dict(cfg):
        cfg.paths.run_dir = hydra_cfg.runtime.output_dir
    # As typed: an override such as output_dir=${paths.run_dir} must stay an interpolation here.
    task_overrides = [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]
    try:
        if cfg.get("sweep") is not None:
            if not cfg.train:  # a trial's value is a training metric: nothing to optimise in a test-only run
                raise SystemExit("reportsup: a sweep trains its trials; drop train=false (or the sweep).")
            return run_sweep(cfg, run, command_line=task_overrides)
        return run(cfg, command_line=task_overrides)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        if os.environ.get("REPORTSUP_DEBUG"):
            raise
        raise SystemExit(
            f"reportsup: the config key '{err.full_key}' must be set, e.g. {err.full_key}=... on the "
            "command line (data.labels=[abnormal]) or in an experiment file."
        ) from None
    except (*USER_ERRORS, InstantiationException) as err:
        # Bad input or configuration: the message says what to fix; a traceback would only hide it.
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if not isinstance(cause, USER_ERRORS):
            raise
        raise SystemExit(f"reportsup: {type(cause).__name__}: {cause}") from None


if __name__ == "__main__":
    main()

"""Optuna sweeps declared in ``sweeps/<name>.yaml``: ``python train.py experiment=alarm_binary sweep=alarm_lr``.

A sweep file sets ``sweep:`` (package ``_global_``)::

    sweep:
      study_name: alarm_lr
      metric: val/loss            # a validation metric: sweeps never look at test sets
      direction: minimize
      n_trials: 20                # the study's total: a rerun with a larger number adds trials
      sampler: {_target_: optuna.samplers.TPESampler, seed: 0}
      pruner: {_target_: optuna.pruners.MedianPruner, n_warmup_steps: 1}
      storage: null               # null: SQLite in the sweep folder; "journal": a journal file there
                                  # (many parallel workers on a shared file system); or an RDB URL
      fail_fast: false            # true: stop at the first failed trial
      params:                     # config key -> distribution
        model.optimizer.lr: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}
        data.batch_size: {type: categorical, choices: [8, 16, 32]}

Design, and why not Hydra's Optuna sweeper: the hydra-optuna-sweeper plugin pins Optuna < 3 and asks
for trials in batches (a barrier per batch). Here each process is a *worker* that asks the study for
its next trial as soon as it is free (``study.ask``), trains it in-process through ``train.run``,
reports the validation metric every epoch (optuna-integration's Lightning pruning callback) and
tells the result; any number of workers (e.g. a SLURM job array running the same command) share the
study through its storage. The study lives in ``<paths.output_dir>/sweeps/<study_name>/`` (not
time-stamped), so rerunning the command continues it. A failed trial is recorded as FAIL with its
error (user attribute ``error``) and the sweep goes on, unless ``fail_fast``.

When the study has ``n_trials`` finished trials, the worker writes ``best_params.yaml`` (a ready
experiment: ``python train.py experiment=<that file's name>`` after copying it to ``experiments/``),
``trials.csv`` and Optuna's plots (optimization history, parameter importances; PNG and HTML).
``reportsup-sweep-status <sweep folder>`` lists running, complete, pruned and failed trials; the
storage opens in optuna-dashboard (``optuna-dashboard sqlite:///<sweep folder>/study.db``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reportsup.contracts.run_dir import (
    PLOTS,
    SWEEP_BEST_PARAMS,
    SWEEP_DB,
    SWEEP_JOURNAL,
    SWEEP_TRIALS_CSV,
    sweep_trial_dir,
    write_text,
)

log = logging.getLogger("reportsup.sweep")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class SweepConfigError(ValueError):
    """A sweep file that cannot run as written; the message names the key and the fix."""


def sweep_dir(cfg: DictConfig) -> Path:
    name = cfg.sweep.study_name + ("_demo" if cfg.get("demo") else "")
    return Path(cfg.paths.output_dir) / "sweeps" / name


def storage_for(spec: str | None, folder: Path) -> optuna.storages.BaseStorage:
    """``null`` -> SQLite in ``folder``; ``journal`` -> a journal file there (safe for many workers on a
    shared file system); anything else is an RDB URL for SQLAlchemy."""
    folder.mkdir(parents=True, exist_ok=True)
    if spec == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(folder / SWEEP_JOURNAL)))
    # Heartbeats: a worker killed mid-trial (preemption, time limit) leaves a RUNNING trial that the
    # next worker marks FAIL after the grace period instead of counting it forever.
    return optuna.storages.RDBStorage(
        str(spec or f"sqlite:///{folder / SWEEP_DB}"), heartbeat_interval=60, grace_period=180
    )


def check_sweep(cfg: DictConfig) -> None:
    """Sweeps must not touch test sets, and each parameter must name an existing config key."""
    sw = cfg.sweep
    for key in ("study_name", "metric", "direction", "n_trials", "params"):
        if sw.get(key) is None:
            raise SweepConfigError(f"sweep.{key} is not set in the sweep file.")
    if not str(sw.metric).startswith("val/"):
        raise SweepConfigError(
            f"sweep.metric={sw.metric!r}: a sweep optimises a validation metric (val/...), never a test "
            "metric; tuning on the test set would bias every reported result."
        )
    if sw.direction not in ("minimize", "maximize"):
        raise SweepConfigError(f"sweep.direction={sw.direction!r}: minimize or maximize.")
    for key, spec in sw.params.items():
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise SweepConfigError(f"sweep.params.{key}: no such config key in this experiment.")
        if spec.get("type") not in ("float", "int", "categorical"):
            raise SweepConfigError(
                f"sweep.params.{key}.type={spec.get('type')!r}: float, int or categorical."
            )


def suggest(trial: optuna.Trial, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per config key from its distribution (Optuna's define-by-run API)."""
    values = {}
    for key, spec in params.items():
        kind = spec["type"]
        if kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif kind == "int":
            values[key] = trial.suggest_int(
                key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            values[key] = trial.suggest_float(
                key,
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=spec.get("step"),
            )
    return values


def trial_config(cfg: DictConfig, values: Mapping[str, Any], number: int, folder: Path) -> DictConfig:
    """The experiment config with the trial's values, its own run folder, and no testing."""
    trial_cfg = copy.deepcopy(cfg)
    with open_dict(trial_cfg):
        for key, value in values.items():
            OmegaConf.update(trial_cfg, key, value, force_add=False)
        for key, value in trial_overrides(cfg).items():
            OmegaConf.update(trial_cfg, key, value, force_add=True)
        trial_cfg.paths.run_dir = str(folder / sweep_trial_dir(number))
        trial_cfg.optimized_metric = cfg.sweep.metric
        trial_cfg.test = False  # sweeps choose on validation data only
        # every tracker that records a job type and tags (W&B, MLflow, TensorBoard) marks the trial
        for tracker in ("wandb", "mlflow", "tensorboard"):
            if trial_cfg.get("logger") and trial_cfg.logger.get(tracker) is not None:
                trial_cfg.logger[tracker].job_type = "sweep"
                trial_cfg.logger[tracker].tags = [
                    *trial_cfg.logger[tracker].tags,
                    f"sweep_{cfg.sweep.study_name}",
                    f"trial_{number}",
                ]
        del trial_cfg["sweep"]
    return trial_cfg


def trial_overrides(cfg: DictConfig) -> dict[str, Any]:
    """Fixed settings of every trial (``sweep.trial_overrides``; in demo mode also
    ``sweep.demo_trial_overrides``, e.g. fewer epochs)."""
    keys = ("trial_overrides", "demo_trial_overrides") if cfg.get("demo") else ("trial_overrides",)
    out: dict[str, Any] = {}
    for key in keys:
        block = cfg.sweep.get(key)
        if block is not None:
            out.update(OmegaConf.to_container(block, resolve=True))
    return out


def worker_index(cfg: DictConfig) -> int:
    """This worker's number: the SLURM array task id, else ``+sweep_worker=<i>``, else 0."""
    return int(os.environ.get("SLURM_ARRAY_TASK_ID") or cfg.get("sweep_worker") or 0)


def worker_sampler(
    cfg: DictConfig, storage: optuna.storages.BaseStorage
) -> optuna.samplers.BaseSampler | None:
    """The configured sampler, its seed offset by the worker index and the trials already in the study:
    parallel workers must not draw the same random points, and a rerun must not repeat the first
    run's; the same history and worker give the same suggestions (reproducible)."""
    if not cfg.sweep.get("sampler"):
        return None
    sampler_cfg = OmegaConf.to_container(cfg.sweep.sampler, resolve=True)
    if sampler_cfg.get("seed") is not None:
        try:
            existing = len(optuna.load_study(study_name=cfg.sweep.study_name, storage=storage).trials)
        except KeyError:  # a new study
            existing = 0
        sampler_cfg["seed"] = int(sampler_cfg["seed"]) + 100_003 * worker_index(cfg) + existing
    return instantiate(sampler_cfg)


def n_trials(cfg: DictConfig) -> int:
    return (
        int(cfg.sweep.get("demo_n_trials") or cfg.sweep.n_trials)
        if cfg.get("demo")
        else int(cfg.sweep.n_trials)
    )


def run_sweep(
    cfg: DictConfig, run: Callable[..., float | None], command_line: Sequence[str] = ()
) -> float | None:
    """Work on the study until it has ``sweep.n_trials`` finished trials; return the best value."""
    from optuna_integration import PyTorchLightningPruningCallback

    check_sweep(cfg)
    folder = sweep_dir(cfg)
    storage = storage_for(cfg.sweep.get("storage"), folder)
    study = optuna.create_study(
        study_name=cfg.sweep.study_name,
        storage=storage,
        sampler=worker_sampler(cfg, storage),
        pruner=instantiate(cfg.sweep.pruner) if cfg.sweep.get("pruner") else None,
        direction=cfg.sweep.direction,
        load_if_exists=True,
    )
    study.set_user_attr("experiment", str(cfg.get("name")))
    study.set_user_attr("metric", str(cfg.sweep.metric))
    target = n_trials(cfg)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    log.info(f"[reportsup] sweep {cfg.sweep.study_name}: {folder}, {done} trials finished, target {target}")
    params = dict(OmegaConf.to_container(cfg.sweep.params, resolve=True))
    if cfg.get("demo") and cfg.sweep.get("demo_params") is not None:
        params.update(OmegaConf.to_container(cfg.sweep.demo_params, resolve=True))

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, params)
        trial_cfg = trial_config(cfg, values, trial.number, folder)
        trial.set_user_attr("run_dir", trial_cfg.paths.run_dir)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        pruning = PyTorchLightningPruningCallback(trial, monitor=cfg.sweep.metric)
        # The trial's values also go in as command-line values: those win over the demo settings.
        forced = [f"{k}={json.dumps(v)}" for k, v in {**values, **trial_overrides(cfg)}.items()]
        try:
            value = run(trial_cfg, command_line=[*command_line, *forced], extra_callbacks=[pruning])
            pruning.check_pruned()  # under DDP the callback stops training and defers the prune to here
        except optuna.TrialPruned:
            raise
        except Exception as err:  # recorded with the trial; optimize() goes on unless fail_fast
            trial.set_user_attr("error", "".join(traceback.format_exception_only(err)).strip()[-2000:])
            raise
        if value is None:
            raise RuntimeError(f"trial {trial.number}: the run logged no {cfg.sweep.metric}")
        return value

    if done < target:
        # Each worker asks for its next trial as soon as it is free; all stop once the study holds
        # `target` finished trials (MaxTrialsCallback), so N workers need no coordination but the storage.
        study.optimize(
            objective,
            n_trials=target - done,
            catch=() if cfg.sweep.get("fail_fast") else (Exception,),
            callbacks=[optuna.study.MaxTrialsCallback(target, states=FINISHED)],
            gc_after_trial=True,
        )
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    if len(finished) >= target:
        write_sweep_report(study, cfg, folder)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_value if complete else None


def best_experiment_yaml(study: optuna.Study, cfg: DictConfig) -> str:
    """The best trial as an experiment file: the swept experiment plus the best values."""
    best = study.best_trial
    body = OmegaConf.create({})
    for key, value in best.params.items():
        OmegaConf.update(body, key, value, force_add=True)
    experiment = str(cfg.get("name"))
    header = (
        "# @package _global_\n"
        f"# Best trial {best.number} of the Optuna study '{study.study_name}' ({cfg.sweep.metric} = "
        f"{best.value:.6g}, {cfg.sweep.direction}). Copy into experiments/ to run it by name.\n"
    )
    if cfg.get("demo"):
        # a demo sweep searches the demo's space with the demo encoder on synthetic data (e.g. a
        # from-scratch lr of 1e-3): its values are for demo=true runs, not for the paper's encoder
        header += (
            "# Found in DEMO mode (demo=true: synthetic data, the demo encoder and search space): run it with\n"
            "# demo=true; its values (e.g. a from-scratch learning rate) do not carry over to the paper's encoder.\n"
        )
    doc = {
        "defaults": [experiment],
        "name": f"{experiment}_{study.study_name}_best",
        **OmegaConf.to_container(body),
    }
    return header + OmegaConf.to_yaml(OmegaConf.create(doc))


def write_sweep_report(study: optuna.Study, cfg: DictConfig, folder: Path) -> None:
    """trials.csv, best_params.yaml and Optuna's plots, regenerated from the storage each time."""
    trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    trials.to_csv(folder / SWEEP_TRIALS_CSV, index=False)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        log.warning("[reportsup] no complete trial: no best parameters or plots")
        return
    write_text(folder / SWEEP_BEST_PARAMS, best_experiment_yaml(study, cfg))
    plots = folder / PLOTS
    plots.mkdir(exist_ok=True)
    write_plots(study, plots)
    log.info(f"[reportsup] sweep report: {folder}/{SWEEP_TRIALS_CSV}, {SWEEP_BEST_PARAMS}, {PLOTS}/")


def write_plots(study: optuna.Study, plots: Path) -> None:
    """Optimization history and parameter importances as HTML (plotly) and PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis_mpl

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    figures = {"optimization_history": optuna.visualization.plot_optimization_history}
    if len(complete) >= 2 and len(study.best_trial.params) >= 1:
        figures["param_importances"] = optuna.visualization.plot_param_importances
    for name, plot in figures.items():
        try:
            plot(study).write_html(plots / f"{name}.html")
        except ImportError as err:  # plotly missing: PNG only
            log.warning(f"[reportsup] {name}.html not written: {err}")
        ax = getattr(vis_mpl, f"plot_{name}")(study)
        ax.figure.savefig(plots / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)


def study_table(
    storage: str | optuna.storages.BaseStorage, study_name: str | None = None
) -> tuple[str, pd.DataFrame]:
    """``(study name, trials table)`` of a storage (the only study when ``study_name`` is None)."""
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise ValueError(f"the storage holds studies {names}: name one with --study.")
        study_name = names[0]
    study = optuna.load_study(study_name=study_name, storage=storage)
    return study_name, study.trials_dataframe(
        attrs=("number", "value", "state", "params", "user_attrs", "duration")
    )

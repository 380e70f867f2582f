"""Optuna sweeps declared in sweeps/ (reportsup/runner/sweep.py): validation-only objectives, failed
trials recorded, continuation on rerun, pruning, and the best trial as a ready experiment."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from reportsup.runner.setup import PROJECT_ROOT, register_all
from reportsup.runner.sweep import SweepConfigError, check_sweep, run_sweep, storage_for, sweep_dir
from tests.conftest import run_train

register_all()


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(Path(PROJECT_ROOT) / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=alarm_binary", "sweep=alarm_lr", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def _load(cfg) -> optuna.Study:
    return optuna.load_study(study_name=cfg.sweep.study_name, storage=storage_for(None, sweep_dir(cfg)))


def test_sweep_file_has_the_search_space_and_is_validation_only(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.sweep.metric.startswith("val/") and cfg.sweep.sampler.seed == cfg.seed
    assert set(cfg.sweep.params) == {
        "model.optimizer.lr",
        "data.batch_size",
        "model.mlp_hidden_size",
        "model.dropout",
    }
    for metric in ("test/report_label/abnormal/auroc", "train/loss"):
        with pytest.raises(SweepConfigError, match="validation metric"):
            run_sweep(_cfg(tmp_path, f"sweep.metric={metric}"), run=lambda *a, **k: 0.0)
    cfg = _cfg(tmp_path)
    with open_dict(cfg):
        cfg.sweep.params["model.no_such_key"] = {"type": "float", "low": 0, "high": 1}
    with pytest.raises(SweepConfigError, match="no such config key"):
        run_sweep(cfg, run=lambda *a, **k: 0.0)


def test_trials_see_their_values_never_test_and_failures_are_recorded(tmp_path):
    seen = []

    def fake_run(cfg, command_line, extra_callbacks):
        seen.append(cfg)
        assert cfg.test is False and "sweep" not in cfg and cfg.optimized_metric == "val/loss"
        assert f"model.dropout={cfg.model.dropout}" in " ".join(command_line).replace('"', "")
        if len(seen) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return cfg.model.optimizer.lr * 1e4

    cfg = _cfg(tmp_path, "sweep.n_trials=4")
    best = run_sweep(cfg, run=fake_run)
    study = _load(cfg)
    states = [t.state for t in study.trials]
    assert (
        states.count(optuna.trial.TrialState.FAIL) == 1
        and states.count(optuna.trial.TrialState.COMPLETE) == 3
    )
    failed = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert "CUDA out of memory" in failed.user_attrs["error"]
    assert best == pytest.approx(min(t.value for t in study.trials if t.value is not None))
    # each trial its own run folder inside the sweep folder
    assert len({c.paths.run_dir for c in seen}) == 4 and all(
        str(sweep_dir(cfg)) in c.paths.run_dir for c in seen
    )
    table = pd.read_csv(sweep_dir(cfg) / "trials.csv")
    assert list(table["state"]).count("FAIL") == 1
    # a rerun continues the study: 2 more trials, none repeated
    run_sweep(_cfg(tmp_path, "sweep.n_trials=6"), run=fake_run)
    assert len(_load(cfg).trials) == 6 and len(seen) == 6


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    def failing(cfg, command_line, extra_callbacks):
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        run_sweep(_cfg(tmp_path, "sweep.fail_fast=true"), run=failing)


@pytest.mark.slow
def test_demo_sweep_prunes_resumes_and_its_best_trial_composes(tmp_path):
    common = (
        "experiment=alarm_binary",
        "sweep=alarm_lr",
        "demo=true",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
    )
    run_train(*common)
    folder = tmp_path / "sweeps" / "alarm_lr_demo"
    study = optuna.load_study(study_name="alarm_lr", storage=f"sqlite:///{folder / 'study.db'}")
    assert len(study.trials) == 4
    # rerun with 6 trials and a pruner that prunes every trial at its first report
    run_train(
        *common,
        "sweep.n_trials=6",
        "sweep.demo_n_trials=6",
        "sweep.pruner._target_=optuna.pruners.ThresholdPruner",
        "~sweep.pruner.n_startup_trials",
        "~sweep.pruner.n_warmup_steps",
        "+sweep.pruner.upper=0.0",
    )
    study = optuna.load_study(study_name="alarm_lr", storage=f"sqlite:///{folder / 'study.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 6 and states[4:] == [optuna.trial.TrialState.PRUNED] * 2
    for name in (
        "trials.csv",
        "best_params.yaml",
        "plots/optimization_history.png",
        "plots/optimization_history.html",
        "plots/param_importances.png",
    ):
        assert (folder / name).exists(), name
    # the best trial is a ready experiment
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(
        group="experiment",
        name="swept_best",
        node=OmegaConf.load(folder / "best_params.yaml"),
        package="_global_",
    )
    with initialize_config_dir(str(Path(PROJECT_ROOT) / "configs"), version_base="1.3"):
        best_cfg = compose("train", overrides=["experiment=swept_best"])
    assert best_cfg.model.optimizer.lr == pytest.approx(study.best_params["model.optimizer.lr"])
    assert best_cfg.data.batch_size == study.best_params["data.batch_size"]
    assert "Found in DEMO mode" in (folder / "best_params.yaml").read_text()  # not for the paper encoder


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (Path(PROJECT_ROOT) / "sweeps").glob("*.yaml")))
def test_every_sweep_composes_with_its_experiment_and_is_validation_only(sweep):
    with initialize_config_dir(str(Path(PROJECT_ROOT) / "configs"), version_base="1.3"):
        probe = compose("train", overrides=[f"sweep={sweep}"])
        cfg = compose("train", overrides=[f"experiment={probe.sweep.experiment}", f"sweep={sweep}"])
    check_sweep(cfg)  # every parameter names a key of that experiment; the metric is val/...
    assert cfg.optimized_metric == cfg.sweep.metric or cfg.sweep.metric.startswith("val/")


@pytest.mark.parametrize("tracker", ["wandb", "mlflow", "tensorboard"])
def test_sweep_trials_log_as_sweep_jobs_with_trial_tags(tmp_path, tracker):
    seen = []
    cfg = _cfg(tmp_path, f"logger={tracker}", "sweep.n_trials=1")
    run_sweep(cfg, run=lambda c, command_line, extra_callbacks: seen.append(c) or 0.5)
    tracker_cfg = seen[0].logger[tracker]
    assert tracker_cfg.job_type == "sweep" and {"sweep_alarm_lr", "trial_0", "alarm"} <= set(tracker_cfg.tags)


def test_wandb_report_is_built_without_a_server():
    from reportsup.cli.wandb_report import build_report

    report = build_report(
        "lab",
        "reportsup",
        ["alarm_binary_10x", "alarm_baseline_word2vec_10x"],
        ["test/report_label/abnormal/auroc", "test/image_label/abnormal/auroc"],
        ["roc/abnormal"],
        comparison_md="| model | auroc |\n|---|---|\n| alarm | 0.99 |",
        ablation_md="| ablation | AUROC |",
    )
    grid = next(b for b in report.blocks if type(b).__name__ == "PanelGrid")
    assert [rs.name for rs in grid.runsets] == ["alarm_binary_10x", "alarm_baseline_word2vec_10x"]
    assert "alarm_baseline_word2vec_10x" in grid.runsets[1].filters and "Group" in grid.runsets[1].filters
    bars = [p for p in grid.panels if type(p).__name__ == "BarPlot"]
    assert [b.metrics[0].name for b in bars] == [
        "test/report_label/abnormal/auroc",
        "test/image_label/abnormal/auroc",
    ]
    assert all(b.groupby_aggfunc == "mean" and b.groupby_rangefunc == "stderr" for b in bars)
    assert any(type(p).__name__ == "MediaBrowser" and p.media_keys == ["roc/abnormal"] for p in grid.panels)
    markdown = [b.text for b in report.blocks if type(b).__name__ == "MarkdownBlock"]
    assert markdown == ["| model | auroc |\n|---|---|\n| alarm | 0.99 |", "| ablation | AUROC |"]
    with pytest.raises(ValueError, match="group"):
        build_report("lab", "reportsup", [], ["m"])
    with_cmp = build_report(
        "lab", "reportsup", ["a", "b"], ["m"], comparison_figures=["report_label_abnormal"]
    )
    grid = [b for b in with_cmp.blocks if type(b).__name__ == "PanelGrid"][1]
    assert grid.runsets[0].name == "reportsup-compare" and "reportsup-compare" in grid.runsets[0].filters
    assert [p.media_keys for p in grid.panels if type(p).__name__ == "MediaBrowser"] == [
        ["comparison/bars/report_label_abnormal"],
        ["comparison/roc/report_label_abnormal"],
    ]
    assert any(type(p).__name__ == "WeavePanelSummaryTable" for p in grid.panels)


@pytest.mark.slow
def test_two_parallel_workers_share_one_journal_study(tmp_path):
    """Two processes of the same command work on one study (journal storage), each asking for its
    next trial when free: together they finish exactly the target, both contribute."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=alarm_binary",
        "sweep=alarm_lr",
        "demo=true",
        "sweep.storage=journal",
        "sweep.demo_n_trials=4",
        "data.demo.n_reports=600",  # the race is the test, not the trials: small, one-epoch trials
        "trainer.max_epochs=1",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'd'}",
    ]
    run_train(*args[2:], "sweep.demo_n_trials=1")  # writes the demo data once, before the race
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    workers = [
        subprocess.Popen(
            [*args, f"+sweep_worker={i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [w.communicate()[1] for w in workers]
    assert all(w.returncode == 0 for w in workers), errors
    folder = tmp_path / "sweeps" / "alarm_lr_demo"
    storage = storage_for("journal", folder)
    study = optuna.load_study(study_name="alarm_lr", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5  # MaxTrialsCallback: a worker may finish one trial it had started
    assert len({t.user_attrs["worker"] for t in study.trials[1:]}) == 2
    # differently seeded workers: no two trials drew the same parameters
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials)


def test_sweep_status_counts_each_state(tmp_path, capsys):
    from reportsup.cli.sweep_status import main as status

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    for state, value in ((optuna.trial.TrialState.COMPLETE, 0.3), (optuna.trial.TrialState.COMPLETE, 0.2)):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value, state=state))
    study.add_trial(
        optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.PRUNED)
    )
    study.add_trial(
        optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.FAIL)
    )
    study.ask()  # a trial a worker is running
    status([str(tmp_path)])
    assert "study s: 1 running, 2 complete, 1 pruned, 1 fail" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="neither study.db nor journal.log"):
        status([str(tmp_path / "empty")] if (tmp_path / "empty").mkdir() is None else [])

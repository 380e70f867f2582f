"""A real one-node SLURM cluster (slurmctld + slurmd + munge from Debian packages) in the tests:
training submitted through hydra-submitit as 2 SLURM tasks (DDP over gloo), and a requeued job that
resumes from its checkpoint. Needs root on Linux (tests/slurm/start_cluster.sh); skipped elsewhere."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
COMMON = (
    "experiment=alarm_binary",
    "demo=true",
    "launcher=slurm_cpu",
    "trainer.devices=2",
    "data.demo.n_reports=600",
    "callbacks.evaluator.n_bootstrap=50",
    "+callbacks.parameter_digest._target_=lightning_modules.common.ddp_checks.ParameterDigest",
    "+callbacks.parameter_digest.output_dir=${paths.run_dir}",
)


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory) -> dict[str, str]:
    if platform.system() != "Linux" or os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root on Linux (it installs and starts slurmctld/slurmd)")
    folder = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(
        ["bash", str(ROOT / "tests" / "slurm" / "start_cluster.sh"), str(folder)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"the SLURM test cluster did not start:\n{proc.stdout}\n{proc.stderr}"
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "HF_HUB_OFFLINE": "1"}
    yield env
    subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "stop_cluster.sh")], check=False)


def _launch(env, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *COMMON, *overrides],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, env: dict[str, str], output: Path, timeout: float = 600) -> str:
    """The launcher's output once it exits; on a time-out, the jobs are cancelled and the failure shows
    the queue, the jobs' own logs and the daemons' logs (the launcher's output alone does not say why)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        queue = subprocess.run(["squeue", "-l"], env=env, capture_output=True, text=True).stdout
        subprocess.run(["scancel", "--user=root"], env=env, check=False)
        logs = sorted(output.glob("**/.submitit/*/*_log.*"))
        conf = Path(env["SLURM_CONF"]).parent / "log"
        tails = [f"== {p}\n{p.read_text()[-2500:]}" for p in [*logs, *sorted(conf.glob("*.log"))]]
        pytest.fail(f"no result after {timeout} s\n{out[-2000:]}\n{queue}\n" + "\n".join(tails))


def _run_dir(output: Path) -> Path:
    (multirun,) = list((output / "alarm_binary").iterdir())
    (run,) = [p for p in multirun.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def test_two_task_ddp_job_trains_identical_replicas_and_writes_metrics_once(slurm_env, tmp_path):
    proc = _launch(
        slurm_env, "trainer.max_epochs=1", f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'd'}"
    )
    out = _finish(proc, slurm_env, tmp_path)
    assert proc.returncode == 0, out[-4000:]
    run = _run_dir(tmp_path)
    job_id = run.name.split("_")[1]
    assert run.name == f"0_{job_id}_0"  # the run folder carries the SLURM job and array task ids
    digests = [json.loads((run / f"parameter_digest_rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["world_size"] for d in digests] == [2, 2] and {d["global_rank"] for d in digests} == {0, 1}
    assert digests[0]["sha256"] == digests[1]["sha256"]  # DDP kept the replicas identical
    assert len(list(run.glob("metrics*.json"))) == 1 and len(list((run / "csv").iterdir())) == 1
    logs = sorted((run.parent / ".submitit" / job_id).glob(f"{job_id}_*_log.out"))
    assert len(logs) == 2  # two SLURM tasks (srun ranks)


def _release_requeued(job_id: str, env: dict[str, str], timeout: float = 120) -> None:
    """SLURM holds a requeued batch job for 120 s (``Reason=BeginTime``); set its start to now, as an
    administrator would, so the test does not wait two minutes. The resume itself is unchanged."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T %r"], env=env, capture_output=True, text=True
        ).stdout.split()
        if state[:2] == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
            return
        if not state:  # left the queue: _finish reports what happened
            return
        time.sleep(0.5)  # still RUNNING (being stopped) or REQUEUED


def test_requeued_job_resumes_from_its_checkpoint(slurm_env, tmp_path):
    proc = _launch(
        slurm_env, "trainer.max_epochs=6", f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'd'}"
    )
    deadline = time.time() + 600
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("alarm_binary/*/*/checkpoints/last.ckpt"))
        if found:
            last = found[0]
            break
        time.sleep(1)
    assert last is not None, "no checkpoint appeared before the job ended"
    run = last.parent.parent
    job_id = run.name.split("_")[1]
    subprocess.run(["scontrol", "requeue", job_id], check=True, env=slurm_env)
    _release_requeued(job_id, slurm_env)
    out = _finish(proc, slurm_env, tmp_path)
    assert proc.returncode == 0, out[-4000:]
    assert (run / "metrics.json").exists()
    log = (run / "train.log").read_text()
    assert "requeued SLURM job: resuming from" in log
    # The CSV log of the second start begins after epoch 0: the epoch count continued.
    versions = sorted((run / "csv").iterdir())
    assert len(versions) == 2
    resumed = pd.read_csv(versions[1] / "metrics.csv")
    assert resumed["epoch"].dropna().min() >= 1


def test_generated_sbatch_script_runs_a_two_rank_job(slurm_env, tmp_path):
    overrides = [o for o in COMMON if not o.startswith("launcher=")]
    script = subprocess.run(
        [
            sys.executable,
            "-m",
            "reportsup.cli.sbatch",
            *overrides,
            "launcher=slurm_cpu",
            "trainer.max_epochs=1",
            f"paths.output_dir={tmp_path}",
            f"paths.data_dir={tmp_path / 'd'}",
        ],
        cwd=ROOT,
        env=slurm_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --requeue" in script and "srun " in script
    (tmp_path / "job.sbatch").write_text(script)
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(tmp_path / "job.sbatch")],
        cwd=tmp_path,
        env=slurm_env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.time() + 600
    while time.time() < deadline:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id], env=slurm_env, capture_output=True, text=True
        ).stdout
        if not queued.strip():
            break
        time.sleep(2)
    run = tmp_path / "alarm_binary" / f"sbatch_{job_id}"
    slurm_out = tmp_path / f"slurm_alarm_binary_{job_id}.out"
    assert (run / "metrics.json").exists(), (
        slurm_out.read_text()[-3000:] if slurm_out.exists() else "no output"
    )
    digests = {json.loads((run / f"parameter_digest_rank{r}.json").read_text())["sha256"] for r in (0, 1)}
    assert len(digests) == 1


def test_sweep_workers_run_as_one_job_array_sharing_one_study(slurm_env, tmp_path):
    import optuna

    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "experiment=alarm_binary",
            "sweep=alarm_lr",
            "demo=true",
            "launcher=slurm_cpu",
            "trainer.devices=1",
            "trainer.strategy=auto",
            "+sweep_worker=range(0,2)",
            "sweep.storage=journal",
            "sweep.demo_n_trials=4",
            "data.demo.n_reports=600",
            "callbacks.evaluator.n_bootstrap=50",
            "trainer.max_epochs=1",
            f"paths.output_dir={tmp_path}",
            f"paths.data_dir={tmp_path / 'd'}",
        ],
        cwd=ROOT,
        env=slurm_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _finish(proc, slurm_env, tmp_path)
    assert proc.returncode == 0, out[-4000:]
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "sweeps" / "alarm_lr_demo" / "journal.log"
    study = optuna.load_study(
        study_name="alarm_lr", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    )
    finished = [t for t in study.trials if t.state.is_finished()]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    # The workers stop once the study holds 4 finished trials (MaxTrialsCallback): a worker that is free
    # while the last trials run may start one more, so at most 4 + (2 workers - 1).
    assert 4 <= len(finished) <= 5 and len(complete) >= 3
    # one job array (<job>_0, <job>_1), and both workers took trials from the shared study
    logs = {p.name.split("_log")[0] for p in tmp_path.glob("alarm_binary/*/.submitit/*/*_log.out")}
    assert len(logs) == 2 and len({name.rsplit("_", 2)[0] for name in logs}) == 1, logs
    assert len({t.user_attrs["worker"] for t in complete}) == 2

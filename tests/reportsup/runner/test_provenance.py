"""provenance.json: the fields are present and true (git commit and dirty tree, versions, host, SLURM)."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reportsup.contracts.run_dir import PROVENANCE_JSON, read_json
from reportsup.runner.provenance import cpu_info, git_state, record_provenance
from reportsup.version import __version__


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above tmp_path
    repo = tmp_path / "clone"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", "train.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "v1")
    return repo


def test_commit_is_head_and_the_dirty_flag_follows_edits(repo):
    clean = git_state(repo)
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert clean["dirty"] is False and clean["changes"] == []
    (repo / "train.py").write_text("print('v2')\n")
    dirty = git_state(repo)
    assert dirty["commit"] == clean["commit"] and dirty["dirty"] is True
    assert dirty["changes"] == [" M train.py"]


def test_outside_a_repository_the_commit_is_null_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    state = git_state(tmp_path)
    assert state["commit"] is None and state["dirty"] is None
    assert "not a usable git repository" in state["reason"] and "not a git repository" in state["reason"]


def test_without_git_the_commit_is_null_with_a_reason(repo, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable to be found
    state = git_state(repo)
    assert state == {"commit": None, "dirty": None, "repo": str(repo), "reason": "git is not installed"}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse4_2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    info = cpu_info(cpuinfo)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["flags"] == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    assert 1 <= info["usable_cpus"] <= info["logical_cpus"]


def test_train_py_writes_a_true_provenance_json(repo, tmp_path, monkeypatch):
    """The call train.py makes at the start of a run (rank 0): start time, this job's overrides."""
    import torch

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    started = datetime(2026, 12, 2, 18, 0, 0, tzinfo=UTC)
    run_dir = tmp_path / "outputs" / "alarm_binary" / "2026-12-02_18-00-00"
    path = record_provenance(run_dir, started, overrides=["seed=1", "demo=true"], repo=repo)
    assert path == run_dir / PROVENANCE_JSON
    prov = read_json(path)
    assert json.loads(path.read_text()) == prov
    assert prov["started"] == "2026-12-02T18:00:00+00:00"
    assert prov["git"]["commit"] == _git(repo, "rev-parse", "HEAD").strip() and prov["git"]["dirty"] is False
    assert prov["reportsup_version"] == __version__
    assert prov["overrides"] == ["seed=1", "demo=true"] and prov["command_line"] == sys.argv
    assert prov["hostname"] == socket.gethostname()
    assert prov["slurm"]["job_id"] == "4242" and prov["slurm"]["array_task_id"] == "3"
    assert prov["python"]["version"] == platform.python_version()
    assert torch.__version__.startswith(prov["packages"]["torch"])
    for name in (
        "lightning",
        "transformers",
        "monai",
        "torchmetrics",
        "hydra-core",
        "optuna",
        "numpy",
        "pandas",
    ):
        assert prov["packages"][name], name  # installed: a version string, not null
    assert prov["gpu"]["devices"] == (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )


def test_a_resumed_run_keeps_the_earlier_provenance_beside_the_new_one(repo, tmp_path):
    run_dir = tmp_path / "run"
    first = record_provenance(run_dir, datetime(2026, 1, 1, tzinfo=UTC), overrides=["seed=1"], repo=repo)
    (repo / "train.py").write_text("print('v2')\n")  # the code changed before the resume
    record_provenance(run_dir, datetime(2026, 1, 2, tzinfo=UTC), overrides=["ckpt_path=x"], repo=repo)
    kept = [p for p in run_dir.iterdir() if p.name != PROVENANCE_JSON]
    assert len(kept) == 1 and kept[0].name.startswith("provenance.") and kept[0].suffix == ".json"
    assert read_json(kept[0])["overrides"] == ["seed=1"] and read_json(kept[0])["git"]["dirty"] is False
    assert read_json(first)["overrides"] == ["ckpt_path=x"] and read_json(first)["git"]["dirty"] is True


def test_resources_used_records_stage_times_and_peak_memory_and_keeps_an_earlier_file(tmp_path):
    import torch

    from reportsup.contracts.run_dir import RESOURCES_USED
    from reportsup.runner.provenance import record_resources

    path = record_resources(tmp_path, {"fit": 12.345, "test": 1.5})
    assert path == tmp_path / RESOURCES_USED
    used = json.loads(path.read_text())
    assert used["wall_seconds"] == {"fit": 12.35, "test": 1.5}
    assert 0.05 < used["peak_rss_gib"] < 64  # this pytest process: torch alone is > 50 MiB
    if not torch.cuda.is_available():
        assert used["device"] == "cpu" and used["gpu_peak_allocated_gib"] is None
    record_resources(tmp_path, {"test": 2.0})  # a resumed run: the earlier file stays beside the new one
    assert json.loads(path.read_text())["wall_seconds"] == {"test": 2.0}
    assert len(list(tmp_path.glob("resources_used*.json"))) == 2

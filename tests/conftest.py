"""Shared fixtures: small synthetic tables, a tiny encoder, and a runner for train.py as users call it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from datamodules.synthetic.datasets.mri_reports import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, n_reports=800, seed=0)
    return out


# Small phantoms for fast head-CT tests: coarse voxels (3 x 3 x 6.4 mm), 10 scans of 7 patients.
SMALL_CT = {"shape": (80, 80, 24), "spacing": (3.0, 3.0, 6.4)}


@pytest.fixture(scope="session")
def ct_dir(tmp_path_factory) -> Path:
    """A synthetic head-CT data set (DICOM + NIfTI, reports, atlas); tests that modify it copy it first."""
    from datamodules.synthetic.datasets.ct_scans import write_ct_scan_dataset

    return write_ct_scan_dataset(
        tmp_path_factory.mktemp("ct") / "data",
        n_scans=10,
        seed=1,
        progress=False,
        n_reference_atlases=1,
        **SMALL_CT,
    )


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    """One paths.data_dir for the end-to-end demo runs, so the 160 CT phantoms are written (and
    validated) once per session (the demo recipes reuse what exists)."""
    return tmp_path_factory.mktemp("demo_data")


#: the spine demo's data set in the tests: 800 sessions instead of the demo's 2000 (the whole chain in
#: about 4 CPU minutes)
SPINE_TEST_SESSIONS = "data.demo.n_sessions=800"


@pytest.fixture(scope="session")
def spine_demo_data_dir(tmp_path_factory) -> Path:
    """One paths.data_dir for the spine demo runs (with :data:`SPINE_TEST_SESSIONS`): the synthetic
    sessions, the report NLP and its machine labels are made once per session."""
    return tmp_path_factory.mktemp("spine_data")


@pytest.fixture(scope="session")
def tiny_encoder(synthetic_dir):
    import pandas as pd

    from lightning_modules.common.encoders import tiny_bert_encoder

    texts = pd.read_csv(synthetic_dir / "reports.csv")["text"].tolist()
    return tiny_bert_encoder(
        texts,
        vocab_size=800,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )


def run_train(
    *overrides: str, cwd: Path = ROOT, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python train.py <overrides>`` as a user would; return the finished process (output captured)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"train.py {' '.join(overrides)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return proc


def single_run_dir(output_dir: Path, name: str) -> Path:
    runs = [p for p in (output_dir / name).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]

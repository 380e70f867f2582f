"""datamodules/synthetic/ is split by job: ``text/`` writes report text and ``images/`` renders arrays,
both without touching the disk; only ``datasets/`` (and ``writing``) write files.

Two checks: an ast walk (text/images import no writer and call no file-writing method), and the real
thing: their functions are run inside an empty working directory with a Python audit hook (PEP 578)
recording every file opened for writing, folder made, file renamed or removed while they run.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest

import datamodules.synthetic
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.labels.spine import FINDINGS

PACKAGE = Path(datamodules.synthetic.__file__).parent
#: the modules of the split by job; each must exist and import
SPLIT_MODULES = (
    "datamodules.synthetic.spine_sessions",
    "datamodules.synthetic.lesion_spec",
    "datamodules.synthetic.writing",
    "datamodules.synthetic.text.mri_reports",
    "datamodules.synthetic.text.ct_reports",
    "datamodules.synthetic.text.spine_reports",
    "datamodules.synthetic.images.head_phantom",
    "datamodules.synthetic.images.spine_radiographs",
    "datamodules.synthetic.datasets.mri_reports",
    "datamodules.synthetic.datasets.ct_reports",
    "datamodules.synthetic.datasets.ct_scans",
    "datamodules.synthetic.datasets.spine",
)
#: methods and functions that put something on disk
WRITING_CALLS = frozenset(
    {
        "open",
        "to_csv",
        "to_parquet",
        "to_json",
        "save",
        "save_as",
        "savez",
        "tofile",
        "write_text",
        "write_bytes",
        "mkdir",
        "makedirs",
        "write_once",
        "write_nifti",
        "write_dicom_series",
    }
)


def _all_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(datamodules.synthetic.__path__, "datamodules.synthetic.")
        if not m.ispkg
    ]


def _job_modules(job: str) -> list[Path]:
    return sorted((PACKAGE / job).glob("*.py"))


def test_every_module_of_the_split_imports():
    found = _all_modules()
    assert set(SPLIT_MODULES) <= set(found), sorted(set(SPLIT_MODULES) - set(found))
    for name in found:
        importlib.import_module(name)
    # The console scripts' mains live with the data sets, not with the text.
    for name in ("mri_reports", "ct_reports", "ct_scans", "spine"):
        assert callable(importlib.import_module(f"datamodules.synthetic.datasets.{name}").main)
    for path in _job_modules("text") + _job_modules("images"):
        module = importlib.import_module(f"datamodules.synthetic.{path.parent.name}.{path.stem}")
        assert not hasattr(module, "main"), f"{path}: a command's main belongs in datasets/"
        assert not hasattr(module, "demo_data_config"), f"{path}: demo_data_config belongs in datasets/"


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _called_names(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return out


@pytest.mark.parametrize("job", ["text", "images"])
def test_text_and_images_modules_neither_import_writers_nor_call_them(job):
    other = {"text": "images", "images": "text"}[job]
    forbidden = (
        "datamodules.synthetic.datasets",
        "datamodules.synthetic.writing",
        f"datamodules.synthetic.{other}",
    )
    modules = _job_modules(job)
    assert len([p for p in modules if p.name != "__init__.py"]) >= 2
    for path in modules:
        tree = ast.parse(path.read_text(), str(path))
        bad_imports = sorted(i for i in _imports(tree) if i.startswith(forbidden))
        assert not bad_imports, (
            f"{path} imports {bad_imports}: {job}/ must not depend on writers or on {other}/"
        )
        writes = sorted(_called_names(tree) & WRITING_CALLS)
        assert not writes, f"{path} calls {writes}: writing files is the job of datasets/"


# --- the dynamic check ----------------------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_DISK_EVENTS = frozenset(
    {
        "os.mkdir",
        "os.rename",
        "os.remove",
        "os.rmdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "shutil.rmtree",
    }
)
_recorded: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _recorded is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (
            any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        )
        # Python's own bytecode cache (an import made while the functions run) is not the module writing.
        if writing and "__pycache__" not in str(path):
            _recorded.append((event, str(path)))
    elif event in _DISK_EVENTS:
        _recorded.append((event, str(args[0])))


@pytest.fixture(scope="module")
def record_disk_writes() -> Callable[[], AbstractContextManager[list[tuple[str, str]]]]:
    sys.addaudithook(_audit)  # hooks cannot be removed; it records only inside ``recording()``

    @contextmanager
    def recording() -> Iterator[list[tuple[str, str]]]:
        global _recorded
        _recorded = []
        try:
            yield _recorded
        finally:
            _recorded = None

    return recording


def _run_text_and_images() -> dict[str, object]:
    """Call every public text/ and images/ entry point (and the samplers they take their input from)."""
    from datamodules.synthetic.images.head_phantom import ct_grid, head_template, render_phantom, voxel_matrix
    from datamodules.synthetic.images.spine_radiographs import render_views
    from datamodules.synthetic.lesion_spec import abnormality_matrix, sample_scan_spec
    from datamodules.synthetic.spine_sessions import sample_sessions
    from datamodules.synthetic.text.ct_reports import lesion_sentence, location_phrase, write_report
    from datamodules.synthetic.text.mri_reports import compose_report
    from datamodules.synthetic.text.spine_reports import write_report as write_spine_report

    rng, space = random.Random(3), LabelSpace()
    spec = sample_scan_spec("S1", "P1", rng, abnormal_rate=1.0)
    session = sample_sessions(2, seed=0).iloc[0].to_dict()
    phantom = render_phantom(spec, seed=0, shape=(24, 24, 8), spacing=(8.0, 8.0, 20.0), space=space)
    return {
        "mri": compose_report(["mass", "vascular"], True, 70, rng, follow_up=True, external=True).text,
        "ct": write_report(spec, rng, space)[0],
        "ct_phrase": location_phrase(spec.lesions[0], rng) + lesion_sentence(spec.lesions[0], rng),
        "spine": write_spine_report({f: 1 for f in FINDINGS}, rng) + write_spine_report({}, rng),
        "radiographs": render_views(session, np.random.default_rng(0), size=48),
        "phantom": phantom,
        "voxel_matrix": voxel_matrix(phantom.regions, phantom.lesion_bits, space),
        "matrix": abnormality_matrix(spec, space),
        "grid": ct_grid((4, 4, 2), (8.0, 8.0, 20.0)),
        "template": head_template(2, space),
    }


def test_text_and_images_write_no_files(record_disk_writes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with record_disk_writes() as writes:
        outputs = _run_text_and_images()
    assert not writes, f"text/ or images/ wrote to disk: {writes}"
    assert not any(tmp_path.iterdir()), sorted(tmp_path.iterdir())
    assert all(v is not None for v in outputs.values())  # the calls ran and returned something


def test_the_recorder_sees_a_data_set_writer(record_disk_writes, tmp_path, monkeypatch):
    """The check above can fail: the same recorder catches datasets/' writers."""
    from datamodules.synthetic.datasets.ct_scans import write_nifti

    monkeypatch.chdir(tmp_path)
    with record_disk_writes() as writes:
        write_nifti(np.zeros((2, 2, 2), np.int16), np.eye(4), Path("out") / "x.nii.gz")
    assert ("os.mkdir", "out") in writes
    assert any(event == "open" and path.endswith("x.nii.gz") for event, path in writes)

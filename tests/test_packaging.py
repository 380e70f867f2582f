"""What ``pip install`` puts in site-packages, and every ``reportsup-*`` command name still answering."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points

import pytest

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; on 3.10 these checks are skipped
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# reportsup-sbatch passes its arguments to Hydra as overrides (as train.py does): its help is Hydra's.
HYDRA_STYLE = {"reportsup-sbatch"}


def test_the_wheel_installs_three_packages_and_no_generic_names(tmp_path):
    """One distribution; ``tools`` or ``analysis`` in site-packages would collide with other packages."""
    # build from a copy: setuptools leaves build/ in the folder it builds
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("reportsup", "lightning_modules", "datamodules"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("reportsup-*.whl"))
    top = {
        name.split("/")[0]
        for name in zipfile.ZipFile(wheel).namelist()
        if not name.split("/")[0].endswith(".dist-info")
    }
    assert top == {"reportsup", "lightning_modules", "datamodules"}, top
    names = zipfile.ZipFile(wheel).namelist()
    assert "reportsup/api/__init__.py" in names and "datamodules/synthetic/__init__.py" in names


def test_every_console_script_is_installed_and_points_at_an_existing_main():
    installed = {
        ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("reportsup-")
    }
    assert set(SCRIPTS) <= set(installed), set(SCRIPTS) - set(installed)
    for name, target in SCRIPTS.items():
        assert installed[name].value == target, (
            f"{name}: installed {installed[name].value}, pyproject {target}"
        )
        assert callable(installed[name].load()), name


@pytest.mark.parametrize("name", sorted(set(SCRIPTS) - HYDRA_STYLE))
def test_every_console_script_prints_its_help(name):
    main = next(ep for ep in entry_points(group="console_scripts") if ep.name == name).load()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0, name
    assert "usage:" in out.getvalue(), name

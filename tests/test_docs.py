"""The documentation site builds strictly (mkdocs.yml, docs/): no broken link or anchor, no docstring
problem in the API reference, and a CLI reference that shows every console script's ``--help``.

The strict build takes about 30 s of CPU (55-107 s wall on 2 cores shared with other jobs), most of it
importing the console scripts' modules (torch, transformers, MONAI) for their ``--help``; the API
reference itself is read statically by griffe.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    """docs/hooks/cli_reference.py as a module (it is a file MkDocs loads by path, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log

    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    for name in scripts:
        if name.startswith("reportsup-"):
            assert f"usage: {name}" in cli, f"{name}'s --help is missing from the CLI reference"
    # the API reference is rendered from the code, not written by hand
    contracts = (site / "reference" / "contracts" / "index.html").read_text(encoding="utf-8")
    assert "check_run_split" in contracts
    # BENCHMARKS.md and CHANGELOG.md are included from the top level, not copied
    assert "reportsup-label" in (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "0.2.0" in (site / "changelog" / "index.html").read_text(encoding="utf-8")


def test_cli_help_of_a_script_that_does_not_exit_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "quiet_cli.py").write_text("def main(argv=None):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="reportsup-quiet --help returned"):
        _hook().command_help("reportsup-quiet", "quiet_cli:main")


def test_cli_help_is_captured_under_the_command_name(tmp_path, monkeypatch):
    (tmp_path / "loud_cli.py").write_text(
        "import argparse\n"
        "def main(argv=None):\n"
        "    argparse.ArgumentParser(description='says hello').parse_args(argv)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = _hook().command_help("reportsup-loud", "loud_cli:main")
    assert text.startswith("usage: reportsup-loud")
    assert "says hello" in text

"""The import directions of DESIGN.md ("Layout"), checked by an ast walk over every import of our code,
including imports inside functions (a lazy import is still a dependency).

Layers, bottom to top:

- ``reportsup.contracts`` (label spaces, the split protocol, run-directory names) and ``reportsup.version``
  import nothing else of ours, so everything may import them;
- ``reportsup.analysis`` works on arrays, tables and files: it imports neither ``lightning_modules`` nor
  ``datamodules`` nor anything above it;
- ``datamodules`` never imports ``lightning_modules``; ``datamodules.synthetic`` (demo and test data) is
  imported by nothing but itself, demo mode (``reportsup.runner``), the ``reportsup-synthetic-*`` commands,
  tests and benchmarks;
- ``lightning_modules`` may import ``datamodules`` (label definitions, transforms), never ``synthetic``;
- ``reportsup.api``, ``reportsup.runner``, ``reportsup.cli`` and the other ``reportsup`` modules sit on top;
  nothing imports ``reportsup.cli`` (tests may, to test the commands) and nothing imports ``train``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("reportsup", "lightning_modules", "datamodules", "train", "tools", "analysis")
SOURCE_DIRS = ("reportsup", "lightning_modules", "datamodules", "benchmarks", "tests")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of our packages in ``path``: (line, dotted module name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from reportsup import api` imports reportsup.api: count the names as sub-modules too
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None when it may)."""
    if within(imported, "tools") or within(imported, "analysis"):
        return "the top-level packages tools/ and analysis/ are gone: use reportsup.*"
    if within(imported, "train"):
        return "nothing imports train.py: it is the Hydra entry point (use reportsup.runner)"
    if (
        within(imported, "reportsup.cli")
        and not within(importer, "tests")
        and not within(importer, "reportsup.cli")
    ):
        return "nothing imports reportsup.cli: move what you need into a library module"
    if (
        within(imported, "reportsup.cli")
        and within(importer, "reportsup.cli")
        and not within(imported, "reportsup.cli.common")
        and importer != imported
    ):
        return "one command does not import another: move the shared part into a library module"
    if within(importer, "reportsup.contracts") or importer == "reportsup.version":
        if not (within(imported, "reportsup.contracts") or imported in ("reportsup", "reportsup.version")):
            return "the contracts are the bottom layer and import nothing else of ours"
    if within(importer, "reportsup.analysis"):
        allowed = ("reportsup.analysis", "reportsup.contracts", "reportsup.version")
        if not any(within(imported, a) for a in allowed) and imported != "reportsup":
            return "reportsup.analysis works on arrays, tables and files only"
    if within(imported, "datamodules.synthetic"):
        allowed = ("datamodules.synthetic", "reportsup.runner", "reportsup.cli", "tests", "benchmarks")
        if not any(within(importer, a) for a in allowed):
            return "synthetic data is for demo mode, tests and benchmarks only"
    if within(importer, "datamodules"):
        if within(imported, "lightning_modules"):
            return "datamodules never import lightning_modules"
        top = (
            "reportsup.api",
            "reportsup.runner",
            "reportsup.labelling",
            "reportsup.discretize",
            "reportsup.export",
        )
        if any(within(imported, t) for t in top):
            return "datamodules sit below the API and the runner"
    if within(importer, "lightning_modules"):
        top = (
            "reportsup.api",
            "reportsup.runner",
            "reportsup.labelling",
            "reportsup.discretize",
            "reportsup.export",
        )
        if any(within(imported, t) for t in top):
            return "lightning_modules sit below the API and the runner"
    return None


def python_files() -> list[Path]:
    files = [ROOT / "train.py"]
    for folder in SOURCE_DIRS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def test_imports_follow_the_layers_of_the_design():
    problems = []
    for path in python_files():
        importer = module_name(path)
        for line, imported in imports_of(path):
            why = violation(importer, imported)
            if why:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {imported}: {why}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("reportsup.contracts.splits", "datamodules.common.tables"),
        ("reportsup.analysis.metrics", "lightning_modules.common.evaluation"),
        ("datamodules.common.reports", "lightning_modules.common.encoders"),
        ("lightning_modules.alarm.module", "datamodules.synthetic.text.mri_reports"),
        ("reportsup.api.reports", "reportsup.cli.label_audit"),
        ("reportsup.runner.setup", "train"),
        ("datamodules.spine.datamodule", "tools.bulk_label"),
    ],
)
def test_the_check_catches_each_forbidden_direction(importer, imported):
    assert violation(importer, imported)


def test_allowed_directions_pass():
    for importer, imported in [
        ("datamodules.common.reports", "reportsup.contracts.splits"),
        ("lightning_modules.crossdl.damil.module", "datamodules.crossdl.head_ct.transforms"),
        ("reportsup.runner.setup", "datamodules.synthetic.datasets.ct_scans"),
        ("tests.reportsup.cli.test_ct_tools", "reportsup.cli.check_scans"),
        ("reportsup.api.reports", "lightning_modules.alarm.module"),
    ]:
        assert violation(importer, imported) is None, (importer, imported)


def test_configs_instantiate_nothing_from_cli_or_train():
    """A Hydra ``_target_`` is an import too: configs build library objects, never a command's."""
    problems = []
    for folder in ("configs", "experiments", "sweeps"):
        for path in sorted((ROOT / folder).rglob("*.yaml")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                target = line.split("_target_:", 1)[1].split("#")[0].strip() if "_target_:" in line else ""
                if target.split(".")[0] in OURS:
                    why = violation("reportsup.runner.config", target)
                    if why:
                        problems.append(f"{path.relative_to(ROOT)}:{n} {target}: {why}")
    assert not problems, "\n".join(problems)


def test_component_folders_hold_only_packages():
    """No file-name prefixes such as ``damil_`` at the top of lightning_modules/ and datamodules/: each
    component is a sub-package; and no top-level tools/ or analysis/ package remains."""
    for folder in ("lightning_modules", "datamodules"):
        files = sorted(p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py")
        assert not files, f"{folder}/ holds modules outside a component package: {files}"
    for gone in ("tools", "analysis"):
        assert not (ROOT / gone).exists(), f"top-level {gone}/ is back: it belongs in reportsup/"

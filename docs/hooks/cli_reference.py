"""MkDocs hook: writes the CLI reference page (``cli.md``) from the argument parsers at build time.

Every ``reportsup-*`` console script named in ``pyproject.toml`` ``[project.scripts]`` is imported through
``importlib.metadata`` and called in-process with ``["--help"]``; its help text becomes one section of
the page. The page therefore follows every refactor of a parser, and a script whose help cannot be
printed (an import error, a moved entry point, a parser that no longer accepts ``--help``) fails the
strict build with a warning naming the script.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.cli_reference")

PAGE = "reference/cli.md"
# argparse wraps help text to the terminal width; a fixed width keeps the page identical everywhere.
HELP_COLUMNS = "100"


def console_scripts(pyproject: Path) -> dict[str, str]:
    """The ``reportsup-*`` entries of ``[project.scripts]``: command name -> ``module:function``.

    Python 3.10 has no tomllib: there the installed metadata (written from the same table) stands in.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        scripts = installed_scripts()
    else:
        scripts = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"]
    return {name: target for name, target in sorted(scripts.items()) if name.startswith("reportsup-")}


def installed_scripts() -> dict[str, str]:
    """The console scripts the installed ``reportsup`` distribution declares (its metadata)."""
    return {ep.name: ep.value for ep in importlib.metadata.distribution("reportsup").entry_points}


@contextlib.contextmanager
def _as_command(name: str):
    """Run as if started as ``name`` from a terminal HELP_COLUMNS wide (argparse reads both)."""
    saved_argv0, saved_columns = sys.argv[0], os.environ.get("COLUMNS")
    sys.argv[0], os.environ["COLUMNS"] = name, HELP_COLUMNS
    try:
        yield
    finally:
        sys.argv[0] = saved_argv0
        if saved_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved_columns


def command_help(name: str, target: str) -> str:
    """The text ``<name> --help`` prints, from the entry point called in-process."""
    entry_point = importlib.metadata.EntryPoint(name=name, value=target, group="console_scripts")
    main = entry_point.load()
    out = io.StringIO()
    with _as_command(name), contextlib.redirect_stdout(out):
        try:
            main(["--help"])
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise RuntimeError(f"{name} --help exited with status {stop.code}") from stop
        else:
            raise RuntimeError(f"{name} --help returned without printing help and exiting")
    text = out.getvalue().strip()
    if not text:
        raise RuntimeError(f"{name} --help printed nothing")
    return text


def cli_page(scripts: dict[str, str]) -> tuple[str, list[str]]:
    """The Markdown page (one section per command: entry point and help text) and the failures."""
    lines = [
        "# Command-line reference",
        "",
        "Generated at build time: every `reportsup-*` console script of `pyproject.toml` is run with",
        "`--help` in-process, so this page always shows the parsers as they are in the code.",
        "",
    ]
    failures = []
    for name, target in scripts.items():
        lines += [f"## {name}", "", f"Entry point: `{target}`", ""]
        try:
            lines += ["```text", command_help(name, target), "```", ""]
        except Exception as error:  # noqa: BLE001 - any failure of one script is reported, named, and the rest go on
            failures.append(f"{name} ({target}): {type(error).__name__}: {error}")
            lines += ["Its help could not be generated.", ""]
    return "\n".join(lines), failures


def on_files(files: Files, config: MkDocsConfig) -> Files:
    pyproject = Path(config.config_file_path).parent / "pyproject.toml"
    scripts = console_scripts(pyproject)
    stale = {n: t for n, t in scripts.items() if installed_scripts().get(n) != t}
    if stale:
        # the scripts would still document fine, but `reportsup-<name>` would not exist on PATH
        log.warning(
            "pyproject.toml declares console scripts the installed package lacks or maps elsewhere: %s; "
            "reinstall with `.venv/bin/pip install -e .[dev]` (or `make docs`, which does it)",
            ", ".join(sorted(stale)),
        )
    content, failures = cli_page(scripts)
    for failure in failures:
        log.warning("CLI reference: %s", failure)
    files.append(File.generated(config, PAGE, content=content))
    return files

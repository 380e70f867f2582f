"""The labelling-folder contract: what ``reportsup-label`` (and ``reportsup-discretize`` into a folder)
writes, in one place, and the one reader of it. Writers and readers (the spine DataModule's
``data.machine_labels``, the API, benchmarks, tests) import the names from here instead of typing them out
(issue 21, item 7).

A labelling folder is a Parquet *dataset* plus its records beside it::

    <out>/parts/part-000000.parquet ...   the labels, one part per input chunk, one pinned Arrow schema:
                                         pandas.read_parquet(<out>/parts) and
                                         pyarrow.dataset.dataset(<out>/parts) read them directly
    <out>/manifest.json                  the labeller and every setting that changes outputs (written
                                         together with the first part, never rewritten)
    <out>/errors.csv                     rows not labelled: file row, report_id, reason (all runs)
    <out>/errors/part-000000.csv ...     the same per part (a rerun keeps the lists of parts it skips)
    <out>/runs.jsonl                     one line per run: shard, settings, counts, fp32 agreement

The dataset is ``<out>/parts``, not ``<out>``: Arrow would read the manifest and error lists as Parquet.
Temporary parts are written as ``parts/.part-*.parquet.tmp<pid>`` (Arrow skips names starting with ``.``
or ``_``, so a reader during a run sees only complete parts) and renamed when complete.

The manifest is the truth about the parts (issue 21, item 6): it is created once, atomically and only
together with the first part, so a run that fails before labelling anything leaves none; a later run
whose output-changing settings (:data:`OUTPUT_SETTINGS`) differ from it is refused with each difference
named (:func:`settings_differences`), instead of adding parts that the manifest would misdescribe.

Folders of the earlier layout (``part-*.parquet`` beside ``manifest.json`` in ``<out>``, which Arrow
cannot read as a dataset) are recognised and refused with the way out (:func:`check_layout`).

This module is the bottom layer: it imports nothing else of ours (stdlib, pandas and pyarrow only).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

LAYOUT = 2  # manifest["layout"]; folders without it were written by the earlier layout
PARTS = "parts"
MANIFEST = "manifest.json"
ERRORS = "errors.csv"
PART_ERRORS = "errors"  # folder of per-part error lists
RUNS_LOG = "runs.jsonl"
PART_GLOB = "part-*.parquet"
ERROR_COLUMNS = ["row", "report_id", "reason"]
#: Parquet schema metadata key of every part: the SHA-256 of the checkpoint that made it
CHECKPOINT_KEY = b"reportsup_checkpoint_sha256"

#: manifest keys whose values change the labels or the table's shape. A rerun into a folder must match
#: every one of them: parts are skipped by chunk index (input, chunk size, encoding), and the labels of a
#: part depend on the model (checkpoint, max length), the arithmetic (engine, precision, int8, compile) and
#: the columns written (probabilities, the column map). Batch sizes, device and shard count are not here:
#: they change which reports share a batch, not the labels (beyond float rounding).
OUTPUT_SETTINGS = (
    "checkpoint_sha256",
    "input",
    "input_bytes",
    "chunk_size",
    "encoding",
    "backend",
    "precision",
    "quantize",
    "compile",
    "max_length",
    "probabilities",
    "columns_map",
)


#: settings added after the layout: the value a manifest written before them implies (every label before
#: issue 23 came from torch), so that those folders still resume
IMPLIED_BEFORE_RECORDED = {"backend": "torch"}


class LabelFolderError(FileExistsError):
    """The folder holds labels this run must not add to (another layout or other settings)."""


class PartSchemaError(ValueError):
    """A chunk's labels do not fit the folder's pinned schema."""


def unique_suffix() -> str:
    """Process and thread id: writers of one folder (shards, threads) never share a temporary file."""
    return f"{os.getpid()}-{threading.get_ident()}"


def parts_dir(folder: str | Path) -> Path:
    """The dataset folder: ``<out>/parts``."""
    return Path(folder) / PARTS


def part_name(index: int) -> str:
    """``part-<index>.parquet`` (six digits: the parts sort in input order)."""
    return f"part-{index:06d}.parquet"


def part_path(folder: str | Path, index: int) -> Path:
    return parts_dir(folder) / part_name(index)


def temporary_part_path(folder: str | Path, index: int) -> Path:
    """Where a part is written before it is complete: a leading ``.`` so Arrow and pandas skip it."""
    return parts_dir(folder) / f".{part_name(index)}.tmp{unique_suffix()}"


def part_errors_path(folder: str | Path, index: int) -> Path:
    """The rows of chunk ``index`` that were not labelled."""
    return Path(folder) / PART_ERRORS / f"part-{index:06d}.csv"


def completed_parts(folder: str | Path) -> list[Path]:
    """The complete parts, in input order (temporary ones start with ``.`` and do not match)."""
    return sorted(parts_dir(folder).glob(PART_GLOB))


def check_layout(folder: str | Path) -> None:
    """Refuse a folder written in the earlier layout (parts beside ``manifest.json``): resuming into it would
    mix two layouts, and reading it as a dataset fails on the JSON and CSV files among the parts."""
    folder = Path(folder)
    old_parts = sorted(folder.glob(PART_GLOB))
    if old_parts:
        raise LabelFolderError(
            f"{folder} is a labelling folder of the earlier layout ({len(old_parts)} part-*.parquet beside "
            f"{MANIFEST}, not in {PARTS}/). Label into a new folder; to keep these labels as a dataset, move "
            f"them: mkdir -p {folder / PARTS} && mv {folder}/part-*.parquet {folder / PARTS}/ (their manifest "
            "lacks the settings this version checks, so do not resume into the moved folder)."
        )


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when no part has been written yet."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def settings_differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Each output-changing setting on which this run differs from the folder's manifest, as
    ``"<key>: <manifest's> in the folder, <this run's> now"``. A manifest of the earlier layout lacks
    most keys: a missing key counts as a difference (nothing tells what made those parts)."""
    missing = object()
    out = []
    for key in OUTPUT_SETTINGS:
        then, current = recorded.get(key, IMPLIED_BEFORE_RECORDED.get(key, missing)), now.get(key)
        if then is missing or then != current:
            shown = "not recorded" if then is missing else json.dumps(then)
            line = f"{key}: {shown} in the folder, {json.dumps(current)} now"
            if key == "checkpoint_sha256":  # a hash alone does not say which file: the paths too
                line += f" (the folder's checkpoint: {recorded.get('checkpoint')}; this run's: {now.get('checkpoint')})"
            out.append(line)
    return out


def refuse_differences(folder: str | Path, recorded: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Refuse to add parts to a folder whose manifest records other output-changing settings, naming each
    difference and the way out."""
    differences = settings_differences(recorded, now)
    if differences:
        raise LabelFolderError(
            f"{folder} holds labels made with other settings than this run's ({MANIFEST}): "
            + "; ".join(differences)
            + ". Its parts are what those settings made: rerun with them to resume, or label into a new "
            "output folder."
        )


def check_settings(folder: str | Path, now: Mapping[str, Any]) -> dict[str, Any] | None:
    """The folder's manifest when this run may add parts to it (None: no manifest yet); refuses when its
    output-changing settings differ from ``now``.

    A manifest without any complete part describes no labels (a run cut off between creating it and
    committing its first part, or a failed run of the earlier version, which wrote the manifest first):
    when its settings differ it is removed, and this run creates its own with its first part. Parts
    without a manifest are refused: nothing tells which settings made them."""
    folder = Path(folder)
    recorded = read_manifest(folder)
    parts = completed_parts(folder)
    if recorded is None:
        if parts:
            raise LabelFolderError(
                f"{folder}: {len(parts)} part(s) in {PARTS}/ but no {MANIFEST}, so nothing tells which "
                "checkpoint and settings made them. Label into a new output folder."
            )
        return None
    if not parts and settings_differences(recorded, now):
        (folder / MANIFEST).unlink(missing_ok=True)
        return None
    refuse_differences(folder, recorded, now)
    return recorded


def pin_schema(schema: pa.Schema) -> pa.Schema:
    """The schema every part of the folder is cast to. A column that is empty in the first chunk (Arrow type
    ``null``) is pinned as a string column, so that later chunks holding text still fit."""
    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def schema_to_text(schema: pa.Schema) -> str:
    """The schema as Arrow IPC bytes in base64, for the manifest."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` with ``schema``'s columns, order and types; a clear message naming ``where`` (the part and
    its file rows) when a column is missing, extra or of a type that cannot be cast."""
    names, expected = table.column_names, schema.names
    if sorted(names) != sorted(expected):
        raise PartSchemaError(
            f"{where}: columns {names} differ from the folder's pinned columns {expected} "
            "(label into a new folder, or rerun with the settings in its manifest.json)."
        )
    table = table.select(expected)
    for i, field in enumerate(schema):
        column = table.column(i)
        if column.type != field.type:
            try:
                table = table.set_column(i, field, column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise PartSchemaError(
                    f"{where}: column {field.name!r} holds {column.type} values that do not fit the folder's "
                    f"{field.type} ({str(err)[:200]}); make the input column one type throughout."
                ) from None
    return table.replace_schema_metadata(schema.metadata)


def write_manifest_once(folder: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create ``manifest.json`` atomically unless it exists; returns the manifest now in the folder (ours,
    or the one a concurrent shard created first: the caller checks its settings against it)."""
    path = Path(folder) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp{unique_suffix()}")
    tmp.write_text(json.dumps(manifest, indent=2))
    try:
        os.link(tmp, path)  # fails if it exists: two shards never overwrite each other's manifest
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


def write_part(folder: str | Path, index: int, table: pa.Table) -> Path:
    """Write part ``index`` to its temporary name; :func:`commit_part` renames it when complete."""
    tmp = temporary_part_path(folder, index)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, tmp)
    return tmp


def commit_part(folder: str | Path, index: int, tmp: Path) -> Path:
    """The part appears under its name only when complete (atomic rename)."""
    final = part_path(folder, index)
    os.replace(tmp, final)
    return final


def write_part_errors(folder: str | Path, index: int, errors: pd.DataFrame) -> None:
    """The rows of chunk ``index`` not labelled (none: no file)."""
    path = part_errors_path(folder, index)
    if len(errors):
        path.parent.mkdir(parents=True, exist_ok=True)
        errors.to_csv(path, index=False)
    else:
        path.unlink(missing_ok=True)


def merge_errors(folder: str | Path) -> int:
    """All per-part error lists in one ``errors.csv`` (rebuilt at each run's end, in file order, written
    atomically: concurrent shards each rebuild it); their count."""
    folder = Path(folder)
    frames = [pd.read_csv(p) for p in sorted((folder / PART_ERRORS).glob("part-*.csv"))]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ERROR_COLUMNS)
    tmp = folder / f".{ERRORS}.tmp{unique_suffix()}"
    table.to_csv(tmp, index=False)
    os.replace(tmp, folder / ERRORS)
    return len(table)


def log_run(folder: str | Path, record: Mapping[str, Any]) -> None:
    """Append one run's record to ``runs.jsonl`` (one line per run, every shard)."""
    with (Path(folder) / RUNS_LOG).open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def check_columns_map(mapping: Mapping[str, str], columns: Sequence[str]) -> None:
    """Refuse a column map that names a column the labeller does not write, gives an empty name, or makes
    two columns share a name (issue 21, item 7: output columns can be renamed, and a typo must not pass)."""
    unknown = [k for k in mapping if k not in columns]
    if unknown:
        raise ValueError(f"column map: no output column {unknown}; this labeller writes {list(columns)}.")
    empty = [k for k, v in mapping.items() if not isinstance(v, str) or not v.strip()]
    if empty:
        raise ValueError(f"column map: {empty} would get an empty or non-text name.")
    renamed = [mapping.get(c, c) for c in columns]
    clashes = sorted({n for n in renamed if renamed.count(n) > 1})
    if clashes:
        raise ValueError(
            f"column map: {clashes} would name two output columns (the map renames "
            f"{dict(mapping)} among {list(columns)})."
        )


def read_label_folder(folder: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The labels of a labelling folder (all complete parts, in input order) and its manifest; one clear
    message for the earlier layout or a folder without parts."""
    folder = Path(folder)
    check_layout(folder)
    parts = completed_parts(folder)
    if not parts:
        raise FileNotFoundError(
            f"{folder}: no {PARTS}/{PART_GLOB} (is it a reportsup-label output folder, and has a run finished a part?)."
        )
    manifest = read_manifest(folder) or {}
    schema = schema_from_text(manifest["schema"]) if "schema" in manifest else None
    # the file list, sorted, rather than the folder: input order does not rest on Arrow's discovery order
    table = ds.dataset([str(p) for p in parts], format="parquet", schema=schema).to_table()
    return table.to_pandas(), manifest

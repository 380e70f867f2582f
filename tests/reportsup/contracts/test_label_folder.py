"""The labelling-folder contract (issue 21, items 6 and 7): names, the pinned schema, the manifest created
once, the settings check, the column map and the one reader. Small Arrow tables, no model."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from reportsup.contracts import label_folder as lf


def _table(**columns) -> pa.Table:
    return pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)


def test_names_sort_in_input_order_and_temporary_parts_are_hidden(tmp_path):
    assert lf.part_path(tmp_path, 12) == tmp_path / "parts" / "part-000012.parquet"
    assert lf.temporary_part_path(tmp_path, 3).name.startswith(".part-000003.parquet.tmp")
    assert lf.part_errors_path(tmp_path, 3) == tmp_path / "errors" / "part-000003.csv"
    names = [lf.part_name(i) for i in (0, 9, 10, 100)]
    assert names == sorted(names)


def test_a_column_empty_in_the_first_chunk_is_pinned_as_text_and_later_text_fits():
    first = _table(report_id=["a"], patient_id=[None])
    assert pa.types.is_null(first.schema.field("patient_id").type)
    pinned = lf.pin_schema(first.schema)
    assert pinned.field("patient_id").type == pa.string()
    later = _table(patient_id=["P1"], report_id=["b"])  # other column order too
    assert lf.conform(later, pinned, "part 1").column_names == ["report_id", "patient_id"]


def test_a_chunk_that_does_not_fit_the_pinned_schema_is_named():
    pinned = lf.pin_schema(_table(report_id=["a"], scan_id=[1]).schema)
    with pytest.raises(
        lf.PartSchemaError,
        match=r"archive.csv, rows 52-101 \(part 1\): column 'scan_id' holds (large_)?string values that do not fit the folder's int64",
    ):
        lf.conform(_table(report_id=["b"], scan_id=["CT-7"]), pinned, "archive.csv, rows 52-101 (part 1)")
    with pytest.raises(lf.PartSchemaError, match=r"columns \['report_id'\] differ from the folder's pinned"):
        lf.conform(_table(report_id=["b"]), pinned, "part 2")


def test_the_schema_survives_the_manifest():
    schema = lf.pin_schema(_table(report_id=["a"], abnormal=pd.array([1], dtype="Int8")).schema)
    assert lf.schema_from_text(json.loads(json.dumps(lf.schema_to_text(schema)))).equals(
        schema, check_metadata=True
    )


def test_the_manifest_is_created_once_and_a_second_writer_gets_the_first(tmp_path):
    first = lf.write_manifest_once(tmp_path, {"precision": "32"})
    second = lf.write_manifest_once(tmp_path, {"precision": "bf16"})
    assert first == second == {"precision": "32"} == lf.read_manifest(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]  # no temporary file left


def test_every_output_setting_that_differs_is_named():
    recorded = {key: None for key in lf.OUTPUT_SETTINGS} | {"precision": "32", "chunk_size": 50}
    now = recorded | {"precision": "bf16", "chunk_size": 40, "batch_size": 7}
    assert lf.settings_differences(recorded, now) == [
        "chunk_size: 50 in the folder, 40 now",
        'precision: "32" in the folder, "bf16" now',
    ]
    # a manifest of the earlier version lacks the keys: each is a difference, never a silent match
    assert "max_length: not recorded in the folder, 512 now" in lf.settings_differences(
        {}, {"max_length": 512}
    )


def test_check_settings_replaces_a_manifest_without_parts_and_refuses_one_with_parts(tmp_path):
    now = {key: None for key in lf.OUTPUT_SETTINGS} | {"precision": "bf16"}
    lf.write_manifest_once(tmp_path, {"precision": "32"})
    assert lf.check_settings(tmp_path, now) is None and lf.read_manifest(tmp_path) is None
    lf.write_manifest_once(tmp_path, now)
    assert lf.check_settings(tmp_path, now) == now  # same settings, no part yet: kept
    lf.commit_part(tmp_path, 0, lf.write_part(tmp_path, 0, _table(report_id=["a"])))
    with pytest.raises(lf.LabelFolderError, match=r'precision: "bf16" in the folder, "32" now\. Its parts'):
        lf.check_settings(tmp_path, now | {"precision": "32"})


def test_column_maps_name_what_is_wrong():
    columns = ["report_id", "abnormal_prob", "abnormal"]
    lf.check_columns_map({"abnormal": "alarm_abnormal"}, columns)
    with pytest.raises(ValueError, match=r"no output column \['abnormal_x'\]; this labeller writes"):
        lf.check_columns_map({"abnormal_x": "y"}, columns)
    with pytest.raises(ValueError, match=r"\['report_id'\] would name two output columns"):
        lf.check_columns_map({"abnormal": "report_id"}, columns)
    with pytest.raises(ValueError, match=r"\['abnormal'\] would get an empty"):
        lf.check_columns_map({"abnormal": " "}, columns)


def test_the_reader_names_a_folder_without_parts(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no parts/part-\*.parquet \(is it a reportsup-label output folder"
    ):
        lf.read_label_folder(tmp_path)

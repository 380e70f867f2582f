"""The split protocol (reportsup/contracts/splits.py) and the four DataModules that use it: ALARM's
ReportDataModule, the discretizer's sentences, head CT and the spine images."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datamodules.common.reports import ReportDataModule
from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule
from datamodules.crossdl.sentences.datamodule import ReportSentenceDataModule
from datamodules.spine.datamodule import TEST_SET, SpineXrayDataModule
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import DATA_SUMMARY, SPLITS_CSV
from reportsup.contracts.splits import (
    SPLIT_NAMES,
    SUMMARY_KEY,
    SplitError,
    SplitProtocol,
    check_learnable,
    check_run_split,
    holdout_of,
    patient_kfold,
    patient_split,
)

EXCLUDE = SplitProtocol(holdout_order="exclude_first")


def _table(n_patients=60, seed=0):
    """Reports (``id``, ``patient_id``) of ``n_patients`` patients with 1 to 3 reports each."""
    rng = np.random.default_rng(seed)
    rows = [
        {"id": f"R{p}_{e}", "patient_id": f"P{p}"}
        for p in range(n_patients)
        for e in range(rng.integers(1, 4))
    ]
    return pd.DataFrame(rows)


def _assign(table, protocol=EXCLUDE, holdouts=None, **kwargs):
    return protocol.assign(table, holdouts, source="reports.csv", **kwargs)


# ------------------------------------------------------------------------------- the protocol
@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("order", ["exclude_first", "split_first"])
def test_no_patient_in_two_splits_nor_in_a_split_and_a_holdout(seed, order):
    table = _table(seed=seed)
    holdout = pd.DataFrame({"id": ["H1", "H2"], "patient_id": ["P3", "P40"]})
    result = _assign(table, SplitProtocol(holdout_order=order, seed=seed), {"external": holdout})
    written = result.table()
    assert written.groupby("patient_id")["split"].nunique().max() == 1
    assert set(written["split"]) == {*SPLIT_NAMES, "external"}
    dev = written[written["split"].isin(SPLIT_NAMES)]
    assert not set(dev["patient_id"]) & {"P3", "P40"}
    counts = dev.groupby("patient_id")["split"].first().value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.6, abs=0.03)


def test_split_is_deterministic_and_ignores_row_order():
    table = _table()
    first = _assign(table, SplitProtocol("exclude_first", seed=3)).split
    shuffled = table.sample(frac=1, random_state=1)
    again = _assign(shuffled, SplitProtocol("exclude_first", seed=3)).split
    assert (first == again.loc[first.index]).all()
    assert not (first == _assign(table, SplitProtocol("exclude_first", seed=4)).split).all()


def test_the_draw_is_pinned():
    """The assignment of a seed never changes between versions (values from the code before the split
    protocol was unified, commit 2664ae1): a resumed run or a rerun of a paper experiment gets its split."""
    patients = [f"P{i}" for i in range(10)]
    assert patient_split(patients, 0) == {
        **dict.fromkeys(["P4", "P6", "P2", "P7", "P3", "P5"], "train"),
        **dict.fromkeys(["P9", "P0"], "val"),
        **dict.fromkeys(["P8", "P1"], "test"),
    }
    assert patient_kfold(patients, 7, 5, 1) == {
        **dict.fromkeys(["P8", "P0", "P2", "P4", "P5", "P9"], "train"),
        **dict.fromkeys(["P3", "P6"], "val"),
        **dict.fromkeys(["P7", "P1"], "test"),
    }


def test_kfold_puts_every_patient_in_exactly_one_test_fold():
    patients = [f"P{i}" for i in range(50)]
    tests = [p for fold in range(5) for p, s in patient_kfold(patients, 0, 5, fold).items() if s == "test"]
    assert sorted(tests) == sorted(patients)


def test_the_two_holdout_orders_differ_as_documented():
    """exclude_first (ALARM, Fig. 1) draws over the patients left after the hold-out patients leave;
    split_first draws over every patient, so adding a hold-out later moves nobody else."""
    table = _table(n_patients=40)
    holdout = pd.DataFrame({"id": ["H1", "H2", "H3"], "patient_id": ["P1", "P2", "P30"]})
    without = table[~table["patient_id"].isin(holdout["patient_id"])]
    exclude = _assign(table, SplitProtocol("exclude_first", seed=5), {"prospective": holdout})
    split = _assign(table, SplitProtocol("split_first", seed=5), {"prospective": holdout})
    # exclude_first = the split of the table that never had those patients
    alone = _assign(without, SplitProtocol("exclude_first", seed=5)).split
    assert (exclude.split[without.index] == alone).all()
    # split_first = the split of the whole table, with the hold-out patients' rows taken out
    whole = _assign(table, SplitProtocol("split_first", seed=5)).split
    assert (split.split[without.index] == whole[without.index]).all()
    assert (split.split[~table.index.isin(without.index)] == "prospective").all()
    # ... and on this table they are different splits
    assert (exclude.split[without.index] != split.split[without.index]).any()
    assert exclude.removed() == split.removed() == {"prospective": len(table) - len(without)}


def test_unusable_rows_take_no_part_and_holdout_patients_leave_even_when_unusable():
    table = _table(n_patients=30).assign(usable=True)
    table.loc[table["patient_id"] == "P7", "usable"] = False  # e.g. reports with no known label
    holdout = pd.DataFrame({"id": ["H1", "H2"], "patient_id": ["P9", "P10"], "usable": [True, False]})
    result = _assign(table, holdouts={"site": holdout})
    assert (result.split[table["patient_id"] == "P7"] == "").all()
    assert (result.split[table["patient_id"].isin(["P9", "P10"])] == "site").all()
    written = result.table()
    assert "P7" not in set(written["patient_id"])
    assert written.loc[written["split"] == "site", "id"].tolist() == ["H1"]  # usable hold-out rows only
    # exclude_first: the draw is that of the usable rows of the patients outside the hold-out
    stay = table["usable"] & ~table["patient_id"].isin(["P9", "P10"])
    assert (result.split[stay] == _assign(table[stay]).split).all()


def test_holdout_of_names_the_first_set_with_the_patient():
    ids = pd.Series(["p1", "p2", "p3"])
    member = holdout_of(
        ids, {"a": pd.DataFrame({"patient_id": ["p2"]}), "b": pd.DataFrame({"patient_id": ["p2", "p3"]})}
    )
    assert member.tolist() == ["", "a", "b"]


def test_empty_split_and_bad_settings_are_split_errors_naming_the_file_and_the_fix():
    with pytest.raises(
        SplitError, match=r"reports\.csv: the val split is empty \(\d+ rows of 5 patients.*change data\.split"
    ):
        _assign(_table(n_patients=5), SplitProtocol("exclude_first", fractions=(0.9, 0.0, 0.1)))
    # a split not required (the spine images have no drawn test split) may be empty
    _assign(
        _table(n_patients=10),
        SplitProtocol("exclude_first", fractions=(0.9, 0.1, 0.0)),
        required=("train", "val"),
    )
    with pytest.raises(SplitError, match="sum to 1"):
        SplitProtocol("exclude_first", fractions=(0.5, 0.2, 0.2))
    with pytest.raises(SplitError, match="at least 3"):
        _assign(_table(n_patients=2))
    with pytest.raises(SplitError, match=r"holdout_order='later': choose exclude_first .* or split_first"):
        SplitProtocol.from_config({"seed": 1}, holdout_order="later")
    with pytest.raises(SplitError, match=r"data\.split: unknown key\(s\) \['fractoins'\]"):
        SplitProtocol.from_config({"fractoins": [0.5, 0.5, 0]}, holdout_order="split_first")
    with pytest.raises(SplitError, match=r"data\.holdouts\.val: 'val' names a development split"):
        _assign(_table(), holdouts={"val": _table(3)})
    assert (
        SplitProtocol.from_config({"seed": 2, "holdout_order": "split_first"}, "exclude_first").holdout_order
        == "split_first"
    )


def test_learnability_errors_name_the_file_and_the_label():
    targets = np.array([[0.0, 1.0], [1.0, 1.0], [np.nan, 1.0]])
    check_learnable(targets[:, :1], ["a"], "t.csv")
    with pytest.raises(
        SplitError, match=r"t\.csv: label 'b' is 1 for every training session .*drop the label"
    ):
        check_learnable(targets, ["a", "b"], "t.csv", what="session")
    with pytest.raises(SplitError, match=r"t\.csv: label 'a' has no known value in the training split"):
        check_learnable(np.full((3, 1), np.nan), ["a"], "t.csv")


def test_split_file_with_patient_in_two_splits_is_rejected(tmp_path):
    table = pd.DataFrame({"id": ["r1", "r2", "r3"], "patient_id": ["p1", "p1", "p2"]})
    f = tmp_path / "split.csv"
    pd.DataFrame({"id": ["r1", "r2", "r3"], "split": ["train", "test", "val"]}).to_csv(f, index=False)
    with pytest.raises(SplitError, match="p1"):
        _assign(table, SplitProtocol("exclude_first", file=str(f)))


def test_a_run_split_refuses_moved_rows_and_holdouts_of_seen_patients(tmp_path):
    path = tmp_path / "splits.csv"
    recorded = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "patient_id": ["p", "q", "r", "s"],
            "split": ["train", "val", "test", "test"],
        }
    )
    recorded.to_csv(path, index=False)
    check_run_split(path, recorded)  # the same split: fine
    # A test-only run scoring a new set: a test patient left for the hold-out, new patients joined it.
    later = pd.DataFrame(
        {"id": ["a", "b", "c", "d", "x"], "patient_id": ["p", "q", "r", "s", "new"]},
    ).assign(split=["train", "val", "test", "prospective", "prospective"])
    check_run_split(path, later)
    with pytest.raises(SplitError, match=r"1 row\(s\) are in another split .*'c': test -> val"):
        check_run_split(path, later.assign(split=["train", "val", "val", "test", "prospective"]))
    with pytest.raises(
        SplitError, match=r"data\.holdouts\.prospective: 1 patient\(s\) \(e\.g\. 'q'\) trained"
    ):
        check_run_split(path, later.assign(split=["train", "prospective", "test", "test", "prospective"]))


# ------------------------------------------------------------------------------- the DataModules
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_datamodule_holdout_patients_never_in_train_val_test(synthetic_dir, tmp_path, seed):
    dm = ReportDataModule(
        path=str(synthetic_dir / "reports.csv"),
        labels=["abnormal"],
        holdouts={
            "image_label": str(synthetic_dir / "image_labels_abnormal.csv"),
            "external_site": str(synthetic_dir / "external_site.csv"),
        },
        split={"seed": seed},
        output_dir=str(tmp_path),
    )
    dm.setup()
    holdout_patients = set(dm.datasets["image_label"].table["patient_id"])
    assert (
        dm.summary["removed_for_holdout_patients"]["image_label"] > 0
    )  # the synthetic data makes this matter
    dev = {name: set(dm.datasets[name].table["patient_id"]) for name in ("train", "val", "report_label")}
    for name, patients in dev.items():
        assert not patients & holdout_patients, name
    assert (
        not dev["train"] & dev["val"]
        and not dev["train"] & dev["report_label"]
        and not dev["val"] & dev["report_label"]
    )
    splits = pd.read_csv(tmp_path / SPLITS_CSV, dtype=str)
    assert list(splits.columns) == ["id", "patient_id", "split"]
    assert splits.groupby("patient_id")["split"].nunique().max() == 1


def _alarm(tmp_path, data, seed, run, **split):
    return ReportDataModule(
        path=str(data / "reports.csv"),
        labels=["abnormal"],
        holdouts={"image_label": str(data / "image_labels_abnormal.csv")},
        split={"seed": seed, **split},
        output_dir=str(run),
    )


def _sentences(tmp_path, data, seed, run, **split):
    """40 patients with one report of three annotated Findings sentences each."""
    folder = tmp_path / "sentences"
    if not folder.exists():
        folder.mkdir()
        space, rng = LabelSpace(), np.random.default_rng(0)
        columns = [*space.regions, *space.types]
        sentences = [
            {
                "sentence_id": f"R{p}_{k}",
                "report_id": f"R{p}",
                "patient_id": f"P{p}",
                "text": f"Finding {k} of patient {p}.",
                **dict(zip(columns, rng.integers(0, 2, len(columns)).tolist(), strict=True)),
            }
            for p in range(40)
            for k in range(3)
        ]
        reports = [
            {"report_id": f"R{p}", "patient_id": f"P{p}", "text": "Findings: normal."} for p in range(40)
        ]
        pd.DataFrame(sentences).to_csv(folder / "sentences.csv", index=False)
        pd.DataFrame(reports).to_csv(folder / "reports.csv", index=False)
    return ReportSentenceDataModule(
        str(folder / "sentences.csv"),
        str(folder / "reports.csv"),
        split={"seed": seed, **split},
        output_dir=str(run),
    )


def _head_ct(tmp_path, data, seed, run, **split):
    """12 patients with one tiny NIfTI scan each and the labels in the manifest (no masks)."""
    folder = tmp_path / "ct"
    if not folder.exists():
        folder.mkdir()
        rng = np.random.default_rng(0)
        columns = LabelSpace().matrix_columns()
        rows = []
        for i in range(12):
            image = folder / f"scan{i}.nii.gz"
            nib.save(nib.Nifti1Image(rng.uniform(0, 80, (12, 12, 6)).astype(np.float32), np.eye(4)), image)
            labels = dict(zip(columns, rng.integers(0, 2, len(columns)).tolist(), strict=True))
            rows.append({"scan_id": f"S{i}", "patient_id": f"P{i}", "image": str(image), **labels})
        pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return HeadCTDataModule(
        str(folder / "manifest.csv"),
        region_mask_column=None,
        voxel_mask_column=None,
        spatial_size=(8, 8, 4),
        cache_dir=str(tmp_path / "ct_cache"),
        validate_scans=False,
        split={"seed": seed, **split},
        output_dir=str(run),
    )


def _spine(tmp_path, data, seed, run, **split):
    """30 patients with two sessions each (coronal + sagittal PNG), the first session of patients 0-4 the
    image test set, machine labels for every report."""
    folder = tmp_path / "spine"
    if not folder.exists():
        folder.mkdir()
        # one file per view: the spine DataModule refuses a session whose two views are the same file
        for k, view in enumerate(("coronal", "sagittal")):
            image = np.zeros((16, 16), dtype=np.uint8)
            image[4:12, 6 + k : 10 + k] = 200
            Image.fromarray(image).save(folder / f"{view}.png")
        views, machine, test = [], [], []
        for p in range(30):
            for s in range(2):
                sid = f"S{p}_{s}"
                for view in ("coronal", "sagittal"):
                    views.append(
                        {
                            "session_id": sid,
                            "patient_id": f"P{p}",
                            "view": view,
                            "image": f"{view}.png",
                            "report_id": f"R{sid}",
                        }
                    )
                machine.append({"report_id": f"R{sid}", "scoliosis": (p + s) % 2})
                if p < 5 and s == 0:
                    test.append({"session_id": sid, "scoliosis": p % 2})
        pd.DataFrame(views).to_csv(folder / "views.csv", index=False)
        pd.DataFrame(machine).to_csv(folder / "machine.csv", index=False)
        pd.DataFrame(test).to_csv(folder / "test_labels.csv", index=False)
    return SpineXrayDataModule(
        str(folder / "views.csv"),
        labels=["scoliosis"],
        machine_labels=str(folder / "machine.csv"),
        test_labels=str(folder / "test_labels.csv"),
        image_size=(16, 16),
        augment=None,
        split={"seed": seed, "val_fraction": 0.2, **split},
        num_workers=0,
        output_dir=str(run),
    )


@pytest.mark.parametrize(
    "make", [_alarm, _sentences, _head_ct, _spine], ids=["alarm", "sentences", "head_ct", "spine"]
)
def test_a_resumed_run_keeps_its_split_in_every_datamodule(make, synthetic_dir, tmp_path):
    run = tmp_path / "run"
    make(tmp_path, synthetic_dir, 0, run).setup()
    written = pd.read_csv(run / SPLITS_CSV, dtype=str)
    assert list(written.columns) == ["id", "patient_id", "split"]
    assert written.groupby("patient_id")["split"].nunique().max() == 1  # by patient, hold-outs included
    make(tmp_path, synthetic_dir, 0, run).setup()  # a resumed run with the same settings: accepted
    assert pd.read_csv(run / SPLITS_CSV, dtype=str).equals(written)  # and the file is left as it was
    with pytest.raises(
        SplitError, match=r"splits\.csv: \d+ row\(s\) are in another split than when this run started"
    ):
        make(tmp_path, synthetic_dir, 1, run).setup()  # another seed moves rows: refused, not overwritten
    assert pd.read_csv(run / SPLITS_CSV, dtype=str).equals(written)


def _sentences_by_row(tmp_path, data, seed, run, **split):
    """The discretizer's paper unit: sentences drawn by row, reports by patient."""
    return _sentences(tmp_path, data, seed, run, unit="row", **split)


@pytest.mark.parametrize(
    "make",
    [_alarm, _sentences, _sentences_by_row, _head_ct, _spine],
    ids=["alarm", "sentences", "sentences_by_row", "head_ct", "spine"],
)
def test_every_datamodule_draws_a_stratified_split_and_records_it(make, synthetic_dir, tmp_path):
    """data.split.stratify=true (issue 22 item 1) through each DataModule's own label matrix: ALARM's
    report labels, the discretizer's region/type cells (unit: row), head CT's scan-level types, the
    spine's training labels; by patient, recorded in data_summary.json, resumed with the same setting."""
    run = tmp_path / "run"
    make(tmp_path, synthetic_dir, 0, run, stratify=True).setup()
    written = pd.read_csv(run / SPLITS_CSV, dtype=str)
    dev = written.loc[written["split"].isin(SPLIT_NAMES)]
    if make is not _sentences_by_row:  # unit: row draws each sentence on its own (the paper's unit)
        assert dev.groupby("patient_id")["split"].nunique().max() == 1
    section = json.loads((run / DATA_SUMMARY).read_text())[SUMMARY_KEY]
    if make is _sentences_by_row:  # two draws, one section each: the sentences by row, the reports by patient
        assert len(section) == 2 and section[str(tmp_path / "sentences" / "sentences.csv")]["unit"] == "row"
        section = section[str(tmp_path / "sentences" / "sentences.csv")]
    assert section["stratify"] is True and sum(section["strata"].values()) > 0
    expected = {_head_ct: set(LabelSpace().types), _spine: {"scoliosis"}, _alarm: {"abnormal"}}
    if make in expected:
        assert set(next(iter(section["positives"].values()))) == expected[make]
    make(tmp_path, synthetic_dir, 0, run, stratify=True).setup()  # a resumed run, same setting: accepted
    assert pd.read_csv(run / SPLITS_CSV, dtype=str).equals(written)


def test_spine_split_lists_the_test_patients_as_their_holdout_and_checks_a_trained_model(
    synthetic_dir, tmp_path
):
    dm = _spine(tmp_path, synthetic_dir, 0, tmp_path / "run")
    dm.setup()
    written = pd.read_csv(tmp_path / "run" / SPLITS_CSV, dtype=str)
    test_patients = {f"P{p}" for p in range(5)}
    assert set(written.loc[written["split"] == TEST_SET, "patient_id"]) == test_patients
    assert not set(written.loc[written["split"].isin(SPLIT_NAMES), "patient_id"]) & test_patients
    assert set(written["split"]) == {"train", "val", TEST_SET}  # val_fraction 0.2 of 25 patients: no test
    # A run whose splits.csv says a now-test patient trained the model: refused.
    written.loc[written["patient_id"] == "P1", "split"] = "train"
    written.drop_duplicates("id").to_csv(tmp_path / "run" / SPLITS_CSV, index=False)
    with pytest.raises(
        SplitError, match=r"data\.holdouts\.image_test: 1 patient\(s\) \(e\.g\. 'P1'\) trained"
    ):
        _spine(tmp_path, synthetic_dir, 0, tmp_path / "run").setup()
    with pytest.raises(SplitError, match=r"data\.split\.holdout_order=split_first: the spine"):
        SpineXrayDataModule(**{**_spine_kwargs(tmp_path), "split": {"holdout_order": "split_first"}})


def _spine_kwargs(tmp_path):
    folder = tmp_path / "spine"
    return {
        "views": str(folder / "views.csv"),
        "labels": ["scoliosis"],
        "machine_labels": str(folder / "machine.csv"),
        "test_labels": str(folder / "test_labels.csv"),
    }


def test_spine_learnability_is_a_split_error_naming_the_label_source(synthetic_dir, tmp_path):
    _spine(tmp_path, synthetic_dir, 0, tmp_path / "run")  # writes the data
    machine = pd.read_csv(tmp_path / "spine" / "machine.csv").assign(scoliosis=1)
    machine.to_csv(tmp_path / "spine" / "machine.csv", index=False)
    with pytest.raises(SplitError, match=r"machine\.csv: label 'scoliosis' is 1 for every training session"):
        _spine(tmp_path, synthetic_dir, 0, tmp_path / "run2").setup()


# --- a paper's own unit (Cross-DL's sentences at random) and the paper's training sizes ------------------
def test_a_row_level_split_draws_rows_not_patients_and_gives_the_papers_counts(tmp_path):
    """4,807 sentences at 0.6241 / 0.1881 / 0.1878: exactly the paper's 3,000 / 904 / 903."""
    rows = pd.DataFrame(
        {"id": [f"S{i}" for i in range(4807)], "patient_id": [f"P{i // 7}" for i in range(4807)]}
    )
    protocol = SplitProtocol.from_config(
        {"unit": "row", "fractions": [0.6241, 0.1881, 0.1878], "seed": 3}, holdout_order="split_first"
    )
    split = protocol.assign(rows, source="sentences.csv").split
    assert split.value_counts().to_dict() == {"train": 3000, "val": 904, "test": 903}
    assert split.groupby(rows["patient_id"]).nunique().max() > 1  # patients straddle splits: by row
    shuffled = rows.sample(frac=1, random_state=1)  # a pure function of (seed, fractions, ids)
    again = protocol.assign(shuffled, source="sentences.csv").split
    assert (again.sort_index() == split).all()
    # Hold-out patients still leave whole, whatever the unit.
    held = {"prospective": pd.DataFrame({"id": ["X1"], "patient_id": ["P3"]})}
    with_holdout = protocol.assign(rows, held, source="sentences.csv").split
    assert set(with_holdout[rows["patient_id"] == "P3"]) == {"prospective"}
    # A split file under unit=row may put one patient's rows in two splits; under unit=patient it may not.
    rows.assign(split=split).to_csv(tmp_path / "split.csv", index=False)
    file_split = SplitProtocol(holdout_order="split_first", unit="row", file=str(tmp_path / "split.csv"))
    assert (file_split.assign(rows, source="s.csv").split == split).all()
    with pytest.raises(SplitError, match="has rows in more than one split.*data.split.unit=row"):
        SplitProtocol(holdout_order="split_first", file=str(tmp_path / "split.csv")).assign(
            rows, source="s.csv"
        )
    with pytest.raises(SplitError, match=r"data\.split\.unit='sentence'.*patient.*row"):
        SplitProtocol.from_config({"unit": "sentence"}, holdout_order="split_first")


def test_run_splits_of_two_draws_concatenate_with_the_holdout_rows_once():
    rows = _table(20)
    held = {"h": pd.DataFrame({"id": ["H1"], "patient_id": ["P0"]})}
    by_row = SplitProtocol(holdout_order="split_first", unit="row").assign(rows, held, source="a")
    by_patient = SplitProtocol(holdout_order="split_first").assign(
        rows.assign(id=rows["id"] + "r"), held, source="b"
    )
    both = type(by_row).concat([by_row, by_patient], "a")
    assert len(both.split) == 2 * len(rows) and list(both.split[: len(rows)]) == list(by_row.split)
    assert (both.table()["split"] == "h").sum() == 1


def test_max_train_scans_above_the_training_split_trains_on_all_of_it(tmp_path, caplog):
    """damil_trainsize asks for the paper's 28,472 scans; the data holds fewer: all of them, said in the log."""
    dm = _head_ct(tmp_path, None, 0, tmp_path / "run")
    dm.max_train_scans = 28472
    with caplog.at_level("INFO"):
        dm.setup()
    available = dm.summary["train_scans_available"]
    assert len(dm.datasets["train"]) == available > 0 and dm.summary["max_train_scans"] == 28472
    assert f"data.max_train_scans=28472 but the training split holds {available} scans" in caplog.text
    small = _head_ct(tmp_path, None, 0, tmp_path / "run2")
    small.max_train_scans = 3
    small.setup()
    trained = set(small.tables["train"]["scan_id"])
    assert len(trained) == 3 and trained <= set(dm.tables["train"]["scan_id"])  # nested in the larger set

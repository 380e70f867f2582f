"""The synthetic lumbar-spine data: sessions and their two truths (``spine_sessions``), Italian reports
(``text/spine_reports``), radiograph phantoms that show every finding (``images/spine_radiographs``), and
the written files with the Figure 1 roles (``datasets/spine``), all under datamodules/synthetic/."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from datamodules.spine.radiographs import read_radiograph
from datamodules.synthetic.datasets.spine import demo_data_config, main, session_rng, write_spine_dataset
from datamodules.synthetic.images.spine_radiographs import FINDING_VIEWS, MAX_VALUE, render_views
from datamodules.synthetic.spine_sessions import sample_sessions
from datamodules.synthetic.text.spine_reports import write_report
from reportsup.contracts.labels.spine import FINDINGS, VIEWS

SEED = 1
IMAGE_COLUMNS = [f"{f}_image" for f in FINDINGS]
REPORT_COLUMNS = [f"{f}_report" for f in FINDINGS]

# Word stems a reader would look for when a finding is stated positive.
POSITIVE_STEMS = {
    "instrumentation": ("sintesi", "viti", "stabilizzazione", "artrodesi"),
    "loss_of_lordosis": ("lordosi", "rettilineizzazione"),
    "facet_sclerosis": ("faccette", "interapofisari", "zigoapofisari"),
    "sij_degeneration": ("sacroiliac",),
    "osteophytosis": ("osteofit",),
    "osteoporosis": ("demineralizzazione", "osteopenia", "osteoporosi", "densità minerale"),
    "diffuse_degeneration": ("spondiloartrosi", "spondilosi"),
    "scoliosis": ("scolio",),
    "fractures": ("frattura", "cedimento"),
    "disc_narrowing": ("spazio discale", "spazi intersomatici", "spazio intersomatico"),
    "anterolisthesis": ("anterolistesi", "spondilolistesi", "scivolamento anteriore"),
    "retrolisthesis": ("retrolistesi", "scivolamento posteriore"),
}


@pytest.fixture(scope="module")
def sessions600() -> pd.DataFrame:
    return sample_sessions(600, SEED)


@pytest.fixture(scope="module")
def reports600(sessions600) -> list[tuple[dict[str, int], str]]:
    out = []
    for i, row in enumerate(sessions600.to_dict("records")):
        truth = {f: row[f"{f}_report"] for f in FINDINGS}
        out.append((truth, write_report(truth, random.Random(i))))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 sessions at 128 px, half of them DICOM so both photometric interpretations occur."""
    out = tmp_path_factory.mktemp("spine") / "data"
    return write_spine_dataset(out, n_sessions=40, seed=SEED, image_size=128, dicom_fraction=0.5)


def _normal_session(anatomy_seed: int) -> dict:
    return {"session_id": "S00001", "patient_id": "P00001", "anatomy_seed": anatomy_seed} | {
        c: 0 for c in IMAGE_COLUMNS
    }


# -- sessions -------------------------------------------------------------------------------------------
def test_sessions_are_seeded_with_both_truths_and_patients_of_one_to_three_sessions():
    a, b = sample_sessions(80, SEED), sample_sessions(80, SEED)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(sample_sessions(80, SEED + 1))
    expected = ["session_id", "patient_id", "report_id", "age", *IMAGE_COLUMNS, *REPORT_COLUMNS]
    assert set(expected) <= set(a.columns) and len(a) == 80
    assert a["session_id"].iloc[0] == "S00001" and a["report_id"].iloc[0] == "R00001"
    assert a["session_id"].is_unique and a["report_id"].is_unique
    per_patient = a.groupby("patient_id").size()
    assert per_patient.between(1, 3).all() and (per_patient > 1).any()
    assert set(np.unique(a[IMAGE_COLUMNS + REPORT_COLUMNS])) <= {0, 1}
    # the bones are the patient's: one anatomy seed per patient
    assert (a.groupby("patient_id")["anatomy_seed"].nunique() == 1).all()


def test_report_noise_flips_findings_at_its_rate():
    clean = sample_sessions(300, SEED, report_noise=0.0)
    assert (clean[IMAGE_COLUMNS].to_numpy() == clean[REPORT_COLUMNS].to_numpy()).all()
    noisy = sample_sessions(3000, SEED, report_noise=0.08)
    rate = (noisy[IMAGE_COLUMNS].to_numpy() != noisy[REPORT_COLUMNS].to_numpy()).mean()
    assert abs(rate - 0.08) < 0.01


def test_every_finding_occurs_with_a_plausible_prevalence_and_rises_with_age(sessions600):
    prevalence = sessions600[IMAGE_COLUMNS].mean()
    assert (sessions600[IMAGE_COLUMNS].sum() > 0).all()
    assert prevalence.between(0.05, 0.6).all(), prevalence.to_dict()
    older = sessions600["age"] > sessions600["age"].median()
    degenerative = ["osteophytosis_image", "disc_narrowing_image", "facet_sclerosis_image"]
    assert (sessions600.loc[older, degenerative].mean() > sessions600.loc[~older, degenerative].mean()).all()
    # correlated, but each finding is still its own label
    corr = sessions600[IMAGE_COLUMNS].corr().to_numpy()
    assert corr[~np.eye(len(FINDINGS), dtype=bool)].max() < 0.6


def test_prevalence_override_and_bad_arguments():
    rare = sample_sessions(400, SEED, prevalence={"scoliosis": 0.02})
    assert rare["scoliosis_image"].mean() < 0.06
    with pytest.raises(ValueError, match="unknown finding"):
        sample_sessions(10, SEED, prevalence={"spondylosis": 0.2})
    with pytest.raises(ValueError, match="strictly between"):
        sample_sessions(10, SEED, prevalence={"scoliosis": 1.0})
    with pytest.raises(ValueError, match="report_noise"):
        sample_sessions(10, SEED, report_noise=1.5)


# -- reports --------------------------------------------------------------------------------------------
def test_reports_are_seeded_multiline_italian_with_mixed_case(reports600):
    truth, text = reports600[0]
    assert write_report(truth, random.Random(0)) == text
    texts = [t for _, t in reports600]
    assert all(t.split("\n")[0].startswith(("RX ", "Rx ")) for t in texts)
    assert all("\n" in t for t in texts)
    assert any(t != t.upper() for t in texts) and any(t[40:] == t[40:].upper() for t in texts)
    levels = {m for t in texts for m in re.findall(r"\b(L[1-5]|S1)\b", t)}
    assert levels == {"L1", "L2", "L3", "L4", "L5", "S1"}


def test_positive_findings_are_stated(reports600):
    for f, stems in POSITIVE_STEMS.items():
        stated = [t.lower() for truth, t in reports600 if truth[f]]
        named = np.mean([any(s in t for s in stems) for t in stated])
        assert named > 0.9, (f, named)  # a few typos are allowed


def test_negations_appear_and_only_cover_negative_findings(reports600):
    lowered = [(truth, t.lower()) for truth, t in reports600]
    for phrase in (
        "non segni di listesi",
        "non evidenti fratture",
        "conservata la lordosi",
        "non alterazioni dell'allineamento",
    ):
        assert any(phrase in t for _, t in lowered), phrase
    for truth, t in lowered:
        if "non segni di listesi" in t or "non listesi" in t:
            assert truth["anterolisthesis"] == 0 and truth["retrolisthesis"] == 0, t
        if "non alterazioni dell'allineamento." in t:
            assert truth["anterolisthesis"] == truth["retrolisthesis"] == truth["scoliosis"] == 0, t
        if "non evidenti fratture" in t:
            assert truth["fractures"] == 0, t
        if "conservata la lordosi" in t:
            assert truth["loss_of_lordosis"] == 0, t


def test_a_normal_report_states_nothing_positive():
    texts = [write_report(dict.fromkeys(FINDINGS, 0), random.Random(i)).lower() for i in range(60)]
    assert any(
        "nei limiti della norma" in t or "nella norma" in t or "non alterazioni ossee" in t for t in texts
    )
    positives = (
        "retrolistesi di",
        "cedimento somatico di",
        "osteofitosi marginale somatica",
        "esiti di",
        "atteggiamento scoliotico ",
        "riduzione della fisiologica lordosi",
    )
    assert not any(p in t for t in texts for p in positives)


# -- phantoms -------------------------------------------------------------------------------------------
def test_phantoms_are_seeded_12_bit_and_fast():
    session = sample_sessions(3, SEED).iloc[0].to_dict()
    a = render_views(session, np.random.default_rng(5), size=128)
    b = render_views(session, np.random.default_rng(5), size=128)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == np.uint16 and x.shape == (128, 128) and x.max() <= MAX_VALUE
        np.testing.assert_array_equal(x, y)
    c = render_views(session, np.random.default_rng(6), size=128)
    assert not np.array_equal(a[0], c[0])  # placement, exposure and noise are per session
    timings = []
    for i in range(5):
        start = time.perf_counter()
        render_views(session, np.random.default_rng(i), size=256)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 0.1, timings


def test_bone_is_bright():
    coronal, sagittal = render_views(_normal_session(3), np.random.default_rng(0), size=128)
    for view in (coronal, sagittal):
        column = view[20:100, 50:78].astype(float)  # the lumbar column runs down the middle
        assert column.mean() > view[:, :8].mean()


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_shows_in_its_views_only(finding):
    """The same session and generator with the finding absent vs present: the expected views change
    visibly (at 128 px, the size the paper's models see after downsampling), the other view not at all."""
    for anatomy_seed in (11, 12):
        base = _normal_session(anatomy_seed)
        without = render_views(base, np.random.default_rng(7), size=128)
        with_finding = render_views(base | {f"{finding}_image": 1}, np.random.default_rng(7), size=128)
        for view, a, b in zip(VIEWS, without, with_finding, strict=True):
            changed = int((np.abs(a.astype(int) - b.astype(int)) > 150).sum())
            if view in FINDING_VIEWS[finding]:
                assert changed >= 30, (finding, view, changed)
            else:
                assert changed == 0, (finding, view, changed)


def test_findings_are_drawn_from_the_image_truth_not_the_report():
    base = _normal_session(4) | dict.fromkeys(REPORT_COLUMNS, 1)
    a = render_views(base, np.random.default_rng(1), size=64)
    b = render_views(_normal_session(4), np.random.default_rng(1), size=64)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_instrumentation_is_metal_and_osteoporosis_lowers_bone_contrast():
    base = _normal_session(5)
    plain = render_views(base, np.random.default_rng(2), size=128)
    metal = render_views(base | {"instrumentation_image": 1}, np.random.default_rng(2), size=128)
    porotic = render_views(base | {"osteoporosis_image": 1}, np.random.default_rng(2), size=128)
    for view in range(2):
        bright = plain[view].max() * 0.97
        assert (metal[view] >= bright).sum() > (plain[view] >= bright).sum() + 20
        assert porotic[view][20:100, 44:84].mean() < plain[view][20:100, 44:84].mean()


# -- files ----------------------------------------------------------------------------------------------
def test_written_files_have_the_documented_columns(dataset):
    finding_cols = list(FINDINGS)
    expected = {
        "reports_annotated.csv": ["report_id", "patient_id", "text", *finding_cols],
        "reports.csv": ["report_id", "patient_id", "text"],
        "views.csv": ["session_id", "patient_id", "report_id", "view", "image"],
        "test_labels.csv": ["session_id", *finding_cols],
        "refinement_labels.csv": ["session_id", *finding_cols],
    }
    for name, columns in expected.items():
        assert list(pd.read_csv(dataset / name).columns) == columns, name
    sessions = pd.read_csv(dataset / "sessions.csv")
    assert {"role", "refinement", *IMAGE_COLUMNS, *REPORT_COLUMNS} <= set(sessions.columns)
    assert len(sessions) == 40 and len(pd.read_csv(dataset / "reports.csv")) == 40
    views = pd.read_csv(dataset / "views.csv")
    assert len(views) == 80 and set(views["view"]) == set(VIEWS)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in views["image"])
    assert {Path(p).suffix for p in views["image"]} == {".png", ".dcm"}


def test_roles_are_patient_disjoint_and_labels_come_from_the_right_truth(dataset):
    sessions = pd.read_csv(dataset / "sessions.csv")
    assert set(sessions["role"]) == {"nlp", "test", "train"}
    assert (sessions.groupby("patient_id")["role"].nunique() == 1).all()
    assert set(sessions.loc[sessions["refinement"] == 1, "role"]) == {"train"}
    indexed = sessions.set_index("session_id")
    test = pd.read_csv(dataset / "test_labels.csv").set_index("session_id")
    assert set(test.index) == set(indexed.index[indexed["role"] == "test"])
    np.testing.assert_array_equal(test[list(FINDINGS)], indexed.loc[test.index, IMAGE_COLUMNS])
    refinement = pd.read_csv(dataset / "refinement_labels.csv").set_index("session_id")
    assert set(refinement.index) == set(indexed.index[indexed["refinement"] == 1]) and len(refinement) > 0
    np.testing.assert_array_equal(refinement[list(FINDINGS)], indexed.loc[refinement.index, IMAGE_COLUMNS])
    annotated = pd.read_csv(dataset / "reports_annotated.csv").set_index("report_id")
    by_report = sessions.set_index("report_id")
    assert set(annotated.index) == set(by_report.index[by_report["role"] == "nlp"])
    np.testing.assert_array_equal(annotated[list(FINDINGS)], by_report.loc[annotated.index, REPORT_COLUMNS])


def test_images_read_back_as_rendered_and_monochrome1_is_inverted(dataset):
    sessions = pd.read_csv(dataset / "sessions.csv").set_index("session_id")
    views = pd.read_csv(dataset / "views.csv")
    assert {"png", "dicom_monochrome1", "dicom_monochrome2"} <= set(sessions["image_format"])
    for fmt in ("png", "dicom_monochrome1", "dicom_monochrome2"):
        sid = sessions.index[sessions["image_format"] == fmt][0]
        row = sessions.loc[sid].to_dict() | {"session_id": sid}
        rendered = dict(zip(VIEWS, render_views(row, session_rng(SEED, sid), size=128), strict=True))
        for _, image in views.loc[views["session_id"] == sid].iterrows():
            expected = rendered[image["view"]]
            if fmt == "png":
                np.testing.assert_array_equal(np.asarray(Image.open(image["image"])), expected)
                continue
            ds = pydicom.dcmread(image["image"])
            assert ds.PhotometricInterpretation == ("MONOCHROME1" if fmt.endswith("1") else "MONOCHROME2")
            assert ds.Modality == "CR" and ds.BitsStored == 12 and ds.BitsAllocated == 16
            assert ds.PixelRepresentation == 0 and ds.PatientID == row["patient_id"]
            assert ds.ViewPosition == ("AP" if image["view"] == "coronal" else "LL")
            assert "WindowCenter" in ds and "WindowWidth" in ds
            stored = ds.pixel_array.astype(int)
            target = MAX_VALUE - expected.astype(int) if fmt.endswith("1") else expected.astype(int)
            np.testing.assert_array_equal(stored, target)
            # the project's reader undoes the inversion: bone bright, as in the PNG
            grey = read_radiograph(image["image"])
            span = float(expected.max()) - float(expected.min())
            np.testing.assert_allclose(grey, (expected - float(expected.min())) / span, atol=2e-3)


def test_the_same_arguments_give_the_same_files_and_the_folder_is_reused(dataset, tmp_path):
    marker = (dataset / "GENERATED_BY.txt").read_text()
    assert (
        write_spine_dataset(dataset, n_sessions=40, seed=SEED, image_size=128, dicom_fraction=0.5) == dataset
    )
    assert (dataset / "GENERATED_BY.txt").read_text() == marker
    again = write_spine_dataset(
        tmp_path / "again", n_sessions=40, seed=SEED, image_size=128, dicom_fraction=0.5
    )
    for name in (
        "reports.csv",
        "reports_annotated.csv",
        "test_labels.csv",
        "refinement_labels.csv",
        "sessions.csv",
    ):
        assert (again / name).read_text() == (dataset / name).read_text(), name
    first = sorted((dataset / "images").glob("*.png"))[0]
    np.testing.assert_array_equal(
        np.asarray(Image.open(first)), np.asarray(Image.open(again / "images" / first.name))
    )


def test_demo_data_config_and_cli(tmp_path, capsys):
    paths = demo_data_config(str(tmp_path), n_sessions=30, seed=2, image_size=64)
    assert set(paths) == {"views", "reports", "reports_annotated", "test_labels", "refinement_labels"}
    assert all(Path(p).is_file() for p in paths.values())
    assert Path(paths["views"]).parent.name.startswith("synthetic_spine_n30_s2_")
    assert demo_data_config(str(tmp_path), n_sessions=30, seed=2, image_size=64) == paths
    main([str(tmp_path / "cli"), "--n-sessions", "12", "--seed", "3", "--image-size", "64"])
    assert "views.csv" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "cli" / "sessions.csv")) == 12

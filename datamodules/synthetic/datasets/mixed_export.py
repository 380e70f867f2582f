"""A mixed DICOM export for tests and docs: what a PACS export of a few head-CT studies looks like.

Issue 21 ("Done when"): "a folder of mixed DICOM (phantom series in several layouts, an MR series, a
scout, an SR object, a bone-kernel reconstruction, a series with shuffled instance numbers)" must go
through ``reportsup-scan-manifest`` and the rest of the head-CT path with every series accounted for.
``write_mixed_export`` writes that folder and returns its truth table: one row per series or file
group, the outcome ``reportsup-scan-manifest`` should give it (``kept`` or ``skipped``) and the reason.

The head CTs are phantoms (``images.head_phantom``) written by the same ``write_dicom_series`` as
``reportsup-synthetic-ct-scans``; the MR series, the one-slice CT, the structured report and the DICOMDIR
are real files from pydicom's test data (``pydicom.data.get_testdata_file``). Layout::

    README.txt, DICOMDIR                          not DICOM / the export's index
    MIXP001/20230101_CT_HEAD/1_HEAD_5mm/           kept: axial soft-tissue head CT (kernel H31s), nested
    MIXP001/20230101_CT_HEAD/2_HEAD_5mm_BONE/      skipped bone_window: the same scan, kernel H70h
    MIXP001/20230101_CT_HEAD/0_TOPOGRAM/           skipped localizer: 2-slice lateral scout
    MIXP001/20230101_CT_HEAD/SR/                   skipped non_image: a Comprehensive SR (pydicom's)
    MIXP001/20230315/                              one flat folder holding two series:
        A_IM*.dcm                                  kept (through links): InstanceNumbers shuffled
        B_IM*.dcm                                  skipped not_axial: a sagittal reformat
    MIXP001/20230315_THIN/                         skipped slice_thickness: a 1 mm reconstruction
    MIXP002/CT/HEAD/                               kept: a second patient
    MIXP002/MR/                                    skipped not_ct: a real MR series (pydicom's MR700)
    MIXP002/CT_SMALL/CT_small.dcm                  skipped too_few_slices: a real one-slice CT
    MIXP002/incoming/cut.dcm                       skipped unreadable: a slice cut inside its header
    MIXP<k>/CT/HEAD/ (k >= 3)                      kept: ``n_extra_patients`` more, nested
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pydicom.data
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from datamodules.crossdl.head_ct.dicom_series import write_dicom_series
from datamodules.synthetic.images.head_phantom import render_phantom
from datamodules.synthetic.lesion_spec import abnormality_matrix, sample_scan_spec
from datamodules.synthetic.text.ct_reports import write_report
from reportsup.contracts.labels.crossdl import LabelSpace

#: small phantoms keep the export quick to write (about 2.5 s per scan on one core); 30 slices of 5 mm
#: cover the head like the paper's scans (Table 1: 4-5 mm, about 30-40 slices)
MIXED_SHAPE: tuple[int, int, int] = (64, 64, 30)
MIXED_SPACING: tuple[float, float, float] = (3.8, 3.8, 5.0)
TRUTH_COLUMNS = ("path", "series_instance_uid", "patient_id", "description", "n_files", "expected", "reason")


def _edit(files: Sequence[Path], **tags: object) -> None:
    """Set header ``tags`` (keyword -> value) in every file."""
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(f, enforce_file_format=True)


def _series_uid(files: Sequence[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _write_ct(
    volume: np.ndarray,
    folder: Path,
    patient_id: str,
    study_uid: str,
    description: str,
    seed_uid: str,
    spacing: Sequence[float] = MIXED_SPACING,
    origin=(0.0, 0.0, 0.0),
    **tags,
) -> list[Path]:
    """A phantom CT series in ``folder`` with study-level tags set (date, time, accession) and ``tags``."""
    files = write_dicom_series(
        volume,
        tuple(spacing),
        folder,
        patient_id=patient_id,
        study_uid=study_uid,
        series_description=description,
        origin=origin,
        seed_uid=seed_uid,
    )
    if tags:
        _edit(files, **tags)
    return files


def _move_with_prefix(files: Sequence[Path], folder: Path, prefix: str) -> list[Path]:
    """Move ``files`` into ``folder`` as ``<prefix><name>`` (two series sharing one flat folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    moved = []
    for f in files:
        target = folder / f"{prefix}{f.name}"
        shutil.move(str(f), target)
        moved.append(target)
    return moved


def _shuffle_instance_numbers(files: Sequence[Path], seed: int) -> None:
    """Give the slices InstanceNumbers in an order that is neither the position order nor its reverse."""
    n = len(files)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    while np.array_equal(order, np.arange(n)) or np.array_equal(order, np.arange(n)[::-1]):
        order = rng.permutation(n)
    for f, number in zip(files, order, strict=True):  # files come back in slice (position) order
        _edit([f], InstanceNumber=int(number) + 1)


def write_mixed_export(
    root: str | Path,
    seed: int = 0,
    shape: Sequence[int] = MIXED_SHAPE,
    spacing: Sequence[float] = MIXED_SPACING,
    n_extra_patients: int = 0,
    reports_path: str | Path | None = None,
) -> pd.DataFrame:
    """Write the export described in the module docstring into ``root`` (new or empty) and return its
    truth table (``TRUTH_COLUMNS``): ``path`` relative to ``root`` (the series' folder, or the file for a
    file group), ``expected`` ``kept`` or ``skipped``, ``reason`` a ``dicom_index.SKIP_REASONS`` key or "".
    ``n_extra_patients`` adds that many more patients with one kept head CT each (for training runs).

    ``reports_path``: also write, outside the export, one report per head-CT study (the lesions drawn in
    its phantoms, as ``reportsup-synthetic-ct-scans`` writes them): ``report_id``, ``patient_id``,
    ``report_datetime`` (one hour after the study), ``accession_number``, ``text`` and the abnormality
    matrix ``<region>__<type>``; ``reportsup-pair-reports`` pairs it with the manifest and the DataModule
    reads the matrix as labels."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; write the mixed export into a new folder.")
    root.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    truth: list[dict] = []

    def add(path: Path, uid: str, patient: str, description: str, n: int, reason: str = "") -> None:
        truth.append(
            {
                "path": str(path.relative_to(root)),
                "series_instance_uid": uid,
                "patient_id": patient,
                "description": description,
                "n_files": n,
                "expected": "skipped" if reason else "kept",
                "reason": reason,
            }
        )

    space = LabelSpace()
    rng = random.Random(seed)
    reports: list[dict] = []

    def phantom(k: int, patient: str, study_datetime: str, accession: str) -> np.ndarray:
        """The phantom of one study, with lesions drawn from a spec whose report is written alongside."""
        spec = sample_scan_spec(f"MIXS{k:03d}", patient, rng)
        text, _ = write_report(spec, rng, space)
        when = pd.Timestamp(study_datetime) + pd.Timedelta(hours=1)
        matrix = abnormality_matrix(spec, space).reshape(-1).tolist()
        reports.append(
            {
                "report_id": f"MIXR{k:03d}",
                "patient_id": patient,
                "report_datetime": when.isoformat(),
                "accession_number": accession,
                "text": text,
                **dict(zip(space.matrix_columns(), matrix, strict=True)),
            }
        )
        return render_phantom(spec, seed=seed * 1000 + k, shape=shape, spacing=spacing, space=space).hu

    tag = f"reportsup-mixed-export-{seed}"
    # -- patient 1, study 1: nested patient/study/series folders -------------------------------------
    p1, study1 = "MIXP001", generate_uid(entropy_srcs=[tag, "study1"])
    s1 = root / p1 / "20230101_CT_HEAD"
    dated1 = {"StudyDate": "20230101", "StudyTime": "093000", "AccessionNumber": "ACC1001"}
    volume1 = phantom(1, p1, "2023-01-01T09:30:00", "ACC1001")
    files = _write_ct(
        volume1,
        s1 / "1_HEAD_5mm",
        p1,
        study1,
        "HEAD 5mm",
        f"{tag}-1",
        spacing,
        ConvolutionKernel="H31s",
        SeriesNumber=2,
        **dated1,
    )
    add(s1 / "1_HEAD_5mm", _series_uid(files), p1, "HEAD 5mm, kernel H31s", len(files))
    files = _write_ct(
        volume1,
        s1 / "2_HEAD_5mm_BONE",
        p1,
        study1,
        "HEAD 5mm BONE",
        f"{tag}-bone",
        spacing,
        ConvolutionKernel="H70h",
        SeriesNumber=3,
        WindowCenter=700,
        WindowWidth=3000,
        **dated1,
    )
    add(s1 / "2_HEAD_5mm_BONE", _series_uid(files), p1, "bone kernel H70h", len(files), "bone_window")
    # The scout: a lateral (sagittal-plane) projection of two frames, ImageType LOCALIZER.
    scout = volume1[:, :, shape[2] // 2 : shape[2] // 2 + 2]
    files = _write_ct(
        scout,
        s1 / "0_TOPOGRAM",
        p1,
        study1,
        "Topogram 0.6 T20s",
        f"{tag}-scout",
        spacing,
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        SeriesNumber=1,
        ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
        **dated1,
    )
    add(s1 / "0_TOPOGRAM", _series_uid(files), p1, "scout (LOCALIZER)", len(files), "localizer")
    # A structured report of the study: pydicom's Comprehensive SR test file, moved into this study.
    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    sr.PatientID, sr.StudyInstanceUID = p1, study1
    sr.SeriesInstanceUID = generate_uid(entropy_srcs=[tag, "sr"])
    sr.StudyDate = "20230101"
    (s1 / "SR").mkdir()
    sr.save_as(s1 / "SR" / "report.dcm")
    add(s1 / "SR", str(sr.SeriesInstanceUID), p1, "Comprehensive SR (pydicom test-SR.dcm)", 1, "non_image")

    # -- patient 1, study 2: two series in one flat folder, and a thin-slice reconstruction -------------
    study2 = generate_uid(entropy_srcs=[tag, "study2"])
    dated2 = {"StudyDate": "20230315", "StudyTime": "141500", "AccessionNumber": "ACC1002"}
    flat = root / p1 / "20230315"
    volume2 = phantom(2, p1, "2023-03-15T14:15:00", "ACC1002")
    staged = _write_ct(
        volume2,
        root / ".staging_a",
        p1,
        study2,
        "HEAD 5mm",
        f"{tag}-2",
        spacing,
        SeriesNumber=2,
        ConvolutionKernel="H31s",
        **dated2,
    )
    _shuffle_instance_numbers(staged, seed)
    files = _move_with_prefix(staged, flat, "A_")
    add(flat, _series_uid(files), p1, "HEAD 5mm, InstanceNumbers shuffled, shares its folder", len(files))
    # A sagittal reformat: the same voxels labelled with sagittal orientation (normal along x).
    sagittal = np.transpose(volume2, (1, 2, 0))[:, :, ::4]  # (y, z, every 4th x): one slice per x
    staged = _write_ct(
        sagittal,
        root / ".staging_b",
        p1,
        study2,
        "HEAD SAG MPR",
        f"{tag}-sag",
        spacing,
        SeriesNumber=5,
        **dated2,
    )
    for k, f in enumerate(staged):
        _edit(
            [f], ImageOrientationPatient=[0, 1, 0, 0, 0, -1], ImagePositionPatient=[4 * k * spacing[0], 0, 0]
        )
    files = _move_with_prefix(staged, flat, "B_")
    add(flat, _series_uid(files), p1, "sagittal reformat, shares its folder", len(files), "not_axial")
    for staging in (root / ".staging_a", root / ".staging_b"):
        staging.rmdir()
    thin = root / p1 / "20230315_THIN"
    files = _write_ct(
        volume2[:, :, :20],
        thin,
        p1,
        study2,
        "HEAD 1mm",
        f"{tag}-thin",
        (spacing[0], spacing[1], 1.0),
        SeriesNumber=6,
        **dated2,
    )
    add(thin, _series_uid(files), p1, "1 mm slices", len(files), "slice_thickness")

    # -- patient 2: a kept CT, real MR / CT test files, a cut file ---------------------------------------
    p2, study3 = "MIXP002", generate_uid(entropy_srcs=[tag, "study3"])
    ct2 = root / p2 / "CT" / "HEAD"
    files = _write_ct(
        phantom(3, p2, "2023-04-01T08:00:00", "ACC2001"),
        ct2,
        p2,
        study3,
        "HEAD 5mm",
        f"{tag}-3",
        spacing,
        SeriesNumber=2,
        StudyDate="20230401",
        StudyTime="080000",
        AccessionNumber="ACC2001",
    )
    add(ct2, _series_uid(files), p2, "HEAD 5mm", len(files))
    mr_source = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892003" / "MR700"
    mr = root / p2 / "MR"
    shutil.copytree(mr_source, mr)
    mr_files = sorted(mr.iterdir())
    real = pydicom.dcmread(mr_files[0], stop_before_pixels=True)
    add(
        mr,
        str(real.SeriesInstanceUID),
        str(real.PatientID),
        "real MR series (pydicom dicomdirtests MR700)",
        len(mr_files),
        "not_ct",
    )
    small = root / p2 / "CT_SMALL"
    small.mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), small / "CT_small.dcm")
    real = pydicom.dcmread(small / "CT_small.dcm", stop_before_pixels=True)
    add(
        small,
        str(real.SeriesInstanceUID),
        str(real.PatientID),
        "real one-slice CT (pydicom CT_small.dcm)",
        1,
        "too_few_slices",
    )
    incoming = root / p2 / "incoming"
    incoming.mkdir()
    # Cut inside the header (after the preamble and part of the meta group): an interrupted copy.
    (incoming / "cut.dcm").write_bytes(files[0].read_bytes()[:300])
    add(incoming / "cut.dcm", "", "", "a slice cut at 300 bytes", 1, "unreadable")

    # -- files of the export that are no series -----------------------------------------------------
    (root / "README.txt").write_text("Exported from PACS. Burn date 2023-05-01.\n")
    add(root / "README.txt", "", "", "a text file", 1, "not_dicom")
    shutil.copy(
        Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "DICOMDIR", root / "DICOMDIR"
    )
    add(root / "DICOMDIR", "", "", "DICOMDIR (pydicom's)", 1, "dicomdir")

    for k in range(n_extra_patients):
        pk, study = f"MIXP{k + 3:03d}", generate_uid(entropy_srcs=[tag, "extra", str(k)])
        folder = root / pk / "CT" / "HEAD"
        volume = phantom(10 + k, pk, "2023-05-01T10:00:00", f"ACC{k + 3}001")
        files = _write_ct(
            volume,
            folder,
            pk,
            study,
            "HEAD 5mm",
            f"{tag}-extra-{k}",
            spacing,
            SeriesNumber=2,
            StudyDate="20230501",
            StudyTime="100000",
            AccessionNumber=f"ACC{k + 3}001",
        )
        add(folder, _series_uid(files), pk, "HEAD 5mm", len(files))
    if reports_path is not None:
        Path(reports_path).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(reports).to_csv(reports_path, index=False)
    return pd.DataFrame(truth, columns=list(TRUTH_COLUMNS))

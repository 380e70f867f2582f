"""A seeded synthetic lumbar-spine data set on disk: Italian X-ray reports, coronal + sagittal radiograph
phantoms and the human / report labels of the spine study (NLP-labelled ResNet-18 training).

Modelled on the paper's "Data, Images and Outputs" and Figure 1. Sessions and their two truths per
finding come from :mod:`datamodules.synthetic.spine_sessions`, the report text from
:mod:`datamodules.synthetic.text.spine_reports` (report truth), the radiographs from
:mod:`datamodules.synthetic.images.spine_radiographs` (image truth); this module assigns the roles and
writes the files.

Written by :func:`write_spine_dataset` (roles by patient, as Figure 1)::

    reports_annotated.csv   report_id, patient_id, text, <finding>...  NLP development reports (report truth)
    reports.csv             report_id, patient_id, text                the whole archive, to machine-label
    views.csv               session_id, patient_id, report_id, view, image (absolute path): every image
    images/<session_id>_<view>.png|.dcm   16-bit PNG, or DICOM (CR, 12 bits; half MONOCHROME1)
    test_labels.csv         session_id, <finding>...                   image truth of the test patients
    refinement_labels.csv   session_id, <finding>...                   image truth of the refinement set
    sessions.csv            everything: both truths, age, anatomy_seed, role (nlp | test | train),
                            refinement (0/1), image_format (png | dicom_monochrome1 | dicom_monochrome2)

Everything is drawn from seeded generators: the same arguments give the same text and pixels.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from datamodules.synthetic.images.spine_radiographs import MAX_VALUE, render_views
from datamodules.synthetic.spine_sessions import sample_sessions
from datamodules.synthetic.text.spine_reports import write_report
from datamodules.synthetic.writing import write_once
from reportsup.contracts.labels.spine import FINDINGS, VIEWS


def session_rng(seed: int, session_id: str) -> np.random.Generator:
    """The image generator of one session in :func:`write_spine_dataset` (to re-render it)."""
    return np.random.default_rng([seed, int(str(session_id).lstrip("S")), 0x1A6E])


def assign_roles(
    sessions: pd.DataFrame,
    seed: int,
    nlp_fraction: float = 0.3,
    test_fraction: float = 0.1,
    refinement_fraction: float = 0.1,
) -> pd.DataFrame:
    """Add ``role`` (nlp | test | train, by patient) and ``refinement`` (0/1) as in Figure 1: the NLP
    development reports and the image test set are whole patients; the refinement set (the paper's 481
    couples) is a random ``refinement_fraction`` of the training-pool sessions."""
    for name, value in (
        ("nlp_fraction", nlp_fraction),
        ("test_fraction", test_fraction),
        ("refinement_fraction", refinement_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value}: a fraction in [0, 1].")
    if nlp_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"nlp_fraction + test_fraction = {nlp_fraction + test_fraction}: nothing is left to train on."
        )
    rng = np.random.default_rng([seed, 0x201E])
    patients = sessions["patient_id"].unique()
    order = patients[rng.permutation(len(patients))]

    def count(fraction: float) -> int:
        return max(1, int(round(fraction * len(patients)))) if fraction > 0 else 0

    n_nlp, n_test = count(nlp_fraction), count(test_fraction)
    if n_nlp + n_test >= len(patients):
        raise ValueError(
            f"{len(patients)} patients are too few for nlp_fraction={nlp_fraction} and test_fraction={test_fraction}."
        )
    role = {p: "nlp" for p in order[:n_nlp]} | {p: "test" for p in order[n_nlp : n_nlp + n_test]}
    out = sessions.copy()
    out["role"] = out["patient_id"].map(role).fillna("train")
    train = np.flatnonzero(out["role"].to_numpy() == "train")
    chosen = rng.choice(train, size=int(round(refinement_fraction * len(train))), replace=False)
    out["refinement"] = 0
    out.loc[out.index[chosen], "refinement"] = 1
    return out


def _assign_formats(sessions: pd.DataFrame, seed: int, dicom_fraction: float) -> pd.Series:
    """png for most sessions; DICOM for ``dicom_fraction`` of them, half of those MONOCHROME1."""
    if not 0.0 <= dicom_fraction <= 1.0:
        raise ValueError(f"dicom_fraction={dicom_fraction}: a fraction in [0, 1].")
    rng = np.random.default_rng([seed, 0xD1C0])
    dicom = rng.random(len(sessions)) < dicom_fraction
    inverted = rng.random(len(sessions)) < 0.5
    formats = np.where(dicom, np.where(inverted, "dicom_monochrome1", "dicom_monochrome2"), "png")
    return pd.Series(formats, index=sessions.index)


def write_png(pixels: np.ndarray, path: Path) -> Path:
    """A 16-bit grayscale PNG (the 12-bit values as stored)."""
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint16)).save(path, compress_level=3)
    return path


def write_dicom(
    pixels: np.ndarray,
    path: Path,
    session: Mapping[str, Any],
    view: str,
    seed: int,
    monochrome1: bool,
) -> Path:
    """One Computed Radiography Image Storage file: 16-bit unsigned, 12 bits stored, ViewPosition AP
    (coronal) or LL (sagittal), a window covering the image's range (so a reader that applies it sees
    what a reader stretching the PNG sees). MONOCHROME1 stores ``4095 - value`` (bone dark)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    stored = (MAX_VALUE - pixels if monochrome1 else pixels).astype(np.uint16)
    sid = str(session["session_id"])
    entropy = ["reportsup-synthetic-spine", str(seed), sid]
    sop = generate_uid(entropy_srcs=[*entropy, view])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = generate_uid(entropy_srcs=entropy)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, view, "series"])
    ds.Modality = "CR"
    ds.PatientID = str(session["patient_id"])
    ds.PatientName = f"Anonymous^{session['patient_id']}"
    ds.StudyID = sid
    ds.AccessionNumber = str(session.get("report_id", ""))
    ds.StudyDate = ds.SeriesDate = "20170101"
    ds.SeriesNumber = VIEWS.index(view) + 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "AP" if view == "coronal" else "LL"
    ds.PatientOrientation = ["R", "F"] if view == "coronal" else ["A", "F"]
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    spacing = f"{400.0 / pixels.shape[0]:.4f}"  # a 40 cm field of view
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    lo, hi = int(stored.min()), int(stored.max())
    # DICOM linear VOI: values <= c - 0.5 - (w - 1) / 2 are black, > c - 0.5 + (w - 1) / 2 white.
    ds.WindowCenter = f"{(lo + hi) / 2 + 0.5:.1f}"
    ds.WindowWidth = str(max(hi - lo + 1, 2))
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_images(out: Path, row: Mapping[str, Any], seed: int, image_size: int) -> list[dict[str, str]]:
    coronal, sagittal = render_views(row, session_rng(seed, row["session_id"]), image_size)
    records = []
    for view, pixels in zip(VIEWS, (coronal, sagittal), strict=True):
        stem = out / "images" / f"{row['session_id']}_{view}"
        if row["image_format"] == "png":
            path = write_png(pixels, stem.with_suffix(".png"))
        else:
            mono1 = row["image_format"] == "dicom_monochrome1"
            path = write_dicom(pixels, stem.with_suffix(".dcm"), row, view, seed, mono1)
        records.append(
            {
                "session_id": row["session_id"],
                "patient_id": row["patient_id"],
                "report_id": row["report_id"],
                "view": view,
                "image": str(path.resolve()),
            }
        )
    return records


def _report_texts(sessions: pd.DataFrame, seed: int) -> list[str]:
    texts = []
    for row in sessions.itertuples(index=False):
        truth = {f: int(getattr(row, f"{f}_report")) for f in FINDINGS}
        texts.append(write_report(truth, random.Random(f"reportsup-spine-{seed}-{row.session_id}")))
    return texts


def generate_spine_dataset(
    out_dir: str | Path,
    n_sessions: int = 600,
    seed: int = 0,
    image_size: int = 256,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.3,
    test_fraction: float = 0.1,
    refinement_fraction: float = 0.1,
    dicom_fraction: float = 0.2,
) -> None:
    """Write the files of the module docstring into ``out_dir`` (no caching: see :func:`write_spine_dataset`)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sessions = sample_sessions(n_sessions, seed, report_noise)
    sessions = assign_roles(sessions, seed, nlp_fraction, test_fraction, refinement_fraction)
    sessions["image_format"] = _assign_formats(sessions, seed, dicom_fraction)
    sessions["text"] = _report_texts(sessions, seed)
    views = [rec for row in sessions.to_dict("records") for rec in _write_images(out, row, seed, image_size)]
    pd.DataFrame(views).to_csv(out / "views.csv", index=False)
    reports = sessions[["report_id", "patient_id", "text"]]
    reports.to_csv(out / "reports.csv", index=False)
    nlp = sessions.loc[sessions["role"] == "nlp"]
    annotated = nlp[["report_id", "patient_id", "text"]].join(
        nlp[[f"{f}_report" for f in FINDINGS]].rename(columns=lambda c: c.removesuffix("_report"))
    )
    annotated.to_csv(out / "reports_annotated.csv", index=False)
    image_truth = {f"{f}_image": f for f in FINDINGS}
    for name, mask in (
        ("test_labels", sessions["role"] == "test"),
        ("refinement_labels", sessions["refinement"] == 1),
    ):
        sessions.loc[mask, ["session_id", *image_truth]].rename(columns=image_truth).to_csv(
            out / f"{name}.csv", index=False
        )
    sessions.drop(columns="text").to_csv(out / "sessions.csv", index=False)


def write_spine_dataset(
    out_dir: str | Path,
    n_sessions: int = 600,
    seed: int = 0,
    image_size: int = 256,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.3,
    test_fraction: float = 0.1,
    refinement_fraction: float = 0.1,
    dicom_fraction: float = 0.2,
) -> Path:
    """:func:`generate_spine_dataset` once: a folder written with the same arguments is reused, a folder
    the generator did not write is refused (:func:`datamodules.synthetic.writing.write_once`). Returns
    ``out_dir``."""
    args = {
        "n_sessions": int(n_sessions),
        "seed": int(seed),
        "image_size": int(image_size),
        "report_noise": float(report_noise),
        "nlp_fraction": float(nlp_fraction),
        "test_fraction": float(test_fraction),
        "refinement_fraction": float(refinement_fraction),
        "dicom_fraction": float(dicom_fraction),
    }
    signature = f"reportsup synthetic_spine v1 {sorted(args.items())}\n"
    write_once(out_dir, signature, lambda folder: generate_spine_dataset(folder, **args))
    return Path(out_dir)


def demo_data_config(
    data_dir: str,
    n_sessions: int = 600,
    seed: int = 0,
    image_size: int = 256,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.3,
) -> dict[str, str]:
    """Write (or reuse) the synthetic data set under ``data_dir`` and return the paths the spine
    DataModules take: ``views``, ``reports``, ``reports_annotated``, ``test_labels``,
    ``refinement_labels``."""
    name = f"synthetic_spine_n{n_sessions}_s{seed}_px{image_size}_noise{report_noise:g}_nlp{nlp_fraction:g}"
    root = write_spine_dataset(
        Path(data_dir) / name,
        n_sessions=n_sessions,
        seed=seed,
        image_size=image_size,
        report_noise=report_noise,
        nlp_fraction=nlp_fraction,
    )
    files = ("views", "reports", "reports_annotated", "test_labels", "refinement_labels")
    return {key: str((root / f"{key}.csv").resolve()) for key in files}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a synthetic lumbar-spine data set: Italian reports, coronal + sagittal radiographs, labels."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--n-sessions", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--report-noise", type=float, default=0.08)
    parser.add_argument("--nlp-fraction", type=float, default=0.3)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--refinement-fraction", type=float, default=0.1)
    parser.add_argument("--dicom-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    out = write_spine_dataset(
        args.out_dir,
        n_sessions=args.n_sessions,
        seed=args.seed,
        image_size=args.image_size,
        report_noise=args.report_noise,
        nlp_fraction=args.nlp_fraction,
        test_fraction=args.test_fraction,
        refinement_fraction=args.refinement_fraction,
        dicom_fraction=args.dicom_fraction,
    )
    for path in sorted(out.glob("*.csv")):
        print(path)


if __name__ == "__main__":
    main()

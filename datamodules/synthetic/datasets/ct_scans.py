"""A synthetic head-CT data set: phantoms as DICOM series (and NIfTI), reports, manifest, atlases.

Each scan is rendered by :mod:`datamodules.synthetic.images.head_phantom` from a
:class:`~datamodules.synthetic.lesion_spec.ScanSpec`, and its report is written from the same spec by
:func:`datamodules.synthetic.text.ct_reports.write_report`, so image, voxel ground truth, report text and
abnormality matrix agree. Layout of the output folder::

    dicom/<scan_id>/IM*.dcm        the scan as a DICOM series (CT Image Storage, HU via rescale)
    nifti/<scan_id>.nii.gz         the same scan as NIfTI (with ``formats`` incl. "nifti")
    truth/<scan_id>_regions.nii.gz true 17-region map (integer i + 1 = anatomical region i)
    truth/<scan_id>_lesions.nii.gz voxel ground truth, bit j = abnormality type j
    atlas/average_ct.nii.gz        the atlas image: the undeformed template head (paper: an average CT)
    atlas/average_ct_regions.nii.gz its 17-region label map (paper: annotated by a radiologist)
    atlas/reference_<k>.nii.gz     extra reference atlases (+ _regions) for the Table S1 robustness check
    reports.csv                    report_id, scan_id, patient_id, text, gold matrix <region>__<type>
    manifest.csv                   scan_id, patient_id, image, report_id, voxel_mask, true_region_mask
    lesion_specs.jsonl             the specs everything was generated from

A patient has one to three scans (patient-level splits are exercised).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from datamodules.crossdl.head_ct.dicom_series import write_dicom_series
from datamodules.synthetic.images.head_phantom import DEFAULT_SHAPE, DEFAULT_SPACING, render_phantom
from datamodules.synthetic.lesion_spec import (
    ABNORMAL_RATE,
    LESION_COUNT_WEIGHTS,
    SIZE_RANGE_MM,
    abnormality_matrix,
    sample_scan_spec,
)
from datamodules.synthetic.text.ct_reports import write_report
from datamodules.synthetic.writing import write_once
from reportsup.contracts.labels.crossdl import LabelSpace


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Save ``array`` as NIfTI at ``path`` (``affine``: voxel index -> RAS mm), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def write_atlases(out: Path, shape, spacing, n_reference: int, seed: int) -> dict[str, tuple[Path, Path]]:
    """The average-CT atlas (undeformed template, no noise) and ``n_reference`` deformed normal heads."""
    atlases = {}
    average = render_phantom(None, seed=seed, shape=shape, spacing=spacing, deform=False, noise_hu=0.0)
    atlases["average_ct"] = average
    for k in range(1, n_reference + 1):
        atlases[f"reference_{k}"] = render_phantom(None, seed=10_000 + seed + k, shape=shape, spacing=spacing)
    paths = {}
    for name, ph in atlases.items():
        paths[name] = (
            write_nifti(ph.hu.astype(np.int16), ph.affine_ras, out / "atlas" / f"{name}.nii.gz"),
            write_nifti(ph.regions, ph.affine_ras, out / "atlas" / f"{name}_regions.nii.gz"),
        )
    return paths


def _write_scan(
    job: tuple, out: Path, shape, spacing, formats: Sequence[str], space: LabelSpace, seed: int
) -> dict:
    """Render one phantom and write its DICOM / NIfTI files and truth maps; its manifest row."""
    spec, report_id, render_seed = job
    scan_id, pid = spec.scan_id, spec.patient_id
    ph = render_phantom(spec, seed=render_seed, shape=shape, spacing=spacing, space=space)
    row = {"scan_id": scan_id, "patient_id": pid, "report_id": report_id}
    if "dicom" in formats:
        write_dicom_series(
            ph.hu,
            ph.spacing,
            out / "dicom" / scan_id,
            patient_id=pid,
            origin=ph.origin_lps,
            seed_uid=f"reportsup-synthetic-{seed}-{scan_id}",
        )
        row["image"] = f"dicom/{scan_id}"
    if "nifti" in formats:
        nifti = write_nifti(ph.hu.astype(np.int16), ph.affine_ras, out / "nifti" / f"{scan_id}.nii.gz")
        row.setdefault("image", str(nifti.relative_to(out)))
    truth = out / "truth"
    row["voxel_mask"] = str(
        write_nifti(ph.lesion_bits, ph.affine_ras, truth / f"{scan_id}_lesions.nii.gz").relative_to(out)
    )
    row["true_region_mask"] = str(
        write_nifti(ph.regions, ph.affine_ras, truth / f"{scan_id}_regions.nii.gz").relative_to(out)
    )
    return row


def generate_ct_scans(
    out_dir: str | Path,
    n_scans: int = 40,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    formats: Sequence[str] = ("dicom", "nifti"),
    abnormal_rate: float = ABNORMAL_RATE,
    lesion_count_weights: Sequence[float] = LESION_COUNT_WEIGHTS,
    size_range_mm: Sequence[int] = SIZE_RANGE_MM,
    n_reference_atlases: int = 2,
    space: LabelSpace | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> None:
    """Write the data set described in the module docstring into the (empty) folder ``out_dir``.

    ``workers`` processes render and write the scans (default: one per CPU); the files are the same for
    any number of workers, since each scan depends only on its own spec and seed."""
    space = space or LabelSpace()
    out = Path(out_dir)
    shape, spacing = tuple(int(s) for s in shape), tuple(float(s) for s in spacing)
    unknown = set(formats) - {"dicom", "nifti"}
    if unknown or not formats:
        raise ValueError(f"formats: {sorted(unknown) or 'empty'}; choose from 'dicom', 'nifti'.")
    rng = random.Random(seed)
    # Specs and report texts first, in one seeded sequence (cheap); rendering each scan depends only on
    # its own spec and seed, so it runs in worker processes without changing a single voxel.
    jobs, reports, specs = [], [], []
    patient = 0
    while len(jobs) < n_scans:
        pid = f"HCTP{patient:05d}"
        for _ in range(rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1))[0]):
            if len(jobs) >= n_scans:
                break
            n = len(jobs)
            scan_id, report_id = f"HCT{n:05d}", f"HCTR{n:05d}"
            spec = sample_scan_spec(
                scan_id, pid, rng, abnormal_rate, lesion_count_weights, tuple(size_range_mm)
            )
            text, _ = write_report(spec, rng, space)
            jobs.append((spec, report_id, seed * 100_003 + n))
            matrix = abnormality_matrix(spec, space).reshape(-1)
            reports.append(
                {
                    "report_id": report_id,
                    "scan_id": scan_id,
                    "patient_id": pid,
                    "text": text,
                    **dict(zip(space.matrix_columns(), matrix.tolist(), strict=True)),
                }
            )
            specs.append({"report_id": report_id, **asdict(spec)})
        patient += 1
    render = partial(
        _write_scan, out=out, shape=shape, spacing=spacing, formats=tuple(formats), space=space, seed=seed
    )
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    with tqdm(total=n_scans, desc="synthetic CT scans", disable=not progress) as bar:
        manifest = []
        if workers == 1:
            rows = map(render, jobs)
        else:
            pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
            rows = pool.map(render, jobs)
        try:
            for row in rows:
                manifest.append(row)
                bar.update()
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    write_atlases(out, shape, spacing, n_reference_atlases, seed)
    pd.DataFrame(manifest).to_csv(out / "manifest.csv", index=False)
    pd.DataFrame(reports).to_csv(out / "reports.csv", index=False)
    (out / "lesion_specs.jsonl").write_text("".join(json.dumps(s) + "\n" for s in specs))


def write_ct_scan_dataset(out_dir: str | Path, n_scans: int = 40, seed: int = 0, **kwargs) -> Path:
    """:func:`generate_ct_scans` once: an identical earlier write is reused, a foreign folder refused."""
    signature = f"reportsup synthetic_ct_scans n_scans={n_scans} seed={seed} {sorted(kwargs.items())}\n"
    write_once(out_dir, signature, lambda folder: generate_ct_scans(folder, n_scans, seed, **kwargs))
    return Path(out_dir)


def _population(
    abnormal_rate: float, lesion_count_weights: Sequence[float], size_range_mm: Sequence[int]
) -> dict:
    """The lesion-population keywords of :func:`generate_ct_scans` in plain, comparable types."""
    return {
        "abnormal_rate": float(abnormal_rate),
        "lesion_count_weights": [float(w) for w in lesion_count_weights],
        "size_range_mm": [int(s) for s in size_range_mm],
    }


def demo_data_config(
    data_dir: str | Path,
    n_scans: int = 40,
    seed: int = 0,
    register: bool = True,
    max_iterations: int | None = 32,
    workers: int | None = None,
    abnormal_rate: float = ABNORMAL_RATE,
    lesion_count_weights: Sequence[float] = LESION_COUNT_WEIGHTS,
    size_range_mm: Sequence[int] = SIZE_RANGE_MM,
) -> dict:
    """``data.*`` values for ``demo=true``: 40 phantoms as DICOM, gold matrices as labels, and the atlas
    registered to every scan (``reportsup-register-atlas`` logic; finished masks are reused, so only the
    first demo pays for it). With ``register=False`` the phantoms' true region maps are the masks.
    ``abnormal_rate``, ``lesion_count_weights`` and ``size_range_mm`` shape the lesion population; a
    non-default population gets its own folder."""
    import os

    from datamodules.crossdl.head_ct.registration import Atlas, RegistrationSettings, register_manifest

    population = _population(abnormal_rate, lesion_count_weights, size_range_mm)
    name = f"synthetic_ct_scans_n{n_scans}_s{seed}"
    if population != _population(ABNORMAL_RATE, LESION_COUNT_WEIGHTS, SIZE_RANGE_MM):
        tag = hashlib.sha1(json.dumps(population, sort_keys=True).encode()).hexdigest()[:8]
        name += f"_lesions{tag}"
    else:
        population = {}
    root = write_ct_scan_dataset(Path(data_dir) / name, n_scans, seed, **population)
    if not register:
        manifest = pd.read_csv(root / "manifest.csv").rename(columns={"true_region_mask": "region_mask"})
        path = root / "manifest_true_masks.csv"
        if not path.exists():
            manifest.to_csv(path, index=False)
        return {"manifest_path": str(path), "labels_path": str(root / "reports.csv")}
    out = root / "registered"
    path = out / "manifest_registered.csv"
    if not path.exists():
        from datamodules.crossdl.head_ct.manifest import read_scan_manifest

        atlas = Atlas(
            "average_ct", root / "atlas" / "average_ct.nii.gz", root / "atlas" / "average_ct_regions.nii.gz"
        )
        workers = workers or max(1, os.cpu_count() or 1)
        settings = RegistrationSettings(
            max_iterations=max_iterations, threads=max(1, (os.cpu_count() or 1) // workers)
        )
        manifest, report = register_manifest(
            read_scan_manifest(root / "manifest.csv"), [atlas], out, settings, workers
        )
        report.to_csv(out / "registration_report.csv", index=False)
        failed = report[report["status"] == "failed"]
        if len(failed):
            raise RuntimeError(f"demo atlas registration failed for {failed['scan_id'].tolist()}: see {out}")
        manifest.to_csv(path, index=False)
    return {"manifest_path": str(path), "labels_path": str(root / "reports.csv")}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write synthetic head-CT phantoms (DICOM + NIfTI), reports, manifest and atlases."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--n-scans", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("X", "Y", "Z"))
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), metavar=("DX", "DY", "DZ")
    )
    parser.add_argument("--formats", nargs="+", default=["dicom", "nifti"], choices=["dicom", "nifti"])
    args = parser.parse_args(argv)
    out = write_ct_scan_dataset(
        args.out_dir,
        args.n_scans,
        args.seed,
        shape=tuple(args.shape),
        spacing=tuple(args.spacing),
        formats=tuple(args.formats),
    )
    print(f"manifest: {out / 'manifest.csv'}\nreports: {out / 'reports.csv'}\natlas: {out / 'atlas'}")


if __name__ == "__main__":
    main()

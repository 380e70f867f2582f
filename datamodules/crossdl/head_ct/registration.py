"""Atlas-based coarse region segmentation of every scan of a manifest
(Liu et al. 2023, STAR Methods "Anatomical region segmentation").

The atlas image (an average CT, e.g. from ``reportsup-build-atlas``) is registered to each scan with
elastix (itk-elastix): an affine transform followed by a B-spline transform (elastix's default
parameter maps; ``--max-iterations`` and ``--grid-spacing`` shorten them). The affine stage starts
from the translation that aligns the two heads' centres of gravity (``--centre``; the paper centred
each CT with simulated annealing instead, see ``CENTRE_METHODS``). The atlas's 17-region label map is warped with the same
transforms and nearest-neighbour interpolation (``FinalBSplineInterpolationOrder 0``) and written as
NIfTI in the scan's own geometry, so it lines up with the scan whatever reader opens both.

* several atlases (``--atlas NAME=IMAGE,LABELS`` repeated): the paper's Table S1 robustness check
  trains one analyzer per reference atlas; each atlas gets its own output folder and manifest column
  ``region_mask__NAME`` (the first atlas also fills ``region_mask``);
* parallel over scans in processes (``--workers``), resumable (a readable finished mask is skipped),
  progress bar, one elastix log per scan and atlas;
* failures are detected and reported, never silently kept: elastix errors and a warped brain volume
  outside ``--volume-range`` x the atlas's are ``failed`` (no mask in the manifest); a normalised
  cross-correlation between the warped atlas and the scan below ``--min-ncc`` is ``review`` (the
  paper sent scans with an elastix final metric above -0.8 to manual review). Results go to
  ``registration_report.csv``; the manifest with mask columns is written as a new file.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

# Registration intensity range (HU): brain, CSF and the skull all contribute; metal and air saturate.
REGISTRATION_HU = (-100.0, 1500.0)
# Centring before registration (``RegistrationSettings.centre``) -> elastix's
# AutomaticTransformInitializationMethod. The paper centred every CT with simulated annealing (head in the
# middle of the image, as bilaterally symmetric as possible; STAR Methods, "Anatomical region
# segmentation"); we instead start the affine stage from the translation that aligns the images'
# centres of gravity (ITK's CenteredTransformInitializer with moments, as elastix runs it) and leave
# rotation and symmetry to the affine optimisation.
CENTRE_METHODS = {"gravity": "CenterOfGravity", "geometry": "GeometricalCenter", "none": None}


@dataclass(frozen=True)
class Atlas:
    name: str
    image: Path
    labels: Path


@dataclass
class RegistrationResult:
    scan_id: str
    atlas: str
    status: str  # ok | review | failed | skipped
    mask: str = ""
    seconds: float = 0.0
    ncc: float = float("nan")
    volume_ratio: float = float("nan")
    message: str = ""


@dataclass(frozen=True)
class RegistrationSettings:
    max_iterations: int | None = None  # None: elastix defaults (256)
    grid_spacing_mm: float = 20.0
    volume_range: tuple[float, float] = (0.6, 1.6)
    min_ncc: float = 0.8
    threads: int = 1
    centre: str = "gravity"  # a key of CENTRE_METHODS

    def __post_init__(self) -> None:
        if self.centre not in CENTRE_METHODS:
            raise ValueError(f"centre must be one of {sorted(CENTRE_METHODS)}, got {self.centre!r}")


def parse_atlas(text: str) -> Atlas:
    """``NAME=IMAGE,LABELS`` (or ``IMAGE,LABELS``, named after the image file)."""
    name, _, paths = text.rpartition("=")
    parts = paths.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"--atlas {text!r}: expected NAME=IMAGE,LABELS, e.g. average=atlas/ct.nii.gz,atlas/regions.nii.gz"
        )
    image, labels = Path(parts[0]), Path(parts[1])
    for p in (image, labels):
        if not p.exists():
            raise argparse.ArgumentTypeError(f"--atlas {text!r}: {p} does not exist.")
    return Atlas(name or image.name.split(".")[0], image, labels)


def read_itk(path: Path, pixel_type=None):
    """A DICOM series folder or an image file as an ITK image in physical (LPS) space; HU for CT."""
    import itk

    pixel_type = pixel_type or itk.F
    if path.is_dir():
        names = itk.GDCMSeriesFileNames.New(Directory=str(path))
        files = names.GetInputFileNames()
        return itk.imread([str(f) for f in files], pixel_type)
    return itk.imread(str(path), pixel_type)


def parameter_object(settings: RegistrationSettings, kinds: Sequence[str] = ("affine", "bspline")):
    """Affine then B-spline elastix parameter maps (elastix defaults unless shortened); the first map
    starts from the centring of ``settings.centre`` (see ``CENTRE_METHODS``)."""
    import itk

    po = itk.ParameterObject.New()
    for i, kind in enumerate(kinds):
        pm = (
            po.GetDefaultParameterMap(kind, 3, settings.grid_spacing_mm)
            if kind == "bspline"
            else po.GetDefaultParameterMap(kind, 3)
        )
        if settings.max_iterations:
            pm["MaximumNumberOfIterations"] = [str(settings.max_iterations)]
        pm["WriteResultImage"] = ["false"]
        method = CENTRE_METHODS[settings.centre]
        if i == 0 and method:
            pm["AutomaticTransformInitialization"] = ["true"]
            pm["AutomaticTransformInitializationMethod"] = [method]
        po.AddParameterMap(pm)
    return po


def registration_image(img, lo: float, hi: float):
    """``img`` clipped to [lo, hi] and shifted so that ``lo`` is 0: air then has no weight in the centre
    of gravity (mutual information and NCC do not change with the shift)."""
    import itk

    arr = (np.clip(itk.array_view_from_image(img), lo, hi) - lo).astype(np.float32)
    out = itk.image_from_array(arr)
    out.CopyInformation(img)
    return out


def masked_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised cross-correlation of ``a`` and ``b`` over ``mask`` (NaN if either is constant there)."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def register_one(
    scan_id: str, image: str, atlas: Atlas, out_path: str, log_dir: str, settings: RegistrationSettings
) -> RegistrationResult:
    """Register ``atlas`` to one scan and write the warped label map; never raises."""
    import itk

    start = time.perf_counter()
    result = RegistrationResult(scan_id, atlas.name, "failed", "")
    # Threads via ITK's global default: itk-elastix 0.25.4 segfaults when given number_of_threads > 1.
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(max(1, settings.threads))
    try:
        fixed = read_itk(Path(image))
        moving = read_itk(atlas.image)
        labels = read_itk(atlas.labels)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        _, transform = itk.elastix_registration_method(
            registration_image(fixed, *REGISTRATION_HU),
            registration_image(moving, *REGISTRATION_HU),
            parameter_object=parameter_object(settings),
            log_to_console=False,
            log_to_file=True,
            log_file_name=f"{scan_id}.log",
            output_directory=str(log_dir),
        )
        warped_image = itk.transformix_filter(registration_image(moving, *REGISTRATION_HU), transform)
        transform.SetParameter("FinalBSplineInterpolationOrder", "0")  # labels: nearest neighbour
        warped = itk.transformix_filter(labels, transform)
        warped_arr = np.rint(itk.array_view_from_image(warped)).astype(np.uint8)
        voxel_ml = float(np.prod(fixed.GetSpacing())) / 1000.0
        atlas_ml = float(
            (itk.array_view_from_image(labels) > 0).sum() * np.prod(labels.GetSpacing()) / 1000.0
        )
        ratio = float((warped_arr > 0).sum() * voxel_ml / atlas_ml) if atlas_ml > 0 else float("nan")
        fixed_arr = np.clip(itk.array_view_from_image(fixed), *REGISTRATION_HU)
        head = fixed_arr > REGISTRATION_HU[0]
        result.ncc = masked_ncc(fixed_arr, itk.array_view_from_image(warped_image), head)
        result.volume_ratio = ratio
        lo, hi = settings.volume_range
        if not lo <= ratio <= hi:
            result.message = (
                f"warped brain volume is {ratio:.2f} x the atlas's (allowed {lo}-{hi}): registration failed"
            )
        else:
            out = itk.image_from_array(warped_arr)
            out.CopyInformation(fixed)
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = str(out_path).replace(".nii.gz", ".partial.nii.gz")
            itk.imwrite(out, tmp, compression=True)
            os.replace(tmp, out_path)  # a finished file is always complete (resumability)
            result.mask = str(out_path)
            if result.ncc < settings.min_ncc:
                result.status = "review"
                result.message = (
                    f"normalised cross-correlation {result.ncc:.3f} < {settings.min_ncc}: check the mask"
                )
            else:
                result.status = "ok"
    except Exception as err:  # one bad scan must not stop the others; the report names it
        result.message = (
            f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300] if str(err).strip() else ''}"
        )
    result.seconds = time.perf_counter() - start
    return result


def _finished(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        import nibabel as nib

        nib.load(path).header.get_data_shape()
        return True
    except Exception:
        return False


def register_manifest(
    manifest: pd.DataFrame,
    atlases: Sequence[Atlas],
    out_dir: Path,
    settings: RegistrationSettings,
    workers: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Register every atlas to every scan; return (manifest with mask columns, per-task report).
    Mask paths are absolute, so the new manifest is valid wherever it is read from."""
    out_dir = Path(out_dir).resolve()
    tasks, results = [], []
    for atlas in atlases:
        for scan_id, image in zip(manifest["scan_id"], manifest["image"], strict=True):
            out_path = out_dir / atlas.name / f"{scan_id}_regions.nii.gz"
            if _finished(out_path):
                results.append(
                    RegistrationResult(scan_id, atlas.name, "skipped", str(out_path), message="exists")
                )
            else:
                tasks.append(
                    (scan_id, image, atlas, str(out_path), str(out_dir / atlas.name / "logs"), settings)
                )
    with tqdm(total=len(tasks), desc="atlas registration", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                results.append(register_one(*task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for future in as_completed([pool.submit(register_one, *t) for t in tasks]):
                    results.append(future.result())
                    bar.update()
    report = pd.DataFrame([asdict(r) for r in results]).sort_values(["atlas", "scan_id"], ignore_index=True)
    out = manifest.copy()
    for i, atlas in enumerate(atlases):
        masks = report[(report["atlas"] == atlas.name) & (report["status"] != "failed")].set_index("scan_id")[
            "mask"
        ]
        column = out["scan_id"].map(masks).fillna("")
        out[f"region_mask__{atlas.name}"] = column
        if i == 0:
            out["region_mask"] = column
    return out, report

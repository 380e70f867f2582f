"""Build an average-CT atlas from N scans (Liu et al. 2023, STAR Methods, "Anatomical region segmentation").

The paper: "10 CT scans were first randomly selected, registered to a reference CT scan, and then
averaged to obtain an average CT image with an image size of 512 x 512 x 32"; a senior radiologist
then annotated the 17 regions on the average image, and that atlas was registered to every scan
(``registration.register_manifest``).

Here: each scan is registered to the reference with elastix (affine then B-spline by default, as for
the atlas-to-scan registration; ``transforms=("affine",)`` for affine only), starting from the
centre-of-gravity alignment that replaces the paper's simulated-annealing centring
(``registration.CENTRE_METHODS``). The scan's HU image is resampled onto the reference grid with
those transforms (linear interpolation; outside the scan's field of view counts as air, -1024 HU, not
as elastix's default 0 = water), and the resampled scans are averaged voxel by voxel. The average
is written as NIfTI in the reference's geometry. With ``reference_labels`` (a region map drawn on the
reference), that map is written next to it: every scan was warped into the reference's anatomy, so the
reference's labels fit the average. Without it, annotate the average as the paper did.

A scan whose registration fails, or whose resampled image correlates with the reference below
``min_ncc`` (normalised cross-correlation over the reference's head voxels), is left out of the average
and listed in the report; fewer than two usable scans is an error. The reference itself is not part
of the average unless ``include_reference`` (the paper averaged the 10 registered scans).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.crossdl.head_ct.registration import (
    REGISTRATION_HU,
    RegistrationSettings,
    masked_ncc,
    parameter_object,
    read_itk,
    registration_image,
)

#: scans the paper averaged into its atlas (STAR Methods, "Anatomical region segmentation")
PAPER_N_SCANS = 10
AIR_HU = -1024.0
ATLAS_IMAGE, ATLAS_LABELS, ATLAS_REPORT = "average_ct.nii.gz", "average_ct_regions.nii.gz", "atlas_report.csv"


class AtlasError(ValueError):
    """An atlas that cannot be built; the message names the file and the fix."""


@dataclass(frozen=True)
class AtlasSettings:
    """``registration``: elastix settings (iterations, grid spacing, threads, centring);
    ``transforms``: elastix stages, in order; ``min_ncc``: least correlation with the reference for a
    registered scan to enter the average."""

    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    transforms: tuple[str, ...] = ("affine", "bspline")
    min_ncc: float = 0.5
    include_reference: bool = False


@dataclass
class AtlasScan:
    image: str
    status: str  # included | excluded | failed
    ncc: float = float("nan")
    seconds: float = 0.0
    message: str = ""


@dataclass
class AtlasBuild:
    image: Path
    labels: Path | None
    report: pd.DataFrame = field(repr=False)

    @property
    def n_averaged(self) -> int:
        return int((self.report["status"] == "included").sum())


def register_to_reference(image, reference, settings: AtlasSettings, log_dir: Path | None = None):
    """``image`` (a NIfTI file, a DICOM folder or an ITK image in HU) resampled onto ``reference``'s grid
    after elastix registration. Returns (HU array in ITK's z, y, x order, NCC with the reference over
    its head voxels, elastix's transform parameter object)."""
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(max(1, settings.registration.threads))
    moving = read_itk(Path(image)) if isinstance(image, (str, Path)) else image
    logging = {}
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        logging = {
            "log_to_file": True,
            "log_file_name": f"{Path(str(image)).name}.log",
            "output_directory": str(log_dir),
        }
    _, transform = itk.elastix_registration_method(
        registration_image(reference, *REGISTRATION_HU),
        registration_image(moving, *REGISTRATION_HU),
        parameter_object=parameter_object(settings.registration, settings.transforms),
        log_to_console=False,
        **logging,
    )
    for i in range(transform.GetNumberOfParameterMaps()):
        transform.SetParameter(i, "DefaultPixelValue", str(AIR_HU))  # outside the scan: air, not water
    transform.SetParameter("FinalBSplineInterpolationOrder", "1")  # linear: no overshoot at the skull
    warped = np.asarray(itk.array_from_image(itk.transformix_filter(moving, transform)), dtype=np.float32)
    ref = np.clip(itk.array_view_from_image(reference), *REGISTRATION_HU)
    ncc = masked_ncc(ref, np.clip(warped, *REGISTRATION_HU), ref > REGISTRATION_HU[0])
    return warped, ncc, transform


def _same_grid(a, b) -> bool:
    return (
        tuple(a.GetLargestPossibleRegion().GetSize()) == tuple(b.GetLargestPossibleRegion().GetSize())
        and np.allclose(np.asarray(a.GetSpacing()), np.asarray(b.GetSpacing()), atol=1e-3)
        and np.allclose(np.asarray(a.GetOrigin()), np.asarray(b.GetOrigin()), atol=1e-2)
        and np.allclose(np.asarray(a.GetDirection()), np.asarray(b.GetDirection()), atol=1e-4)
    )


def build_average_atlas(
    images: Sequence[str | Path],
    reference: str | Path,
    out_dir: str | Path,
    reference_labels: str | Path | None = None,
    settings: AtlasSettings | None = None,
    progress: bool = True,
) -> AtlasBuild:
    """Register every image to ``reference``, average the included ones, write the atlas in ``out_dir``
    (``average_ct.nii.gz``, ``average_ct_regions.nii.gz`` when ``reference_labels`` is given,
    ``atlas_report.csv``, elastix logs under ``logs/``). See the module docstring."""
    import itk
    from tqdm import tqdm

    settings = settings or AtlasSettings()
    out = Path(out_dir)
    reference = Path(reference)
    if not reference.exists():
        raise AtlasError(f"{reference}: reference scan not found.")
    if not images:
        raise AtlasError("no scans to average; the paper averaged 10 (give scan paths or a manifest).")
    missing = [str(p) for p in images if not Path(p).exists()]
    if missing:
        raise AtlasError(f"{missing[0]}: scan not found ({len(missing)} missing); check the paths.")
    duplicates = sorted({str(p) for p in images if list(map(str, images)).count(str(p)) > 1})
    if duplicates:
        raise AtlasError(f"{duplicates[0]} is listed twice; each scan enters the average once.")
    fixed = read_itk(reference)
    labels = None
    if reference_labels is not None:
        labels = read_itk(Path(reference_labels), itk.UC)
        if not _same_grid(labels, fixed):
            raise AtlasError(
                f"{reference_labels}: the region map is not on {reference}'s grid (size, spacing, origin or "
                "direction differ); give the label map drawn on this reference scan."
            )

    total = np.zeros(itk.array_view_from_image(fixed).shape, np.float64)
    rows: list[AtlasScan] = []
    if settings.include_reference:
        total += itk.array_view_from_image(fixed)
        rows.append(AtlasScan(str(reference), "included", 1.0, 0.0, "the reference itself"))
    for image in tqdm(list(images), desc="atlas: registering to the reference", disable=not progress):
        start = time.perf_counter()
        row = AtlasScan(str(image), "failed")
        try:
            warped, row.ncc, _ = register_to_reference(Path(image), fixed, settings, out / "logs")
            if not row.ncc >= settings.min_ncc:
                row.status = "excluded"
                row.message = f"correlation with the reference {row.ncc:.3f} < {settings.min_ncc}"
            else:
                total += warped
                row.status = "included"
        except Exception as err:  # one bad scan must not stop the others; the report names it
            text = str(err).strip()
            row.message = f"{type(err).__name__}: {text.splitlines()[-1][:300] if text else ''}"
        row.seconds = time.perf_counter() - start
        rows.append(row)
    report = pd.DataFrame([asdict(r) for r in rows])
    n = int((report["status"] == "included").sum())
    out.mkdir(parents=True, exist_ok=True)
    report.to_csv(out / ATLAS_REPORT, index=False)
    if n < 2:
        raise AtlasError(
            f"only {n} scan(s) registered well enough to average (need 2; see {out / ATLAS_REPORT}); check "
            "the failed scans or lower min_ncc."
        )
    average = itk.image_from_array((total / n).astype(np.float32))
    average.CopyInformation(fixed)
    itk.imwrite(average, str(out / ATLAS_IMAGE), compression=True)
    labels_path = None
    if labels is not None:
        labels_path = out / ATLAS_LABELS
        itk.imwrite(labels, str(labels_path), compression=True)
    return AtlasBuild(out / ATLAS_IMAGE, labels_path, report)

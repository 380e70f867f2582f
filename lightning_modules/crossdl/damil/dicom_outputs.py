"""DaMIL results as DICOM objects a viewer opens next to the source CT (issue 21, item 4).

For a scan read from a DICOM series, ``<out>/dicom/<scan_id>/`` gets, all made with highdicom, all in
the source series' Frame of Reference and on its slices (one frame per source slice, same
ImagePositionPatient / ImageOrientationPatient / PixelSpacing):

* ``seg.dcm``, a BINARY DICOM Segmentation: one segment per anatomical region of the label space (the
  predicted region segmentation, Liu et al. 2023, "Image analyzer architecture and training": the
  region branch S_i, argmax where > 0.5) and one per abnormality type (the abnormality map D_j
  thresholded at the run's tested Dice threshold, else 0.5; each segment description says which).
  Every segment has one frame per source slice, empty ones included, so frame k of a segment is
  always source slice k (sorted along the slice normal);
* ``pm_<type>.dcm``, one DICOM Parametric Map per abnormality type holding D_j as 32-bit floats.
  A Parametric Map rather than a FRACTIONAL SEG because the fractional SEG stores 8-bit fractions
  (1/255 steps) while the map is a continuous probability: the float map keeps the NIfTI value
  exactly and carries a Real World Value Mapping (unit "no units", range 0-1);
* ``sr.dcm``, a Comprehensive 3D SR with the TID 1500 Measurement Report: per type a scan-level
  finding (the maximum of D_j, the paper's scan probability) referencing that type's segment, and per
  region x type a finding with the final scale's MIL probability referencing the region's segment;
  its evidence lists the source series and the SEG.

The maps are the NIfTI files :func:`~lightning_modules.crossdl.damil.outputs.write_scan_outputs`
wrote, which are already in the scan's own geometry (the preprocessing inverted with MONAI);
:func:`resample_to_source` samples them at every source pixel's patient position, so the frames
match the slices even where the NIfTI grid is reordered (the RAS orientation is undone but MONAI's
voxel order need not be the files' order).

Coding (see ``docs/hospital/dicom-outputs.md``): SNOMED CT where pydicom's code dictionary has the
concept (frontal/parietal/temporal/occipital lobe, lateral ventricle, cerebellum, brain stem, with
Left/Right as SegmentedPropertyTypeModifier / laterality); the paper's four density types
("intraparenchymal hyperdensity" ...) and the regions SNOMED has no concept for in that dictionary
(basal ganglia as the paper delimits it, centrum ovale) get codes of the local scheme
:data:`LOCAL_SCHEME`, declared in each object's CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy.ndimage import map_coordinates
from tqdm import tqdm

from datamodules.crossdl.head_ct.scan_checks import ScanError, list_slice_files
from lightning_modules.crossdl.damil.label_tables import region_colors
from reportsup.contracts.labels.crossdl import LabelSpace
from reportsup.contracts.run_dir import MAPS
from reportsup.version import __version__

#: the private coding scheme of the concepts SNOMED CT (as pydicom's dictionary holds it) lacks
LOCAL_SCHEME = "99REPORTSUP"
DICOM_FOLDER = "dicom"
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
DEFAULT_THRESHOLD = 0.5
#: how far (in voxels) a source pixel may lie outside the NIfTI grid before the maps count as not covering
#: the series (half a voxel: the outer pixels' centres sit on the grid's border voxels' centres)
_COVER_TOLERANCE = 0.51

#: the regions (without their side) that pydicom's SNOMED CT dictionary names; the paper's basal ganglia
#: and centrum ovale are not there (nor an exact equivalent: "corpus striatum" and "cerebral white matter"
#: are narrower / wider), so they take local codes rather than a wrong concept
_SCT_REGIONS: dict[str, Code] = {
    "frontal_lobe": codes.SCT.FrontalLobe,
    "parietal_lobe": codes.SCT.ParietalLobe,
    "temporal_lobe": codes.SCT.TemporalLobe,
    "occipital_lobe": codes.SCT.OccipitalLobe,
    "lateral_ventricle": codes.SCT.LateralVentricle,
    "cerebellum": codes.SCT.Cerebellum,
    "brain_stem": codes.SCT.BrainStem,
}
# Stable local code values for the paper's names; a configured label space's other names get a hash.
_LOCAL_CODES = {
    "intraparenchymal_hyperdensity": "RSUP-T001",
    "extraparenchymal_hyperdensity": "RSUP-T002",
    "intraparenchymal_hypodensity": "RSUP-T003",
    "extraparenchymal_hypodensity": "RSUP-T004",
    "centrum_ovale": "RSUP-R001",
    "basal_ganglia": "RSUP-R002",
}
_LATERALITY = {"left": codes.SCT.Left, "right": codes.SCT.Right}
_NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")


class DicomOutputError(ValueError):
    """The DICOM objects of one scan cannot be made; the message names the scan, the file and the fix."""


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def local_code(name: str) -> hd.sr.CodedConcept:
    """The :data:`LOCAL_SCHEME` code of a label-space name (fixed for the paper's names; ``RSUP-X`` + a
    hash of the name for a configured label space's own names, so it is stable across runs)."""
    value = _LOCAL_CODES.get(name) or "RSUP-X" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return hd.sr.CodedConcept(value, LOCAL_SCHEME, _title(name))


def region_code(region: str) -> tuple[hd.sr.CodedConcept, hd.sr.CodedConcept | None]:
    """(anatomy code, laterality code or None) of a region name such as ``left_frontal_lobe``."""
    side, _, base = region.partition("_")
    if side not in _LATERALITY:
        side, base = "", region
    sct = _SCT_REGIONS.get(base)
    concept = hd.sr.CodedConcept.from_code(sct) if sct is not None else local_code(base)
    laterality = hd.sr.CodedConcept.from_code(_LATERALITY[side]) if side else None
    return concept, laterality


def type_code(kind: str) -> hd.sr.CodedConcept:
    """The finding code of an abnormality type. The paper's types are CT densities by compartment, not
    diagnoses (a hyperdensity may be blood or calcification), so no SNOMED CT disorder code fits them."""
    return local_code(kind)


# ------------------------------------------------------------------------------------------- source
def read_source_series(folder: str | Path, where: str = "") -> list[Dataset]:
    """The series' slice headers (no pixels) sorted along the slice normal (the order every DICOM
    tool uses, whatever the instance numbers say). ``where`` (the scan) prefixes every message."""
    prefix = f"{where}: " if where else ""
    folder = Path(folder)
    try:
        files = list_slice_files(folder)
    except ScanError as err:  # already names the folder and the fix
        raise DicomOutputError(f"{prefix}{err}") from None
    slices = []
    for f in files:
        try:
            slices.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (OSError, InvalidDicomError, ValueError, EOFError) as err:
            # validated before prediction, so the file changed since: name it rather than crash
            raise DicomOutputError(
                f"{prefix}{f}: cannot be read for the DICOM outputs ({type(err).__name__}: {err}); re-export the "
                "series, or rerun with --no-dicom to keep the NIfTI outputs only."
            ) from None
    try:
        orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        return sorted(
            slices, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal))
        )
    except AttributeError as err:
        raise DicomOutputError(
            f"{prefix}{folder}: the slices lack the image plane attributes the DICOM outputs need ({err}); "
            "rerun with --no-dicom to keep the NIfTI outputs only."
        ) from None


def source_voxel_coordinates(ds: Dataset, affine: np.ndarray) -> np.ndarray:
    """(3, rows, columns) voxel coordinates in a NIfTI (RAS affine) of every pixel centre of one slice.

    DICOM: pixel (r, c) lies at ``IPP + c * Δc * row_dir + r * Δr * col_dir`` in LPS, with
    ``PixelSpacing = [Δr, Δc]`` and ``IOP = row_dir + col_dir``; NIfTI world space is RAS (x, y negated).
    """
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
    lps = (
        np.asarray(ds.ImagePositionPatient, dtype=float)[:, None, None]
        + iop[:3, None, None] * (c * d_col)[None]
        + iop[3:, None, None] * (r * d_row)[None]
    )
    ras = lps * np.array([-1.0, -1.0, 1.0])[:, None, None]
    world = np.concatenate([ras, np.ones((1, *ras.shape[1:]))])
    return np.tensordot(np.linalg.inv(affine), world, axes=1)[:3]


def resample_to_source(
    volume: np.ndarray, affine: np.ndarray, slices: Sequence[Dataset], order: int, where: str
) -> np.ndarray:
    """Sample a 3-D volume (or 4-D, channels last) at every pixel of the source slices:
    (n_slices, rows, columns[, channels]). ``order`` 0 for labels, 1 for probabilities; on the source
    grid itself the result is the volume's own values."""
    shape = np.array(volume.shape[:3])
    channels = volume[..., None] if volume.ndim == 3 else volume
    frames = []
    for k, ds in enumerate(slices):
        coords = source_voxel_coordinates(ds, affine)
        # the inverse affine leaves ~1e-7 voxel of rounding on a shared grid; snapping it keeps the
        # promise that a map on the source grid comes back value for value (no blend with a neighbour)
        nearest = np.rint(coords)
        coords = np.where(np.abs(coords - nearest) < 1e-4, nearest, coords)
        outside = np.maximum(-coords, coords - (shape - 1)[:, None, None]).max()
        if outside > _COVER_TOLERANCE:
            raise DicomOutputError(
                f"{where}: slice {k + 1} ({getattr(ds, 'SOPInstanceUID', '?')}) lies {outside:.1f} voxels "
                "outside the NIfTI map, so the map was not made from this series; rerun the prediction on "
                "the series the manifest names, or use --no-dicom."
            )
        if np.array_equal(coords, nearest):
            # the usual case (the maps are on the scan's own grid): a lookup gives the same values as
            # sampling, without the cost of scipy's per-channel interpolation on full-size slices
            index = nearest.astype(np.intp)
            frames.append(channels[index[0], index[1], index[2]])
            continue
        frames.append(
            np.stack(
                [
                    map_coordinates(channels[..., j], coords, order=order, mode="nearest")
                    for j in range(channels.shape[-1])
                ],
                -1,
            )
        )
    out = np.stack(frames)
    return out[..., 0] if volume.ndim == 3 else out


# ------------------------------------------------------------------------------------------- objects
def _coding_schemes() -> list[hd.coding_schemes.CodingSchemeIdentificationItem]:
    """The declaration of :data:`LOCAL_SCHEME` every object carries (PS3.3 C.12.1.1.4: a private
    scheme designator must be identified in the CodingSchemeIdentificationSequence)."""
    return [
        hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=LOCAL_SCHEME,
            name="reportsup local codes (Cross-DL label space, Liu et al. 2023)",
            responsible_organization="reportsup project",
        )
    ]


def _algorithm() -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="reportsup DaMIL", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )


def _device() -> dict[str, str]:
    return {
        "manufacturer": "reportsup",
        "manufacturer_model_name": "DaMIL analyzer",
        "software_versions": __version__,
        "device_serial_number": "none",
    }


#: display colours of the thresholded abnormality segments (warm = hyper-, cold = hypodensity)
_TYPE_COLORS = [(255, 0, 0), (255, 160, 0), (0, 90, 255), (0, 210, 230)]


def segment_descriptions(
    space: LabelSpace, thresholds: Mapping[str, tuple[float, str]]
) -> list[hd.seg.SegmentDescription]:
    """Segments 1..N: the anatomical regions; N+1..N+M: the thresholded abnormality maps.

    A region's side is a SegmentedPropertyTypeModifier (Left/Right), as DICOM codes laterality of a
    paired structure (PS3.3 C.8.20.2, CID 244), so "left frontal lobe" is Frontal lobe + Left."""
    out = []
    for i, (region, rgb) in enumerate(zip(space.anatomical_regions, region_colors(space), strict=True)):
        concept, laterality = region_code(region)
        seg = hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=_title(region)[:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=concept,
            algorithm_type="AUTOMATIC",
            algorithm_identification=_algorithm(),
            tracking_id=f"region:{region}"[:64],
            tracking_uid=hd.UID(),
            display_color=hd.color.CIELabColor.from_rgb(*rgb),
        )
        if laterality is not None:
            modifier = Dataset()
            modifier.CodeValue, modifier.CodingSchemeDesignator = (
                laterality.value,
                laterality.scheme_designator,
            )
            modifier.CodeMeaning = laterality.meaning
            seg.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
        seg.SegmentDescription = f"DaMIL region branch: argmax of S where > 0.5 ({region})"[:64]
        out.append(seg)
    n = len(out)
    for j, kind in enumerate(space.types):
        threshold, source = thresholds[kind]
        seg = hd.seg.SegmentDescription(
            segment_number=n + j + 1,
            segment_label=_title(kind)[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=type_code(kind),
            algorithm_type="AUTOMATIC",
            algorithm_identification=_algorithm(),
            tracking_id=f"abnormality:{kind}"[:64],
            tracking_uid=hd.UID(),
            anatomic_regions=[codes.SCT.Brain],
            display_color=hd.color.CIELabColor.from_rgb(*_TYPE_COLORS[j % len(_TYPE_COLORS)]),
        )
        seg.SegmentDescription = f"probability >= {threshold:g} ({source})"[:64]
        out.append(seg)
    return out


@dataclass
class DicomScanOutputs:
    """The files written for one scan."""

    seg: Path
    parametric_maps: list[Path]
    sr: Path


def abnormality_thresholds(
    space: LabelSpace, dice_thresholds: Mapping[str, float]
) -> dict[str, tuple[float, str]]:
    """Per type (threshold, where it comes from): the run's tested Dice threshold (``metrics.json``,
    chosen on validation or fixed by ``model.dice_threshold``) when known, else 0.5."""
    return {
        t: (float(dice_thresholds[t]), "tested Dice threshold")
        if t in dice_thresholds
        else (DEFAULT_THRESHOLD, "default, no tested threshold")
        for t in space.types
    }


def scan_dicom_folder(out_dir: Path, scan_id: str) -> Path:
    """Where one scan's DICOM objects go: ``<out_dir>/dicom/<scan_id>/`` (one folder to import)."""
    return out_dir / DICOM_FOLDER / scan_id


def write_dicom_outputs(
    scan_id: str,
    source: str | Path,
    maps_dir: Path,
    out_dir: Path,
    space: LabelSpace,
    prediction: Mapping[str, float],
    dice_thresholds: Mapping[str, float] | None = None,
) -> DicomScanOutputs:
    """SEG, one Parametric Map per type and the TID 1500 SR of one scan into ``out_dir/dicom/<scan_id>/``.

    Args:
        scan_id: the manifest's scan id (names the NIfTI maps in ``maps_dir``).
        source: the scan's DICOM series folder (the manifest's ``image``).
        maps_dir: the folder holding ``<scan_id>_abnormality.nii.gz`` and ``<scan_id>_regions.nii.gz``.
        out_dir: the prediction folder.
        space: the model's label space (segment and finding names).
        prediction: the scan's row of ``predictions.csv`` (``scan__<type>``, ``<region>__<type>``).
        dice_thresholds: per type, the run's tested abnormality-map threshold (else 0.5).
    """
    where = f"scan {scan_id} ({source})"
    slices = read_source_series(source, f"scan {scan_id}")
    abn_path, reg_path = maps_dir / f"{scan_id}_abnormality.nii.gz", maps_dir / f"{scan_id}_regions.nii.gz"
    for path in (abn_path, reg_path):
        if not path.exists():
            raise DicomOutputError(
                f"{where}: {path} is missing; the DICOM outputs are made from the NIfTI maps "
                "(do not combine --dicom with --no-maps)."
            )
    abn, reg = nib.load(abn_path), nib.load(reg_path)
    probs = resample_to_source(np.asarray(abn.dataobj, dtype=np.float32), abn.affine, slices, 1, where)
    labels = resample_to_source(np.asarray(reg.dataobj), reg.affine, slices, 0, where)
    labels = np.rint(labels).astype(np.int64)
    if probs.shape[-1] != len(space.types):
        raise DicomOutputError(
            f"{where}: {abn_path} holds {probs.shape[-1]} maps but the model's label space has "
            f"{len(space.types)} types; the maps folder is from another model: predict into a new --out-dir."
        )

    thresholds = abnormality_thresholds(space, dice_thresholds or {})
    n_r = len(space.anatomical_regions)
    masks = np.concatenate(
        [
            labels[..., None] == np.arange(1, n_r + 1),
            probs >= np.array([thresholds[t][0] for t in space.types], dtype=np.float32),
        ],
        -1,
    )
    folder = scan_dicom_folder(out_dir, scan_id)
    folder.mkdir(parents=True, exist_ok=True)

    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(space, thresholds),
        series_instance_uid=hd.UID(),
        series_number=9001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        # one frame per source slice for every segment: frame k <-> slice k, whatever is empty
        omit_empty_frames=False,
        series_description="reportsup DaMIL regions + abnormalities",
        content_label="DAMIL",
        content_description="DaMIL predicted regions and thresholded abnormality maps",
        coding_schemes=_coding_schemes(),
        **_device(),
    )
    seg.save_as(folder / SEG_FILE)

    pm_series = hd.UID()
    pms = []
    for j, kind in enumerate(space.types):
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=f"P{j + 1}",
            lut_explanation=f"{_title(kind)} probability"[:64],
            unit=_NO_UNITS,
            value_range=(0.0, 1.0),
            slope=1.0,
            intercept=0.0,
            quantity_definition=codes.DCM.Probability,
        )
        pm = hd.pm.ParametricMap(
            source_images=slices,
            pixel_array=np.ascontiguousarray(probs[..., j], dtype=np.float32),
            series_instance_uid=pm_series,
            series_number=9002,
            sop_instance_uid=hd.UID(),
            instance_number=j + 1,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            # viewers open the map windowed on the probability range
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
            content_label=f"PROB{j + 1}",
            content_description=f"DaMIL {kind} probability map"[:64],
            series_description="reportsup DaMIL probability maps",
            coding_schemes=_coding_schemes(),
            **_device(),
        )
        path = folder / f"pm_{kind}.dcm"
        pm.save_as(path)
        pms.append(path)

    sr = _structured_report(slices, seg, space, prediction)
    sr.save_as(folder / SR_FILE)
    return DicomScanOutputs(folder / SEG_FILE, pms, folder / SR_FILE)


def _structured_report(
    slices: Sequence[Dataset], seg: hd.seg.Segmentation, space: LabelSpace, prediction: Mapping[str, float]
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 with one TID 1411 volumetric group per finding: per type the scan-level probability
    (the maximum of D_j, referencing its thresholded-map segment), per region x type the final scale's
    MIL probability (referencing the region's segment, the region as finding site)."""
    source_series = hd.sr.SourceSeriesForSegmentation(slices[0].SeriesInstanceUID)
    algorithm = hd.sr.AlgorithmIdentification(name="reportsup DaMIL", version=__version__)
    n_r = len(space.anatomical_regions)

    def group(label: str, segment: int, kind: str, value: float, site: hd.sr.FindingSite | None):
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label[:64]),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=segment,
                source_series=source_series,
            ),
            finding_type=type_code(kind),
            finding_sites=[site] if site is not None else None,
            algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(
                    name=codes.DCM.Probability, value=float(value), unit=_NO_UNITS, algorithm_id=algorithm
                )
            ],
        )

    groups = [
        group(f"scan {kind}", n_r + j + 1, kind, prediction[f"scan__{kind}"], None)
        for j, kind in enumerate(space.types)
    ]
    for i, region in enumerate(space.anatomical_regions):
        concept, laterality = region_code(region)
        site = hd.sr.FindingSite(anatomic_location=concept, laterality=laterality)
        groups += [
            group(f"{region} {kind}", i + 1, kind, prediction[f"{region}__{kind}"], site)
            for kind in space.types
        ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=hd.UID(), name="reportsup DaMIL", manufacturer_name="reportsup"
                ),
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*slices, seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=9003,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="reportsup",
        series_description="reportsup DaMIL findings",
        coding_schemes=_coding_schemes(),
    )


# ------------------------------------------------------------------------------------------- many scans
DICOM_FAILED_FILE = "dicom_failed.csv"


@dataclass
class DicomResults:
    """What :func:`write_dicom_results` did: files per scan, scans given none and why."""

    written: dict[str, DicomScanOutputs] = field(default_factory=dict)
    not_dicom: list[str] = field(default_factory=list)  # NIfTI inputs: nothing to reference
    failed: list[dict[str, str]] = field(default_factory=list)  # scan_id, message

    def summary(self) -> str:
        """One line for the console: what was written, and (once) which scans got none and why."""
        parts = [f"DICOM SEG/Parametric Map/SR written for {len(self.written)} scan(s)"]
        if self.not_dicom:
            names = ", ".join(self.not_dicom[:5]) + (" ..." if len(self.not_dicom) > 5 else "")
            parts.append(
                f"{len(self.not_dicom)} scan(s) read from NIfTI have no source DICOM series to reference, so "
                f"they get NIfTI maps only: {names}"
            )
        if self.failed:
            parts.append(
                f"{len(self.failed)} scan(s) got no DICOM outputs (listed in {DICOM_FAILED_FILE}), e.g. "
                f"{self.failed[0]['message']}"
            )
        return "; ".join(parts)


def write_dicom_results(
    predictions: pd.DataFrame,
    manifest: pd.DataFrame,
    out_dir: Path,
    space: LabelSpace,
    dice_thresholds: Mapping[str, float] | None = None,
    progress: bool = False,
) -> DicomResults:
    """:func:`write_dicom_outputs` for every predicted scan whose manifest ``image`` is a DICOM series
    folder (``predictions`` as ``predict_scans`` returns it, its maps in ``out_dir/maps``). A scan
    whose objects cannot be made is listed with its reason in ``dicom_failed.csv``, not raised: the
    others still get theirs, and its NIfTI maps and probabilities stay valid."""
    images = dict(zip(manifest["scan_id"].astype(str), manifest["image"].astype(str), strict=True))
    result = DicomResults()
    for row in tqdm(predictions.to_dict("records"), desc="DICOM outputs", disable=not progress):
        scan_id = str(row["scan_id"])
        source = Path(images[scan_id])
        if not source.is_dir():  # validated before prediction: a file here is a NIfTI scan
            result.not_dicom.append(scan_id)
            continue
        try:
            result.written[scan_id] = write_dicom_outputs(
                scan_id, source, out_dir / MAPS, out_dir, space, row, dice_thresholds
            )
        except DicomOutputError as err:
            result.failed.append({"scan_id": scan_id, "message": str(err)})
    if result.failed:
        pd.DataFrame(result.failed, columns=["scan_id", "message"]).to_csv(
            out_dir / DICOM_FAILED_FILE, index=False
        )
    return result

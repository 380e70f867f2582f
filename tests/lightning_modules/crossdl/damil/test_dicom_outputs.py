"""reportsup-damil-predict's DICOM outputs (issue 21, item 4): a tiny untrained DaMIL predicts a DICOM
phantom series, the same series stored top-down (files and instance numbers in reverse) and with
shuffled instance numbers, and a NIfTI scan;
every SEG, Parametric Map and TID 1500 SR is read back with pydicom / highdicom and checked against its
source series (frames, geometry per slice, Frame of Reference, referenced instances), the label space
(segment labels and codes) and the NIfTI outputs (maps, predictions table); the label tables name every
index and channel. A model-free test writes known maps (the phantom's true regions and lesions) and
checks that each frame holds its own slice's truth, whatever order the files come in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from nibabel.affines import apply_affine
from pydicom.data import get_testdata_file

from datamodules.crossdl.head_ct.transforms import PreprocessConfig
from datamodules.synthetic.datasets.ct_scans import write_ct_scan_dataset
from lightning_modules.crossdl.damil.dicom_outputs import (
    LOCAL_SCHEME,
    DicomOutputError,
    region_code,
    type_code,
    write_dicom_outputs,
)
from lightning_modules.crossdl.damil.label_tables import (
    CHANNELS_JSON,
    CHANNELS_TSV,
    ITKSNAP_FILE,
    SLICER_FILE,
)
from lightning_modules.crossdl.damil.module import DaMILModule
from reportsup.api.scans import ScanAnalyzer
from reportsup.cli import damil_predict
from reportsup.contracts.labels.crossdl import LabelSpace

SPACE = LabelSpace()
N_REGIONS, N_TYPES = len(SPACE.anatomical_regions), len(SPACE.types)
#: tiny phantoms: 40 x 40 pixels, 12 slices (the validator's minimum is 10)
SHAPE, SPACING = (40, 40, 12), (6.0, 6.0, 12.8)


def _reverse_series(src: Path, dst: Path) -> Path:
    """The same series (same UIDs) stored top-down, as many scanners number head CTs: InstanceNumber 1
    is the highest slice and the file names run the other way."""
    dst.mkdir(parents=True)
    files = sorted(src.glob("*.dcm"))
    n = len(files)
    for f in files:
        ds = pydicom.dcmread(f)
        k = int(ds.InstanceNumber) - 1  # the phantom writer's slice index (bottom-up)
        ds.InstanceNumber = n - k
        ds.save_as(dst / f"IM{n - 1 - k:04d}.dcm")
    return dst


def _shuffle_instance_numbers(src: Path, dst: Path) -> Path:
    """The same series with instance numbers that disagree with the slice positions (issue 21 item 2:
    read in position order, not refused)."""
    shutil.copytree(src, dst)
    files = sorted(dst.iterdir())
    for f, number in zip(files, np.random.default_rng(0).permutation(len(files)) + 1, strict=True):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(number)
        ds.save_as(f)
    return dst


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_ct_scan_dataset(
        tmp_path_factory.mktemp("dicom_out") / "ct",
        n_scans=2,
        seed=3,
        shape=SHAPE,
        spacing=SPACING,
        n_reference_atlases=0,
        progress=False,
        workers=1,
    )


@pytest.fixture(scope="module")
def predicted(phantoms, tmp_path_factory):
    """An untrained tiny DaMIL exported (loaded without pickle) and a manifest of a DICOM phantom, its
    top-down and shuffled-instance-number copies and a second phantom as NIfTI; (out, manifest, work)."""
    work = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    module = DaMILModule(network={"base_filters": 2, "depth": 4, "n_scales": 2})
    analyzer = ScanAnalyzer(module, PreprocessConfig(spatial_size=(32, 32, 16)), {"mean": 60.0, "std": 50.0})
    analyzer.save_pretrained(work / "model")
    rows = pd.read_csv(phantoms / "manifest.csv", dtype=str)
    first, second = rows.iloc[0], rows.iloc[1]
    manifest = pd.DataFrame(
        {
            "scan_id": [first["scan_id"], "reversed", "shuffled", "as_nifti"],
            "patient_id": [first["patient_id"]] * 3 + [second["patient_id"]],
            "image": [
                str(phantoms / first["image"]),
                str(_reverse_series(phantoms / first["image"], work / "reversed")),
                str(_shuffle_instance_numbers(phantoms / first["image"], work / "shuffled")),
                str(phantoms / "nifti" / f"{second['scan_id']}.nii.gz"),
            ],
        }
    )
    manifest.to_csv(work / "manifest.csv", index=False)
    out = work / "out"
    return out, manifest, work


@pytest.fixture(scope="module")
def cli_output(predicted) -> str:
    """reportsup-damil-predict run once for the module (DICOM outputs on by default); its console output."""
    import contextlib
    import io

    out, _, work = predicted
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        damil_predict.main(
            [str(work / "model"), str(work / "manifest.csv"), "--out-dir", str(out), "--top", "1"]
        )
    return buffer.getvalue()


def _sources(folder: str | Path) -> dict[str, pydicom.Dataset]:
    """The source series' headers by SOPInstanceUID."""
    return {
        ds.SOPInstanceUID: ds
        for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in Path(folder).iterdir())
    }


def _frame_source(frame: pydicom.Dataset) -> str:
    return frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID


def _nifti_on_slice(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """The NIfTI map's voxels at the pixel centres of one DICOM slice, by plain index lookup (the maps are
    on the scan's own grid, so every pixel centre must land on a voxel centre: asserted)."""
    image = nib.load(path)
    ijk = apply_affine(np.linalg.inv(image.affine), _ras_of_pixels(ds))  # NIfTI world is RAS
    index = np.rint(ijk).astype(int)
    np.testing.assert_allclose(ijk, index, atol=1e-3)
    data = np.asarray(image.dataobj)
    return data[index[..., 0], index[..., 1], index[..., 2]]


def test_parametric_maps_hold_the_nifti_maps_on_every_source_slice(predicted, cli_output):
    out, manifest, _ = predicted
    for scan_id, image in zip(manifest["scan_id"][:3], manifest["image"][:3], strict=True):
        sources = _sources(image)
        frame_of_reference = {ds.FrameOfReferenceUID for ds in sources.values()}.pop()
        for j, kind in enumerate(SPACE.types):
            pm = pydicom.dcmread(out / "dicom" / scan_id / f"pm_{kind}.dcm")
            assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
            assert pm.NumberOfFrames == len(sources)
            assert pm.FrameOfReferenceUID == frame_of_reference
            assert (
                pm.ReferencedSeriesSequence[0].SeriesInstanceUID
                == next(iter(sources.values())).SeriesInstanceUID
            )
            shared = pm.SharedFunctionalGroupsSequence[0]
            pixels = pm.pixel_array
            assert pixels.dtype == np.float32
            seen = []
            for frame, values in zip(pm.PerFrameFunctionalGroupsSequence, pixels, strict=True):
                ds = sources[_frame_source(frame)]
                seen.append(ds.SOPInstanceUID)
                np.testing.assert_allclose(
                    frame.PlanePositionSequence[0].ImagePositionPatient, ds.ImagePositionPatient
                )
                np.testing.assert_allclose(
                    shared.PlaneOrientationSequence[0].ImageOrientationPatient, ds.ImageOrientationPatient
                )
                np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, ds.PixelSpacing)
                expected = _nifti_on_slice(out / "maps" / f"{scan_id}_abnormality.nii.gz", ds)[..., j]
                np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
            assert sorted(seen) == sorted(sources)  # every source slice exactly once
            mapping = shared.RealWorldValueMappingSequence[0]
            assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == "Probability"


def test_segmentation_segments_are_the_label_space_with_its_codes_on_the_source_geometry(
    predicted, cli_output
):
    out, manifest, _ = predicted
    scan_id, image = manifest["scan_id"].iloc[0], manifest["image"].iloc[0]
    sources = _sources(image)
    seg = hd.seg.segread(out / "dicom" / scan_id / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    assert seg.NumberOfFrames == (N_REGIONS + N_TYPES) * len(sources)  # every segment on every slice
    assert seg.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(sources)
    assert [c.CodingSchemeDesignator for c in seg.CodingSchemeIdentificationSequence] == [LOCAL_SCHEME]

    # Labels and codes: regions first (SNOMED CT + Left/Right modifier, or the local scheme), then types.
    for i, region in enumerate(SPACE.anatomical_regions):
        description = seg.get_segment_description(i + 1)
        assert description.segment_label == region.replace("_", " ").capitalize()
        concept, laterality = region_code(region)
        item = description.SegmentedPropertyTypeCodeSequence[0]
        assert (item.CodeValue, item.CodingSchemeDesignator) == (concept.value, concept.scheme_designator)
        if region == "left_frontal_lobe":
            assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == (
                "83251001",
                "SCT",
                "Frontal lobe",
            )
        if region.endswith("basal_ganglia") or region.endswith("centrum_ovale"):
            assert item.CodingSchemeDesignator == LOCAL_SCHEME  # not in pydicom's SNOMED CT dictionary
        modifiers = item.get("SegmentedPropertyTypeModifierCodeSequence", [])
        assert [m.CodeMeaning for m in modifiers] == ([laterality.meaning] if laterality else [])
        if region.startswith("right_"):
            assert modifiers[0].CodeValue == "24028007"
    for j, kind in enumerate(SPACE.types):
        description = seg.get_segment_description(N_REGIONS + j + 1)
        assert description.segment_label == kind.replace("_", " ").capitalize()
        assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == type_code(kind).value
        assert "probability >= 0.5" in description.SegmentDescription  # no tested threshold: 0.5

    # Every frame on its source slice, holding the NIfTI region map / thresholded maps there.
    frames = seg.pixel_array
    for frame, mask in zip(seg.PerFrameFunctionalGroupsSequence, frames, strict=True):
        ds = sources[_frame_source(frame)]
        np.testing.assert_allclose(
            frame.PlanePositionSequence[0].ImagePositionPatient, ds.ImagePositionPatient
        )
        segment = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        if segment <= N_REGIONS:
            expected = _nifti_on_slice(out / "maps" / f"{scan_id}_regions.nii.gz", ds) == segment
        else:
            maps = _nifti_on_slice(out / "maps" / f"{scan_id}_abnormality.nii.gz", ds)
            expected = maps[..., segment - N_REGIONS - 1] >= 0.5
        np.testing.assert_array_equal(mask.astype(bool), expected)


def test_structured_report_lists_every_finding_with_the_predicted_probability(predicted, cli_output):
    out, manifest, _ = predicted
    table = pd.read_csv(out / "predictions.csv", dtype={"scan_id": str}).set_index("scan_id")
    scan_id, image = manifest["scan_id"].iloc[0], manifest["image"].iloc[0]
    sources = _sources(image)
    seg = pydicom.dcmread(out / "dicom" / scan_id / "seg.dcm", stop_before_pixels=True)
    sr = hd.sr.srread(out / "dicom" / scan_id / "sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == set(sources) | {seg.SOPInstanceUID}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == N_TYPES + N_REGIONS * N_TYPES
    found = {}
    for group in groups:
        (measurement,) = group.get_measurements()
        assert measurement.name.meaning == "Probability"
        kind = next(t for t in SPACE.types if type_code(t).value == group.finding_type.value)
        sites = group.finding_sites
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        (number,) = segment.referenced_segment_numbers
        if not sites:  # the scan-level finding references the type's thresholded-map segment
            assert number == N_REGIONS + SPACE.types.index(kind) + 1
            found[f"scan__{kind}"] = measurement.value
            continue
        region = SPACE.anatomical_regions[number - 1]
        concept, laterality = region_code(region)
        assert sites[0].value == concept  # the region as finding site (a CodedConcept) ...
        assert sites[0].laterality == laterality  # ... with its side as laterality
        found[f"{region}__{kind}"] = measurement.value
    expected = table.loc[scan_id].drop("patient_id").astype(float)
    expected = expected[
        [c for c in expected.index if not c.endswith("_positive")]
    ]  # decisions: not in the SR
    assert sorted(found) == sorted(expected.index)
    np.testing.assert_allclose([found[k] for k in expected.index], expected.to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("stored", ["reversed", "shuffled"])
def test_a_series_stored_in_another_order_gets_the_same_maps_on_the_same_slices(
    predicted, cli_output, stored
):
    """The reversed copy (files and instance numbers top-down) and the shuffled one (instance numbers
    that disagree with the positions) hold the same instances: each one's frame must hold the same values
    as in the original, whatever order the files were read in for prediction."""
    out, manifest, _ = predicted
    original, reversed_ = manifest["scan_id"].iloc[0], stored

    def by_source(scan: str, kind: str) -> dict[str, np.ndarray]:
        pm = pydicom.dcmread(out / "dicom" / scan / f"pm_{kind}.dcm")
        return {
            _frame_source(f): v
            for f, v in zip(pm.PerFrameFunctionalGroupsSequence, pm.pixel_array, strict=True)
        }

    for kind in SPACE.types:
        a, b = by_source(original, kind), by_source(reversed_, kind)
        assert sorted(a) == sorted(b)
        for uid in a:
            np.testing.assert_allclose(a[uid], b[uid], rtol=1e-5, atol=1e-6)


def test_nifti_scans_get_nifti_only_and_one_note(predicted, cli_output):
    out, manifest, _ = predicted
    assert cli_output.count("read from NIfTI") == 1 and "as_nifti" in cli_output
    assert "DICOM SEG/Parametric Map/SR written for 3 scan(s)" in cli_output
    assert not (out / "dicom" / "as_nifti").exists()
    assert (out / "maps" / "as_nifti_abnormality.nii.gz").exists()
    assert not (out / "dicom_failed.csv").exists()


def test_label_tables_name_every_index_and_channel(predicted, cli_output):
    out, _, _ = predicted
    maps = out / "maps"
    names = ["none", *SPACE.anatomical_regions]
    itk = [line for line in (maps / ITKSNAP_FILE).read_text().splitlines() if not line.startswith("#")]
    assert [int(line.split()[0]) for line in itk] == list(range(N_REGIONS + 1))
    assert [line.split('"')[1] for line in itk] == names
    slicer = [
        line.split() for line in (maps / SLICER_FILE).read_text().splitlines() if not line.startswith("#")
    ]
    assert [(int(s[0]), s[1]) for s in slicer] == list(enumerate(names))
    assert all(len(s) == 6 for s in slicer)  # index name R G B A
    channels = pd.read_csv(maps / CHANNELS_TSV, sep="\t")
    assert channels["type"].tolist() == list(SPACE.types) and channels["channel"].tolist() == list(
        range(N_TYPES)
    )
    assert [c["type"] for c in json.loads((maps / CHANNELS_JSON).read_text())["channels"]] == list(
        SPACE.types
    )
    # Every value a region map holds is named, and each NIfTI names its own contents in its header.
    for path in maps.glob("*_regions.nii.gz"):
        image = nib.load(path)
        assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= set(range(N_REGIONS + 1))
        header = json.loads(image.header.extensions[0].get_content())
        assert header["labels"] == {str(i): n for i, n in enumerate(names)}
    abnormality = nib.load(next(maps.glob("*_abnormality.nii.gz")))
    assert json.loads(abnormality.header.extensions[0].get_content())["channels"] == {
        str(j): t for j, t in enumerate(SPACE.types)
    }
    assert abnormality.header["descrip"].item().decode().startswith("DaMIL probabilities, last axis:")


# --------------------------------------------------------------------------------------- model-free
def _truth_maps(phantoms: Path, scan_id: str, folder: Path) -> Path:
    """The phantom's true region map and its lesion bits as four 0/1 'probability' channels, under the
    names the DICOM writer reads."""
    folder.mkdir(parents=True, exist_ok=True)
    regions = nib.load(phantoms / "truth" / f"{scan_id}_regions.nii.gz")
    lesions = nib.load(phantoms / "truth" / f"{scan_id}_lesions.nii.gz")
    bits = np.asarray(lesions.dataobj).astype(np.int64)
    channels = np.stack([(bits >> j) & 1 for j in range(N_TYPES)], -1).astype(np.float32)
    nib.save(nib.Nifti1Image(channels, lesions.affine), folder / f"{scan_id}_abnormality.nii.gz")
    nib.save(regions, folder / f"{scan_id}_regions.nii.gz")
    return folder


def _prediction_row() -> dict[str, float]:
    return {f"scan__{t}": 0.5 for t in SPACE.types} | {
        f"{r}__{t}": 0.25 for r in SPACE.anatomical_regions for t in SPACE.types
    }


@pytest.mark.parametrize("storage", ["as_written", "reversed", "shuffled_instance_numbers"])
def test_each_frame_holds_its_own_slices_truth_whatever_the_file_order(phantoms, tmp_path, storage):
    """Slice k of the phantom is ``truth[:, :, k].T`` (rows along +y, columns along +x) and was written
    with InstanceNumber k + 1; whatever order the files and numbers come in, the SEG frame referencing
    that instance must hold region i exactly where the truth has i + 1, and the Parametric Map its bits."""
    scan_id = "HCT00000"
    series = phantoms / "dicom" / scan_id
    slice_of = {ds.SOPInstanceUID: int(ds.InstanceNumber) - 1 for ds in _sources(series).values()}
    if storage == "reversed":
        series = _reverse_series(series, tmp_path / "series")
    elif storage == "shuffled_instance_numbers":  # numbers that disagree with the positions (item 2)
        series = _shuffle_instance_numbers(series, tmp_path / "series")
    maps = _truth_maps(phantoms, scan_id, tmp_path / "maps")
    written = write_dicom_outputs(scan_id, series, maps, tmp_path / "out", SPACE, _prediction_row())

    regions = np.asarray(nib.load(maps / f"{scan_id}_regions.nii.gz").dataobj)
    seg = hd.seg.segread(written.seg)
    for frame, mask in zip(seg.PerFrameFunctionalGroupsSequence, seg.pixel_array, strict=True):
        segment = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        if segment > N_REGIONS:
            continue
        k = slice_of[_frame_source(frame)]
        np.testing.assert_array_equal(mask.astype(bool), regions[:, :, k].T == segment)
    bits = np.asarray(nib.load(phantoms / "truth" / f"{scan_id}_lesions.nii.gz").dataobj).astype(np.int64)
    assert bits.any()  # the check below would be empty otherwise
    for j, path in enumerate(written.parametric_maps):
        pm = pydicom.dcmread(path)
        for frame, values in zip(pm.PerFrameFunctionalGroupsSequence, pm.pixel_array, strict=True):
            k = slice_of[_frame_source(frame)]
            np.testing.assert_array_equal(values, ((bits[:, :, k].T >> j) & 1).astype(np.float32))


def _ras_of_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """(rows, columns, 3) RAS world position of every pixel centre of a slice (PS3.3 C.7.6.2.1.1)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
    lps = (
        np.asarray(ds.ImagePositionPatient, float)
        + c[..., None] * d_col * iop[:3]
        + r[..., None] * d_row * iop[3:]
    )
    return lps * [-1, -1, 1]


def test_maps_off_the_source_grid_are_sampled_at_each_pixels_position(phantoms, tmp_path):
    """Maps on a grid shifted by 0.3 voxel (and one voxel wider on every side) hold a linear ramp of the
    RAS position; trilinear sampling reproduces a ramp exactly, so each Parametric Map pixel must equal
    the ramp at that pixel's own patient position."""
    scan_id = "HCT00000"
    truth = nib.load(phantoms / "truth" / f"{scan_id}_regions.nii.gz")
    shift = np.eye(4)
    shift[:3, 3] = -0.7  # voxel 0 of the new grid sits 0.7 voxel before the scan's voxel 0
    affine = truth.affine @ shift
    shape = tuple(n + 2 for n in truth.shape)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    ras = apply_affine(affine, ijk)

    def ramp(xyz: np.ndarray) -> np.ndarray:
        return 0.5 + xyz @ np.array([0.001, 0.0015, 0.002])

    channels = np.stack([ramp(ras) * (j + 1) / N_TYPES for j in range(N_TYPES)], -1).astype(np.float32)
    maps = tmp_path / "maps"
    maps.mkdir()
    nib.save(nib.Nifti1Image(channels, affine), maps / f"{scan_id}_abnormality.nii.gz")
    nib.save(nib.Nifti1Image(np.full(shape, 3, np.uint8), affine), maps / f"{scan_id}_regions.nii.gz")
    written = write_dicom_outputs(
        scan_id, phantoms / "dicom" / scan_id, maps, tmp_path / "out", SPACE, _prediction_row()
    )
    sources = _sources(phantoms / "dicom" / scan_id)
    for j, path in enumerate(written.parametric_maps):
        pm = pydicom.dcmread(path)
        for frame, values in zip(pm.PerFrameFunctionalGroupsSequence, pm.pixel_array, strict=True):
            expected = ramp(_ras_of_pixels(sources[_frame_source(frame)])) * (j + 1) / N_TYPES
            np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    seg = hd.seg.segread(written.seg)
    for frame, mask in zip(seg.PerFrameFunctionalGroupsSequence, seg.pixel_array, strict=True):
        segment = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        if segment <= N_REGIONS:  # region 3 everywhere, by nearest neighbour
            assert mask.all() if segment == 3 else not mask.any()


# --------------------------------------------------------------------------------------- input problems
def test_maps_from_another_series_are_refused_naming_the_scan_and_slice(phantoms, tmp_path):
    scan_id = "HCT00000"
    shifted = shutil.copytree(phantoms / "dicom" / scan_id, tmp_path / "moved")
    for f in shifted.iterdir():  # the same images 300 mm higher: not what the maps were made from
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 300]
        ds.save_as(f)
    maps = _truth_maps(phantoms, scan_id, tmp_path / "maps")
    with pytest.raises(DicomOutputError) as err:
        write_dicom_outputs(scan_id, shifted, maps, tmp_path / "out", SPACE, _prediction_row())
    message = str(err.value)
    assert message.startswith(f"scan {scan_id} ({shifted})") and "outside the NIfTI map" in message
    assert "--no-dicom" in message


def test_a_slice_damaged_after_prediction_is_named(phantoms, tmp_path):
    scan_id = "HCT00000"
    series = shutil.copytree(phantoms / "dicom" / scan_id, tmp_path / "series")
    victim = sorted(series.iterdir())[3]
    victim.write_bytes(b"\x00" * 64)  # truncated to nothing DICOM
    maps = _truth_maps(phantoms, scan_id, tmp_path / "maps")
    with pytest.raises(DicomOutputError) as err:
        write_dicom_outputs(scan_id, series, maps, tmp_path / "out", SPACE, _prediction_row())
    assert str(err.value).startswith(f"scan {scan_id}: {victim}: cannot be read for the DICOM outputs")
    assert "InvalidDicomError" in str(err.value) and "re-export the series, or rerun with --no-dicom" in str(
        err.value
    )


def test_a_real_ct_slice_that_is_not_the_scans_series_is_refused(phantoms, tmp_path):
    """pydicom's CT_small.dcm (a real CT slice of another patient) named as the series of our maps."""
    scan_id = "HCT00000"
    series = tmp_path / "ct_small"
    series.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), series / "CT_small.dcm")
    maps = _truth_maps(phantoms, scan_id, tmp_path / "maps")
    with pytest.raises(DicomOutputError, match=r"slice 1 \(1\.3\.6\.1\.4\.1\.5962\..*outside the NIfTI map"):
        write_dicom_outputs(scan_id, series, maps, tmp_path / "out", SPACE, _prediction_row())
    assert not (tmp_path / "out" / "dicom" / scan_id / "seg.dcm").exists()


def test_maps_of_another_label_space_are_refused(phantoms, tmp_path):
    scan_id = "HCT00000"
    maps = _truth_maps(phantoms, scan_id, tmp_path / "maps")
    two_types = LabelSpace.from_config(types=SPACE.types[:2])
    with pytest.raises(DicomOutputError, match="holds 4 maps but the model's label space has 2 types"):
        write_dicom_outputs(
            scan_id, phantoms / "dicom" / scan_id, maps, tmp_path / "out", two_types, _prediction_row()
        )


def test_missing_maps_and_dicom_without_maps_are_explained(phantoms, tmp_path, capsys):
    with pytest.raises(DicomOutputError, match="HCT00000_abnormality.nii.gz is missing.*--no-maps"):
        write_dicom_outputs(
            "HCT00000", phantoms / "dicom" / "HCT00000", tmp_path, tmp_path / "out", SPACE, _prediction_row()
        )
    with pytest.raises(SystemExit):
        damil_predict.main(
            ["model", "manifest.csv", "--out-dir", str(tmp_path / "o"), "--no-maps", "--dicom"]
        )
    assert "--dicom needs the NIfTI maps it is made from; drop --no-maps" in capsys.readouterr().err

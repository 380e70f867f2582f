"""Average-CT atlas building and centred registration (Liu et al. 2023, STAR Methods, "Anatomical region
segmentation"), with elastix on tiny phantoms (40 x 40 x 12 voxels; each registration well under a
second, the first elastix call of a process pays ITK's import)."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from datamodules.crossdl.head_ct.atlas import (
    AtlasError,
    AtlasSettings,
    build_average_atlas,
    register_to_reference,
)
from datamodules.crossdl.head_ct.registration import RegistrationSettings, parameter_object, read_itk
from datamodules.synthetic.datasets.ct_scans import write_nifti
from datamodules.synthetic.images.head_phantom import render_phantom
from reportsup.cli import build_atlas

SHAPE, SPACING = (40, 40, 12), (6.0, 6.0, 12.8)
FAST = RegistrationSettings(max_iterations=64, threads=1)


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """reference.nii.gz (undeformed head, with its regions), scan_1..3 (deformed heads), far.nii.gz
    (scan_1 with its origin moved 120 mm to the patient's right: the head lies beside the reference's)."""
    root = tmp_path_factory.mktemp("heads")
    ref = render_phantom(None, seed=0, shape=SHAPE, spacing=SPACING, deform=False, noise_hu=0)
    write_nifti(ref.hu.astype(np.int16), ref.affine_ras, root / "reference.nii.gz")
    write_nifti(ref.regions, ref.affine_ras, root / "reference_regions.nii.gz")
    for k in (1, 2, 3):
        ph = render_phantom(None, seed=k, shape=SHAPE, spacing=SPACING)
        write_nifti(ph.hu.astype(np.int16), ph.affine_ras, root / f"scan_{k}.nii.gz")
        if k == 1:
            far = ph.affine_ras.copy()
            far[0, 3] += 120.0
            write_nifti(ph.hu.astype(np.int16), far, root / "far.nii.gz")
    return root


def _translation(fixed, moving, centre: str) -> tuple[float, np.ndarray]:
    """(NCC after an affine registration with this centring, the affine's translation in mm)."""
    settings = AtlasSettings(RegistrationSettings(max_iterations=64, centre=centre), ("affine",))
    _, ncc, transform = register_to_reference(moving, fixed, settings)
    params = np.asarray([float(v) for v in transform.GetParameter(0, "TransformParameters")])
    return ncc, params[-3:]


def test_centring_starts_from_the_centres_of_gravity():
    maps = parameter_object(RegistrationSettings(centre="gravity"))
    affine, bspline = (dict(maps.GetParameterMap(i)) for i in range(2))
    assert affine["AutomaticTransformInitialization"] == ("true",)
    assert affine["AutomaticTransformInitializationMethod"] == ("CenterOfGravity",)
    assert "AutomaticTransformInitialization" not in bspline  # the B-spline stage continues the affine
    none = dict(parameter_object(RegistrationSettings(centre="none")).GetParameterMap(0))
    assert "AutomaticTransformInitialization" not in none
    with pytest.raises(ValueError, match="centre must be one of"):
        RegistrationSettings(centre="annealing")


def test_centring_recovers_a_head_beside_the_reference(heads):
    """The paper centred every CT (simulated annealing) before registration; without any centring,
    elastix's affine stage starting from the identity cannot find a head 120 mm away."""
    fixed, near, far = (read_itk(heads / n) for n in ("reference.nii.gz", "scan_1.nii.gz", "far.nii.gz"))
    ncc_near, t_near = _translation(fixed, near, "gravity")
    ncc_far, t_far = _translation(fixed, far, "gravity")
    ncc_lost, _ = _translation(fixed, far, "none")
    assert ncc_near > 0.6 and abs(ncc_far - ncc_near) < 0.02, (ncc_near, ncc_far)
    # RAS +120 mm in x is LPS -120 mm: the transform (reference -> scan points) moves by that much.
    assert np.allclose(t_far - t_near, [-120.0, 0.0, 0.0], atol=2.0), t_far - t_near
    assert ncc_lost < 0.3, ncc_lost


def _load(path):
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def test_average_of_copies_of_the_reference_is_the_reference(heads, tmp_path):
    """Known answer: every copy registers to the identity, so the average is the reference itself."""
    copies = []
    for k in (1, 2):
        copies.append(tmp_path / f"copy_{k}.nii.gz")
        shutil.copy(heads / "reference.nii.gz", copies[-1])
    settings = AtlasSettings(FAST, ("affine",))
    built = build_average_atlas(
        copies,
        heads / "reference.nii.gz",
        tmp_path / "atlas",
        heads / "reference_regions.nii.gz",
        settings,
        False,
    )
    average, affine = _load(built.image)
    reference, ref_affine = _load(heads / "reference.nii.gz")
    assert average.shape == reference.shape and np.allclose(affine, ref_affine, atol=1e-3)
    head = reference > -100
    # elastix's stochastic optimiser stops near, not at, the identity: sub-voxel offsets show at the
    # skull's 1000-HU edges on these 6 x 6 x 12.8 mm voxels, so the test is on the median and the NCC.
    diff = np.abs(average - reference)[head]
    assert np.median(diff) < 5.0 and np.corrcoef(average[head], reference[head])[0, 1] > 0.98
    labels, _ = _load(built.labels)
    assert np.array_equal(labels, _load(heads / "reference_regions.nii.gz")[0])  # the reference's regions
    assert built.report["status"].tolist() == ["included", "included"] and built.n_averaged == 2


def test_average_of_deformed_heads_on_the_reference_grid(heads, tmp_path):
    scans = [heads / f"scan_{k}.nii.gz" for k in (1, 2, 3)] + [heads / "far.nii.gz", heads / "missing.nii.gz"]
    with pytest.raises(AtlasError, match="missing.nii.gz: scan not found"):
        build_average_atlas(scans, heads / "reference.nii.gz", tmp_path / "a", settings=AtlasSettings(FAST))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    scans[-1] = bad
    built = build_average_atlas(
        scans,
        heads / "reference.nii.gz",
        tmp_path / "b",
        settings=AtlasSettings(FAST, ("affine",)),
        progress=False,
    )
    report = built.report.set_index("image")
    assert report.loc[str(bad), "status"] == "failed" and report.loc[str(bad), "message"]
    assert built.n_averaged == 4 and built.labels is None  # far.nii.gz too: centred first
    assert (report.loc[report["status"] == "included", "ncc"] > 0.6).all(), report
    average, _ = _load(built.image)
    reference, _ = _load(heads / "reference.nii.gz")
    head = reference > -100
    # The average of four registered heads is closer to the reference than any single unregistered one.
    ncc = np.corrcoef(average[head], reference[head])[0, 1]
    singles = [
        np.corrcoef(_load(heads / f"scan_{k}.nii.gz")[0][head], reference[head])[0, 1] for k in (1, 2, 3)
    ]
    assert ncc > max(singles) + 0.3 and ncc > 0.7, (ncc, singles)
    assert (average[0, 0, :] < -900).all()  # outside every head is air, not elastix's default 0 (water)
    assert pd.read_csv(tmp_path / "b" / "atlas_report.csv")["status"].tolist().count("included") == 4


def test_atlas_errors_name_the_file(heads, tmp_path):
    with pytest.raises(AtlasError, match="only 0 scan"):
        build_average_atlas(
            [heads / "scan_1.nii.gz", heads / "scan_2.nii.gz"],
            heads / "reference.nii.gz",
            tmp_path / "a",
            settings=AtlasSettings(FAST, ("affine",), min_ncc=0.999),
            progress=False,
        )
    small = tmp_path / "small_regions.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), small)
    with pytest.raises(AtlasError, match="small_regions.nii.gz: the region map is not on"):
        build_average_atlas([heads / "scan_1.nii.gz"], heads / "reference.nii.gz", tmp_path / "b", small)
    with pytest.raises(AtlasError, match="listed twice"):
        build_average_atlas([heads / "scan_1.nii.gz"] * 2, heads / "reference.nii.gz", tmp_path / "c")


def test_build_atlas_command_draws_scans_from_a_manifest(heads, tmp_path, capsys):
    manifest = pd.DataFrame(
        {
            "scan_id": ["A", "B", "C", "R"],
            "patient_id": ["1", "2", "3", "4"],
            "image": [f"scan_{k}.nii.gz" for k in (1, 2, 3)] + ["reference.nii.gz"],
        }
    )
    manifest.to_csv(heads / "manifest.csv", index=False)
    drawn = build_atlas.draw_scans(heads / "manifest.csv", 2, 0, heads / "reference.nii.gz")
    assert len(drawn) == 2 and str(heads / "reference.nii.gz") not in drawn
    assert drawn == build_atlas.draw_scans(heads / "manifest.csv", 2, 0, heads / "reference.nii.gz")
    out = tmp_path / "atlas"
    args = ["--reference", str(heads / "reference.nii.gz"), "--out-dir", str(out), "--affine-only"]
    build_atlas.main(
        [*args, "--manifest", str(heads / "manifest.csv"), "--n-scans", "2", "--max-iterations", "32"]
    )
    assert (out / "average_ct.nii.gz").exists() and "averaged 2 of 2 scan(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists; choose a new --out-dir"):
        build_atlas.main([*args, str(heads / "scan_1.nii.gz")])
    with pytest.raises(SystemExit, match="3 scan.s. besides the reference, --n-scans asks for 10"):
        build_atlas.main([*args[:3], str(tmp_path / "x"), "--manifest", str(heads / "manifest.csv")])
    with pytest.raises(SystemExit):
        build_atlas.main([*args, str(heads / "scan_1.nii.gz"), "--manifest", str(heads / "manifest.csv")])

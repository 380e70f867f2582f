"""Synthetic head-CT phantoms built from a real brain template, for the demo and the tests.

No public head CT may be downloaded here, so a phantom is rendered from the MNI ICBM152 2009a
symmetric templates that ship inside the nilearn wheel (T1, grey-matter and white-matter
probability maps, 1 mm, skull-stripped):

* **tissue -> HU** (typical non-contrast head CT): grey matter 38 HU, white matter 28 HU, CSF 5 HU,
  mixed by the template's tissue probabilities; a 6 mm skull shell (~1000 HU, diploe darker) and a
  5 mm scalp (30 HU) grown outwards from the intracranial mask; air -1000 HU;
* **17-region atlas label map** (Liu et al. 2023, Table S4) from MNI coordinates and tissue classes.
  The boundaries are approximations of lobar anatomy, good enough for region-level labels:
  side from x (the midline band |x| < 2 mm, i.e. the falx, is left unlabelled = "other"); brain stem
  |x| <= 12, -42 <= y <= -12, z <= -8; cerebellum y < -40 and z < -12 (below the tentorium);
  lateral ventricles = CSF (tissue probability < 0.4) with |x| < 30, -45 < y < 35, -5 < z < 32;
  basal ganglia 8 < |x| < 32, -22 < y < 25, -10 < z < 18 (incl. internal/external capsule, as Table
  S4); centrum ovale = white matter with 18 < z < 45, |x| < 40, -50 < y < 30; then occipital
  y < -68, temporal z < 2 and |x| > 22, frontal y > -15, parietal the rest. Lobes extend to the inner
  table of the skull because Table S4 counts the space between a lobe and the cranial plate to the
  lobe (that is where extraparenchymal collections are drawn);
* **lesions** rendered from the same :class:`~datamodules.synthetic.lesion_spec.ScanSpec` the synthetic report
  is written from: intraparenchymal hyperdensity 60-80 HU / hypodensity 10-20 HU as ellipsoids inside
  the named region's parenchyma (hematoma with edema: dense core, hypodense rim; mixed density: half
  and half), extraparenchymal collections as crescents under the cranial plate of the named lobe
  (subdural/epidural/subarachnoid hyperdense, effusion hypodense), intraventricular blood layering in
  the dependent (posterior) part of a lateral ventricle, "other" lesions in unlabelled midline
  space, "unclear" lesions somewhere in the hemisphere the report names. Voxel ground truth is a
  bit mask: bit j (value 2**j) set where abnormality type j of the label space is present;
* **per-patient variation**: a random rigid+scale head pose (axial rotation up to 8 degrees, tilt up
  to 4, scale 0.93-1.07, shift up to 8 mm) and a smooth random displacement field (std ~3 mm), applied
  once to image, region map and lesion mask together (one resampling), then CT noise (4 HU).

Everything is seeded by the scan; one 128 x 128 x 32 scan takes well under 2 s once the template is
loaded (the template itself loads once per process). Images only: the phantoms are arrays, written to
disk by :mod:`datamodules.synthetic.datasets.ct_scans`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from datamodules.synthetic.lesion_spec import Lesion, ScanSpec
from reportsup.contracts.labels.crossdl import LabelSpace

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
HU = {"air": -1000.0, "csf": 5.0, "gm": 38.0, "wm": 28.0, "scalp": 30.0, "bone": 1000.0, "diploe": 500.0}
HYPER_HU = (60.0, 80.0)  # acute blood (issue spec; Table S5 "hyper-density")
HYPO_HU = (10.0, 20.0)  # edema, softening, effusion ("hypo-density")
SKULL_MM, SCALP_MM = 6.0, 5.0
# CT grid of the phantoms: a typical thick-slice head CT (paper Table 1: ~32-43 slices per scan),
# at a quarter of the 512 x 512 in-plane matrix.
DEFAULT_SHAPE = (128, 128, 32)
DEFAULT_SPACING = (1.9, 1.9, 4.8)  # mm, (x, y, z)


@dataclass(frozen=True)
class HeadTemplate:
    """Template volumes on a common RAS grid (index -> mm via ``affine``)."""

    hu: np.ndarray  # float32 HU of the normal head
    regions: np.ndarray  # int16, 0 = none, i + 1 = anatomical region i of the label space
    parenchyma: np.ndarray  # bool, grey or white matter
    intracranial: np.ndarray  # bool
    depth_mm: np.ndarray  # float32, distance inside the intracranial mask to the inner table
    affine: np.ndarray  # 4x4 index -> RAS mm
    space: LabelSpace


def _template_dir() -> Path:
    import nilearn  # imported for its data folder only

    return Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"


def _downsample(a: np.ndarray, f: int) -> np.ndarray:
    """Block mean by an integer factor (cropping the remainder)."""
    s = [n - n % f for n in a.shape]
    a = a[: s[0], : s[1], : s[2]]
    return a.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


def atlas_regions(
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray],
    intracranial: np.ndarray,
    gm: np.ndarray,
    wm: np.ndarray,
    space: LabelSpace,
) -> np.ndarray:
    """17-region label map from MNI coordinates (mm) and tissue probabilities; rules in the module doc."""
    x, y, z = xyz
    ax = np.abs(x)
    csf = intracranial & (gm + wm < 0.4)
    labels = np.zeros(intracranial.shape, np.int16)
    assigned = ~intracranial | (ax < 2)  # outside, or the falx band ("other")
    third_ventricle = csf & (ax < 5) & (y > -25) & (y < 0) & (z > -10) & (z < 15)
    assigned |= third_ventricle
    side = np.where(x < 0, "left", "right")

    def put(name: str, mask: np.ndarray) -> None:
        nonlocal assigned
        mask = mask & ~assigned
        if name == "brain_stem":
            labels[mask] = space.anatomical_regions.index(name) + 1
        else:
            for s in ("left", "right"):
                labels[mask & (side == s)] = space.anatomical_regions.index(f"{s}_{name}") + 1
        assigned |= mask

    put("brain_stem", (ax <= 12) & (y >= -42) & (y <= -12) & (z <= -8))
    put("cerebellum", (y < -40) & (z < -12))
    put("lateral_ventricle", csf & (ax < 30) & (y > -45) & (y < 35) & (z > -5) & (z < 32))
    put("basal_ganglia", (ax > 8) & (ax < 32) & (y > -22) & (y < 25) & (z > -10) & (z < 18))
    put("centrum_ovale", (wm > 0.5) & (z > 18) & (z < 45) & (ax < 40) & (y > -50) & (y < 30))
    put("occipital_lobe", y < -68)
    put("temporal_lobe", (z < 2) & (ax > 22))
    put("frontal_lobe", y > -15)
    put("parietal_lobe", np.ones_like(intracranial))
    return labels


def head_template(resolution_mm: int = 2, space: LabelSpace | None = None) -> HeadTemplate:
    """Load the MNI templates from nilearn's data folder and build the normal-head HU volume and atlas
    (once per process and label space)."""
    space = space or LabelSpace()
    return _head_template(
        resolution_mm, space.regions, space.types, tuple(space.side_pairs.items()), space.other, space.unclear
    )


@lru_cache(maxsize=2)
def _head_template(
    resolution_mm: int,
    regions: tuple[str, ...],
    types: tuple[str, ...],
    side_pairs: tuple,
    other: str,
    unclear: str,
) -> HeadTemplate:
    space = LabelSpace(regions, types, dict(side_pairs), other, unclear)
    folder = _template_dir()
    vols = {}
    for key, name in TEMPLATE_FILES.items():
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: the MNI template that the synthetic phantoms are built from is missing; "
                "reinstall nilearn (`pip install --force-reinstall nilearn==0.14.1`)."
            )
        img = nib.load(path)
        vols[key] = _downsample(np.asarray(img.dataobj, np.float32) / 255.0, resolution_mm)
        affine = img.affine.copy()
    affine[:3, :3] *= resolution_mm
    affine[:3, 3] += (resolution_mm - 1) / 2.0  # block centre
    # Pad so that skull and scalp fit around the brain.
    pad = int(np.ceil((SKULL_MM + SCALP_MM + 4) / resolution_mm))
    vols = {k: np.pad(v, pad) for k, v in vols.items()}
    affine[:3, 3] -= pad * resolution_mm
    brain = vols["t1"] > 0.02
    intracranial = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=2))
    outside_mm = ndimage.distance_transform_edt(~intracranial) * resolution_mm
    depth_mm = (ndimage.distance_transform_edt(intracranial) * resolution_mm).astype(np.float32)
    gm, wm = vols["gm"], vols["wm"]
    tissue = np.clip(gm + wm, 0, 1)
    hu = np.full(brain.shape, HU["air"], np.float32)
    hu[intracranial] = (gm * HU["gm"] + wm * HU["wm"] + (1 - tissue) * HU["csf"])[intracranial]
    skull = (outside_mm > 0) & (outside_mm <= SKULL_MM)
    hu[skull] = HU["bone"]
    diploe = (outside_mm > SKULL_MM * 0.35) & (outside_mm <= SKULL_MM * 0.65)
    hu[diploe] = HU["diploe"]
    hu[(outside_mm > SKULL_MM) & (outside_mm <= SKULL_MM + SCALP_MM)] = HU["scalp"]
    ijk = np.indices(brain.shape, dtype=np.float32)
    xyz = tuple(
        affine[a, 0] * ijk[0] + affine[a, 1] * ijk[1] + affine[a, 2] * ijk[2] + affine[a, 3] for a in range(3)
    )
    regions = atlas_regions(xyz, intracranial, gm, wm, space)
    return HeadTemplate(hu, regions, intracranial & (tissue > 0.5), intracranial, depth_mm, affine, space)


def _ellipsoid(shape: tuple[int, ...], centre: np.ndarray, radii_vox: np.ndarray) -> np.ndarray:
    """Boolean ellipsoid, computed only in its bounding box (lesions are small)."""
    out = np.zeros(shape, bool)
    lo = np.maximum(np.floor(centre - radii_vox).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radii_vox).astype(int) + 1, shape)
    grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii_vox, strict=True))
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = d <= 1.0
    return out


def _type_bit(space: LabelSpace, type_name: str) -> int:
    return 1 << space.types.index(type_name)


class LesionRenderer:
    """Draws the lesions of a :class:`ScanSpec` into a copy of the template (HU + type bit mask)."""

    def __init__(self, template: HeadTemplate, rng: np.random.Generator) -> None:
        self.t = template
        self.rng = rng
        self.mm = float(abs(template.affine[0, 0]))
        self.hu = template.hu.copy()
        self.bits = np.zeros(template.hu.shape, np.uint8)

    def _region_mask(self, region: str) -> np.ndarray:
        return self.t.regions == self.t.space.anatomical_regions.index(region) + 1

    def _pick(self, mask: np.ndarray) -> np.ndarray | None:
        idx = np.argwhere(mask)
        return None if len(idx) == 0 else idx[self.rng.integers(len(idx))].astype(float)

    def _paint(self, mask: np.ndarray, type_name: str) -> None:
        lo, hi = HYPER_HU if type_name.endswith("hyperdensity") else HYPO_HU
        self.hu[mask] = self.rng.uniform(lo, hi)
        self.bits[mask] |= _type_bit(self.t.space, type_name)

    def _blob(self, allowed: np.ndarray, size_mm: float) -> np.ndarray:
        centre = self._pick(allowed & (self.t.depth_mm > 4))
        if centre is None:
            centre = self._pick(allowed)
        if centre is None:
            return np.zeros_like(allowed)
        radius = np.clip(size_mm / 2, 5, 16) / self.mm * self.rng.uniform(0.7, 1.3, size=3)
        return _ellipsoid(allowed.shape, centre, radius) & allowed

    def intraparenchymal(self, lesion: Lesion, allowed: np.ndarray) -> None:
        blob = self._blob(allowed, lesion.size_mm)
        types = lesion.types
        if lesion.family == "hematoma_with_edema":
            core = ndimage.binary_erosion(blob, iterations=1)
            self._paint(blob & ~core, types[1])
            self._paint(core, types[0])
        elif len(types) == 2:  # mixed density: two halves
            c = np.argwhere(blob).mean(axis=0) if blob.any() else np.zeros(3)
            half = np.indices(blob.shape)[0] < c[0]
            self._paint(blob & half, types[0])
            self._paint(blob & ~half, types[1])
        else:
            self._paint(blob, types[0])

    def extraparenchymal(self, lesion: Lesion, region_mask: np.ndarray) -> None:
        thickness = float(np.clip(lesion.size_mm / 5, 4, 10))
        shell = region_mask & (self.t.depth_mm <= thickness)
        seed = self._pick(region_mask & (self.t.depth_mm <= 2.5))
        if seed is None:
            return
        reach = float(np.clip(lesion.size_mm, 20, 45)) / self.mm
        crescent = _ellipsoid(shell.shape, seed, np.full(3, reach)) & shell
        types = lesion.types
        if len(types) == 2:
            upper = np.indices(shell.shape)[2] > seed[2]
            self._paint(crescent & upper, types[0])
            self._paint(crescent & ~upper, types[1])
        else:
            self._paint(crescent, types[0])

    def intraventricular(self, lesion: Lesion, region_mask: np.ndarray) -> None:
        idx = np.argwhere(region_mask)
        if len(idx) == 0:
            return
        # Blood layers in the dependent part: posterior (low y) for a supine patient.
        cut = np.quantile(idx[:, 1], 0.35)
        self._paint(region_mask & (np.indices(region_mask.shape)[1] <= cut), lesion.types[0])

    def draw(self, lesion: Lesion) -> None:
        space = self.t.space
        anatomical = [r for r in lesion.regions if r in space.anatomical_regions]
        if lesion.family == "intraventricular":
            for r in anatomical:
                self.intraventricular(lesion, self._region_mask(r))
        elif (
            any(t.startswith("extra") for t in lesion.types) and lesion.family != "mixed_intra" and anatomical
        ):
            for r in anatomical:
                self.extraparenchymal(lesion, self._region_mask(r))
        elif anatomical:
            for r in anatomical:
                self.intraparenchymal(lesion, self._region_mask(r) & self.t.parenchyma)
        elif space.other in lesion.regions:
            midline = self.t.intracranial & (self.t.regions == 0)
            self.intraparenchymal(
                lesion, ndimage.binary_dilation(midline) & (self.t.regions == 0) & self.t.intracranial
            )
        else:  # unclear: somewhere in the hemisphere the report names (or either, e.g. "surgery area")
            text = lesion.location_text or ""
            side = (
                "left"
                if "left" in text
                else "right"
                if "right" in text
                else self.rng.choice(["left", "right"])
            )
            lobes = [r for r in space.anatomical_regions if r.startswith(side) and r.endswith("_lobe")]
            region = lobes[self.rng.integers(len(lobes))]
            self.intraparenchymal(lesion, self._region_mask(region) & self.t.parenchyma)


def _smooth_displacement(shape: tuple[int, int, int], rng: np.random.Generator, std_mm: float) -> np.ndarray:
    """A smooth random displacement field (3, *shape) in mm: coarse Gaussian control grid, cubic zoom."""
    coarse = rng.normal(0, std_mm, size=(3, 5, 5, 4))
    return np.stack(
        [ndimage.zoom(c, [s / c_ for s, c_ in zip(shape, c.shape, strict=True)], order=3) for c in coarse]
    )


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Phantom:
    """One synthetic scan on its CT grid, arrays indexed [i, j, k] along patient LPS (+x left, +y
    posterior, +z superior), as DICOM stores them."""

    hu: np.ndarray  # float32
    regions: np.ndarray  # int16 true region map (0 = none, i + 1 = anatomical region i)
    lesion_bits: np.ndarray  # uint8 voxel ground truth, bit j = type j
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]

    @property
    def affine_ras(self) -> np.ndarray:
        """NIfTI affine (index -> RAS mm) of the LPS-ordered arrays."""
        dx, dy, dz = self.spacing
        ox, oy, oz = self.origin_lps
        return np.array([[-dx, 0, 0, -ox], [0, -dy, 0, -oy], [0, 0, dz, oz], [0, 0, 0, 1]], float)


def ct_grid(shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING) -> tuple[np.ndarray, tuple[float, float, float]]:
    """RAS mm coordinates (3, *shape) of the CT voxels and the LPS origin, centred on the template brain."""
    dx, dy, dz = spacing
    # Centre in MNI space: x 0, y -18 (the brain's centre), slab from the skull base (z -62) upwards.
    origin_lps = (-(shape[0] - 1) * dx / 2, 18 - (shape[1] - 1) * dy / 2, -62.0)
    ijk = np.indices(shape, dtype=np.float32)
    lps = [origin_lps[a] + ijk[a] * spacing[a] for a in range(3)]
    return np.stack([-lps[0], -lps[1], lps[2]]), origin_lps


def render_phantom(
    spec: ScanSpec | None,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    deform: bool = True,
    noise_hu: float = 4.0,
    space: LabelSpace | None = None,
) -> Phantom:
    """Render one scan: the lesions of ``spec`` (none if ``spec`` is None), a random pose and deformation
    (unless ``deform=False``, which gives the undeformed atlas geometry), CT noise."""
    template = head_template(2, space)
    rng = np.random.default_rng(seed)
    renderer = LesionRenderer(template, rng)
    for lesion in spec.lesions if spec else []:
        renderer.draw(lesion)
    ras, origin_lps = ct_grid(shape, spacing)
    points = ras.reshape(3, -1)
    if deform:
        r = _rotation(*np.deg2rad([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-8, 8)]))
        scale = rng.uniform(0.93, 1.07)
        shift = rng.uniform(-8, 8, size=3) * np.array([1, 1, 0.5])
        # Inverse mapping patient -> template: undo shift, rotation and scale, then a smooth warp.
        points = (r.T @ (points - shift[:, None])) / scale
        points = points + _smooth_displacement(shape, rng, 3.0).reshape(3, -1)
    inv = np.linalg.inv(template.affine)
    vox = inv[:3, :3] @ points + inv[:3, 3:4]
    hu = ndimage.map_coordinates(renderer.hu, vox, order=1, cval=HU["air"]).reshape(shape)
    regions = ndimage.map_coordinates(template.regions, vox, order=0, cval=0).reshape(shape)
    bits = ndimage.map_coordinates(renderer.bits, vox, order=0, cval=0).reshape(shape)
    if noise_hu > 0:
        hu = hu + rng.normal(0, noise_hu, size=shape).astype(np.float32)
    return Phantom(
        hu.astype(np.float32), regions.astype(np.int16), bits.astype(np.uint8), spacing, origin_lps
    )


def voxel_matrix(regions: np.ndarray, bits: np.ndarray, space: LabelSpace) -> np.ndarray:
    """The abnormality matrix the voxels imply (anatomical regions x types): which types lie in which region."""
    out = np.zeros((len(space.anatomical_regions), len(space.types)), np.int8)
    for j in range(len(space.types)):
        present = np.unique(regions[(bits & (1 << j)) > 0])
        for label in present[present > 0]:
            out[label - 1, j] = 1
    return out

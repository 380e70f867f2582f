"""Synthetic lumbar-spine radiographs: coronal (AP) and sagittal (lateral) phantoms as arrays, images only.

:func:`render_views` draws one session's two standing views from its image truth ``<finding>_image``
(never from the report truth, see :mod:`datamodules.synthetic.spine_sessions`): vertebral bodies, discs,
facets, pelvis and sacroiliac joints, each finding where :data:`FINDING_VIEWS` says it shows, then
patient placement, detector response and noise as 12-bit values. It writes no files
(:mod:`datamodules.synthetic.datasets.spine` stores them as PNG or DICOM).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

from datamodules.synthetic.spine_sessions import LEVEL_WEIGHTS
from reportsup.contracts.labels.spine import FINDINGS, VIEWS

#: stored range of the radiographs: 12 bits (DICOM BitsStored 12)
MAX_VALUE = 4095

# Where each finding shows in the phantoms (the findings' "expected views"; tests check this).
FINDING_VIEWS: dict[str, tuple[str, ...]] = {
    "instrumentation": ("coronal", "sagittal"),
    "loss_of_lordosis": ("sagittal",),
    "facet_sclerosis": ("coronal", "sagittal"),
    "sij_degeneration": ("coronal",),
    "osteophytosis": ("coronal", "sagittal"),
    "osteoporosis": ("coronal", "sagittal"),
    "diffuse_degeneration": ("coronal", "sagittal"),
    "scoliosis": ("coronal",),
    "fractures": ("coronal", "sagittal"),
    "disc_narrowing": ("coronal", "sagittal"),
    "anterolisthesis": ("sagittal",),
    "retrolisthesis": ("sagittal",),
}

#: horizontal centre of the column and top of L1, as fractions of the image
X0, COLUMN_TOP = 0.5, 0.1
#: attenuation of steel and titanium: saturates the detector
METAL = 3.0


class _Canvas:
    """An attenuation map in normalised coordinates (0..1 across the image, y downwards). Shapes add
    their attenuation, as overlapping structures do along an X-ray beam; each is evaluated only in its
    bounding box, which keeps rendering fast."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.image = np.zeros((size, size), np.float32)
        self.grid = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
        self.soft = 0.8 / size  # antialiasing: about one pixel of edge blur

    def _window(self, lo: np.ndarray, hi: np.ndarray):
        s = self.size
        x0, y0 = (max(int(math.floor(v * s)), 0) for v in lo)
        x1, y1 = (min(int(math.ceil(v * s)) + 1, s) for v in hi)
        if x0 >= x1 or y0 >= y1:
            return None
        return (slice(y0, y1), slice(x0, x1)), self.grid[x0:x1][None, :], self.grid[y0:y1][:, None]

    def _paint(self, sdf: Callable, lo, hi, fill: float, edge: float, edge_width: float, blur: float) -> None:
        """Add ``fill`` inside the signed-distance field ``sdf(x, y)`` and a cortex-like ring of
        ``edge`` just inside its border."""
        win = self._window(np.asarray(lo), np.asarray(hi))
        if win is None:
            return
        where, x, y = win
        d = sdf(x, y)
        blur = max(blur, self.soft)
        value = fill / (1 + np.exp(np.clip(d / blur, -30, 30)))
        if edge:
            value = value + edge * np.exp(-(((d + edge_width) / edge_width) ** 2))
        self.image[where] += value.astype(np.float32)

    def polygon(
        self,
        corners: np.ndarray,
        fill: float,
        edge: float = 0.0,
        edge_width: float = 0.004,
        rounding: float = 0.006,
        blur: float = 0.0,
    ) -> None:
        """A convex polygon with rounded corners (a soft maximum of the edges' half-plane distances)."""
        pts = np.asarray(corners, np.float32)
        centre = pts.mean(axis=0)
        starts, ends = pts, np.roll(pts, -1, axis=0)
        normals = np.stack([ends[:, 1] - starts[:, 1], starts[:, 0] - ends[:, 0]], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        flip = np.einsum("ij,ij->i", centre - starts, normals) > 0
        normals[flip] *= -1
        offsets = np.einsum("ij,ij->i", starts, normals)
        k = max(rounding, 1e-4)

        def sdf(x, y):
            d = (
                normals[:, 0, None, None] * x[None]
                + normals[:, 1, None, None] * y[None]
                - offsets[:, None, None]
            )
            top = d.max(axis=0)
            return top + k * np.log(np.exp((d - top) / k).sum(axis=0))

        margin = 4 * max(blur, self.soft) + 2 * edge_width + k
        self._paint(sdf, pts.min(0) - margin, pts.max(0) + margin, fill, edge, edge_width, blur)

    def ellipse(
        self,
        centre: Sequence[float],
        radii: Sequence[float],
        fill: float,
        angle: float = 0.0,
        edge: float = 0.0,
        edge_width: float = 0.004,
        blur: float = 0.0,
    ) -> None:
        cx, cy = centre
        rx, ry = radii
        c, s = math.cos(angle), math.sin(angle)

        def sdf(x, y):
            u = (x - cx) * c + (y - cy) * s
            v = -(x - cx) * s + (y - cy) * c
            return (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1) * min(rx, ry)

        r = max(rx, ry) + 4 * max(blur, self.soft) + 2 * edge_width
        self._paint(sdf, (cx - r, cy - r), (cx + r, cy + r), fill, edge, edge_width, blur)

    def polyline(
        self, points: np.ndarray, radii: Sequence[float] | float, fill: float, blur: float = 0.0
    ) -> None:
        """A chain of capsules (radius per segment): rods, screws, joint lines, irregular sclerotic bands."""
        pts = np.asarray(points, np.float32)
        a, b = pts[:-1], pts[1:]
        r = np.broadcast_to(np.asarray(radii, np.float32), (len(a),))
        ab = b - a
        length2 = np.maximum((ab**2).sum(axis=1), 1e-12)

        def sdf(x, y):
            px = x[None] - a[:, 0, None, None]
            py = y[None] - a[:, 1, None, None]
            t = np.clip(
                (px * ab[:, 0, None, None] + py * ab[:, 1, None, None]) / length2[:, None, None], 0, 1
            )
            dx = px - t * ab[:, 0, None, None]
            dy = py - t * ab[:, 1, None, None]
            return (np.sqrt(dx**2 + dy**2) - r[:, None, None]).min(axis=0)

        margin = float(r.max()) + 4 * max(blur, self.soft)
        self._paint(sdf, pts.min(0) - margin, pts.max(0) + margin, fill, 0.0, 1.0, blur)


@dataclass(frozen=True)
class _Anatomy:
    """A patient's bones and the shape each finding takes in them; drawn whether or not the finding is
    present, so that toggling one finding changes nothing else in the image."""

    scale: float
    body_h: np.ndarray  # (5,) L1-L5 body heights
    body_w: np.ndarray  # (5,) coronal widths
    body_d: np.ndarray  # (5,) sagittal depths
    disc_h: np.ndarray  # (5,) L1-L2 ... L5-S1
    bone: float  # bone density of this patient
    tissue: float  # soft-tissue attenuation (body habitus)
    tissue_w: float
    lordosis: float  # sagittal curve amplitude when lordosis is preserved
    lost_lordosis: float  # ... when lost (straight or kyphotic)
    sacral_tilt: float
    lateral_dev: float  # normal coronal deviation
    scoliosis_amp: float  # signed
    scoliosis_waves: int  # 1: C curve, 2: S curve
    fracture_level: int
    fracture_sag: float  # anterior height ratio of the wedge
    fracture_cor: float  # coronal height ratio
    narrow_levels: tuple[int, ...]
    narrow_ratio: float
    osteophytes: tuple[tuple[int, int, float], ...]  # (vertebra, corner, length)
    endplates: tuple[tuple[int, int, float, float], ...]  # (vertebra, top/bottom, phase, frequency)
    antero_level: int
    antero_shift: float  # fraction of body depth
    retro_level: int
    retro_shift: float
    facet_levels: tuple[int, ...]
    facet_gain: float
    facet_size: float  # this patient's normal facet size
    sij_sides: tuple[int, ...]  # degenerated joints: -1 image left, +1 image right
    sij_phase: float
    sij_cortex: float  # brightness of normal subchondral bone
    instrumented: tuple[int, ...]  # vertebrae with screws (5 = S1)
    cage: bool
    porosis: float  # bone density factor when osteoporotic
    pelvis_w: float


def _choose(rng: np.random.Generator, weights: Sequence[float]) -> int:
    w = np.asarray(weights, float)
    return int(rng.choice(len(w), p=w / w.sum()))


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient's anatomy (every draw is made, in a fixed order, for every patient)."""
    s = float(rng.uniform(0.9, 1.08))
    body_h = 0.074 * s * np.array([1.0, 1.02, 1.04, 1.05, 1.03]) * rng.normal(1, 0.03, 5)
    body_w = 0.165 * s * np.array([1.0, 1.04, 1.08, 1.12, 1.16]) * rng.normal(1, 0.03, 5)
    body_d = 0.12 * s * np.array([1.0, 1.03, 1.06, 1.08, 1.08]) * rng.normal(1, 0.03, 5)
    disc_h = 0.032 * s * np.array([0.95, 1.0, 1.05, 1.05, 0.9]) * rng.uniform(0.88, 1.12, 5)
    n_narrow = 1 + int(rng.random() < 0.5)
    narrow = tuple(sorted(rng.choice(5, size=n_narrow, replace=False, p=np.array(LEVEL_WEIGHTS["disc"]))))
    n_osteo = int(rng.integers(2, 5))
    osteophytes = tuple(
        (int(v), int(c), float(rng.uniform(0.015, 0.028) * s))
        for v in rng.choice(5, size=n_osteo, replace=False)
        for c in rng.choice(4, size=int(rng.integers(2, 5)), replace=False)
    )
    endplates = tuple(
        (int(v), int(side), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(2.5, 4.5)))
        for v in rng.choice(5, size=int(rng.integers(3, 6)), replace=False)
        for side in (0, 1)
    )
    top = int(rng.choice((2, 3, 3, 4)))
    bottom = min(top + int(rng.choice((1, 2))), 5)
    sides = ((-1, 1), (-1,), (1,))[_choose(rng, (0.7, 0.15, 0.15))]
    return _Anatomy(
        scale=s,
        body_h=body_h,
        body_w=body_w,
        body_d=body_d,
        disc_h=disc_h,
        bone=float(rng.normal(1.0, 0.1)),
        tissue=float(rng.uniform(0.2, 0.34)),
        tissue_w=float(rng.uniform(0.75, 1.0)),
        lordosis=float(rng.uniform(0.045, 0.07) * s),
        lost_lordosis=float(rng.uniform(-0.025, 0.005) * s),
        sacral_tilt=float(rng.uniform(0.3, 0.5)),
        lateral_dev=float(rng.uniform(-0.01, 0.01)),
        scoliosis_amp=float(rng.uniform(0.03, 0.06) * s * rng.choice((-1, 1))),
        scoliosis_waves=1 + int(rng.random() < 0.3),
        fracture_level=_choose(rng, LEVEL_WEIGHTS["fractures"]),
        fracture_sag=float(rng.uniform(0.4, 0.55)),
        fracture_cor=float(rng.uniform(0.5, 0.65)),
        narrow_levels=tuple(int(n) for n in narrow),
        narrow_ratio=float(rng.uniform(0.12, 0.28)),
        osteophytes=osteophytes,
        endplates=endplates,
        antero_level=_choose(rng, LEVEL_WEIGHTS["anterolisthesis"]),
        antero_shift=float(rng.uniform(0.3, 0.42)),
        retro_level=_choose(rng, LEVEL_WEIGHTS["retrolisthesis"][:3]),
        retro_shift=float(rng.uniform(0.25, 0.35)),
        facet_levels=tuple(
            int(v) for v in sorted(rng.choice(np.arange(1, 5), size=int(rng.integers(2, 4)), replace=False))
        ),
        facet_gain=float(rng.uniform(1.25, 1.55)),
        facet_size=float(rng.uniform(0.85, 1.2)),
        sij_sides=sides,
        sij_phase=float(rng.uniform(0, 2 * math.pi)),
        sij_cortex=float(rng.uniform(0.08, 0.2)),
        instrumented=tuple(range(top, bottom + 1)),
        cage=bool(rng.random() < 0.5),
        porosis=float(rng.uniform(0.5, 0.68)),
        pelvis_w=float(rng.uniform(0.95, 1.1) * s),
    )


@dataclass(frozen=True)
class _Body:
    """One vertebral body: centre, tilt ``theta`` (radians, of its long axis from vertical), half
    width, and its height on the local -u side (left / anterior) and +u side (right / posterior)."""

    centre: np.ndarray
    theta: float
    half_w: float
    h_neg: float
    h_pos: float

    def point(self, u: float, v: float) -> np.ndarray:
        """Image coordinates of local ``(u, v)``: u across the body, v down along the column."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.centre + np.array([u * c + v * s, -u * s + v * c], np.float32)

    def corners(self) -> np.ndarray:
        """Top -u, top +u, bottom +u, bottom -u."""
        a = self.half_w
        return np.stack(
            [
                self.point(-a, -self.h_neg / 2),
                self.point(a, -self.h_pos / 2),
                self.point(a, self.h_pos / 2),
                self.point(-a, self.h_neg / 2),
            ]
        )


def _stack(
    h_neg: np.ndarray,
    h_pos: np.ndarray,
    half_w: np.ndarray,
    discs: np.ndarray,
    curve: Callable[[float], tuple[float, float]],
    shifts: np.ndarray,
    top: float = COLUMN_TOP,
) -> tuple[list[_Body], float]:
    """Stack five bodies and their discs down a centre line ``curve(t) -> (x, dx/dt)`` (t = 0 at the top
    of L1, 1 at the top of S1), each tilted along the curve and moved by ``shifts`` across it; return the
    bodies and the y of the S1 endplate."""
    h_mean = (h_neg + h_pos) / 2
    total = float(h_mean.sum() + discs.sum())
    y, bodies = top, []
    for i in range(5):
        yc = y + h_mean[i] / 2
        x, slope = curve((yc - top) / total)
        theta = math.atan(slope / total)
        body = _Body(np.array([x, yc], np.float32), theta, float(half_w[i]), float(h_neg[i]), float(h_pos[i]))
        bodies.append(_Body(body.point(float(shifts[i]), 0.0), theta, body.half_w, body.h_neg, body.h_pos))
        y += h_mean[i] + discs[i]
    return bodies, y


def _disc_heights(anat: _Anatomy, f: Mapping[str, int]) -> np.ndarray:
    discs = anat.disc_h.copy()
    if f["disc_narrowing"]:
        discs[list(anat.narrow_levels)] *= anat.narrow_ratio
    return discs


class _Density(NamedTuple):
    """Attenuation of trabecular bone (``fill``) and of the cortex (``cortex``, ``width`` thick)."""

    fill: float
    cortex: float
    width: float


def _bone_density(anat: _Anatomy, f: Mapping[str, int]) -> _Density:
    """Osteoporosis lowers the density and thins the cortex, so bone stands out less from the soft
    tissue (the paper's "osteopenia or osteoporosis", seen as a global loss of bone contrast)."""
    if f["osteoporosis"]:
        return _Density(0.3 * anat.bone * anat.porosis, 0.32 * anat.bone * 0.7, 0.0035)
    return _Density(0.3 * anat.bone, 0.32 * anat.bone, 0.0055)


def _draw_bodies(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density) -> None:
    for body in bodies:
        canvas.polygon(
            body.corners(), bone.fill, edge=bone.cortex, edge_width=bone.width, rounding=0.005 * anat.scale
        )


def _with_t12(bodies: list[_Body], anat: _Anatomy) -> list[_Body]:
    """T12 above L1, partly cut by the image border as on real lumbar films (no findings drawn on it)."""
    l1 = bodies[0]
    h = float(anat.body_h[0])
    t12 = _Body(l1.point(0, -(h + anat.disc_h[0])), l1.theta, l1.half_w * 0.96, h, h)
    return [t12, *bodies]


def _draw_osteophytes(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, sides: Sequence[int]) -> None:
    """Bright spurs (beaks) growing outwards and towards the disc from the body corners ``sides`` of
    the corner list (coronal: both sides; sagittal: the anterior corners)."""
    for v, corner, length in anat.osteophytes:
        body = bodies[v]
        side = (-1, 1, 1, -1)[corner]
        if side not in sides:
            continue
        up = -1 if corner in (0, 1) else 1
        h = body.h_neg if side < 0 else body.h_pos
        base = body.corners()[corner]
        tip = body.point(side * (body.half_w + 0.6 * length), up * (h / 2 + 0.5 * length))
        mid = (base + tip) / 2
        canvas.polyline(
            np.stack([base, mid, tip]), [0.006 * anat.scale, 0.0035 * anat.scale], 0.45 * anat.bone
        )


def _draw_endplate_sclerosis(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy) -> None:
    """Irregular sclerotic bands along the endplates of several levels (diffuse degeneration)."""
    u = np.linspace(-1, 1, 9)
    for v, side, phase, freq in anat.endplates:
        body = bodies[v]
        sign = -1 if side == 0 else 1
        wobble = 0.004 * anat.scale * np.sin(freq * u * math.pi + phase)
        pts = []
        for x, w in zip(u, wobble, strict=True):
            h = body.h_neg + (x + 1) / 2 * (body.h_pos - body.h_neg)  # the height varies across a wedge
            pts.append(body.point(x * body.half_w * 0.92, sign * (h / 2 - 0.006 * anat.scale) + w))
        pts = np.stack(pts)
        radii = 0.0032 * anat.scale * (1.3 + 0.7 * np.sin(2 * freq * u[:-1] + phase))
        canvas.polyline(pts, radii, 0.38 * anat.bone)


def _draw_facet(
    canvas: _Canvas,
    centre: np.ndarray,
    radii: tuple[float, float],
    angle: float,
    anat: _Anatomy,
    bone: _Density,
    sclerotic: bool,
) -> None:
    """A facet joint (the overlapping articular processes); sclerotic: larger, dense, thick-rimmed."""
    size = anat.facet_size * (anat.facet_gain if sclerotic else 1.0)
    r = (radii[0] * size, radii[1] * size)
    if sclerotic:
        canvas.ellipse(centre, r, 0.4 * anat.bone, angle=angle, edge=0.25 * anat.bone)
    else:
        canvas.ellipse(centre, r, bone.fill * 0.5, angle=angle, edge=bone.cortex * 0.3)


def _soft_tissue(canvas: _Canvas, centre_x: float, half_width: float, anat: _Anatomy) -> None:
    """The trunk's soft tissue: a broad, soft-edged ellipse whose density is the patient's habitus."""
    canvas.ellipse((centre_x, 0.55), (half_width, 0.8), anat.tissue, blur=0.03)


def _gas(canvas: _Canvas, x_range: tuple[float, float], gas: np.ndarray) -> None:
    """Bowel gas: dark blobs over the abdomen, positioned per session (distractors)."""
    for gx, gy, rx, ry, depth in gas:
        canvas.ellipse(
            (x_range[0] + gx * (x_range[1] - x_range[0]), 0.15 + 0.7 * gy), (rx, ry), -depth, blur=0.006
        )


def _coronal_curve(anat: _Anatomy, f: Mapping[str, int]) -> Callable[[float], tuple[float, float]]:
    """The column's centre line in the AP view: nearly straight, or a C / S scoliotic curve."""
    waves = anat.scoliosis_waves if f["scoliosis"] else 1
    # An S curve has two apices: a smaller sideways shift gives the same end-vertebra tilt as a C curve.
    amp = anat.scoliosis_amp * 0.65 ** (waves - 1) if f["scoliosis"] else anat.lateral_dev

    def curve(t: float) -> tuple[float, float]:
        return X0 + amp * math.sin(waves * math.pi * t), amp * waves * math.pi * math.cos(waves * math.pi * t)

    return curve


def _sagittal_curve(anat: _Anatomy, f: Mapping[str, int]) -> Callable[[float], tuple[float, float]]:
    """The centre line in the lateral view (anterior = image left): lordotic, or straight / kyphotic
    when lordosis is lost."""
    amp = anat.lost_lordosis if f["loss_of_lordosis"] else anat.lordosis

    def curve(t: float) -> tuple[float, float]:
        return X0 - amp * math.sin(math.pi * t), -amp * math.pi * math.cos(math.pi * t)

    return curve


def _fracture_heights(anat: _Anatomy, f: Mapping[str, int], view: str) -> tuple[np.ndarray, np.ndarray]:
    h_neg, h_pos = anat.body_h.copy(), anat.body_h.copy()
    if f["fractures"]:
        k = anat.fracture_level
        if view == "sagittal":  # wedge: the anterior wall collapses
            h_neg[k] *= anat.fracture_sag
            h_pos[k] *= 0.92
        else:
            h_neg[k] *= anat.fracture_cor
            h_pos[k] *= anat.fracture_cor
    return h_neg, h_pos


def _draw_fracture_line(canvas: _Canvas, body: _Body, anat: _Anatomy) -> None:
    """The bright band of trabecular impaction inside the collapsed body."""
    pts = np.stack(
        [body.point(-0.8 * body.half_w, -0.1 * body.h_neg), body.point(0.8 * body.half_w, -0.1 * body.h_pos)]
    )
    canvas.polyline(pts, 0.004 * anat.scale, 0.45 * anat.bone)


def _render_coronal(anat: _Anatomy, f: Mapping[str, int], size: int, gas: np.ndarray) -> np.ndarray:
    """AP view: L1-L5 with pedicles, transverse and spinous processes, facets, sacrum, iliac wings with
    the sacroiliac joints, femoral heads, soft tissue and bowel gas."""
    canvas = _Canvas(size)
    s = anat.scale
    _soft_tissue(canvas, X0, 0.5 * anat.tissue_w, anat)
    _gas(canvas, (0.12, 0.88), gas)
    for side in (-1, 1):  # psoas shadows
        psoas = np.array([[X0 + side * 0.07 * s, 0.12], [X0 + side * 0.16 * s, 0.7]])
        canvas.polyline(psoas, 0.04 * s, 0.05, blur=0.01)
    h_neg, h_pos = _fracture_heights(anat, f, "coronal")
    curve = _coronal_curve(anat, f)
    bodies, y_s1 = _stack(h_neg, h_pos, anat.body_w / 2, _disc_heights(anat, f), curve, np.zeros(5))
    bone = _bone_density(anat, f)
    all_bodies = _with_t12(bodies, anat)
    _draw_bodies(canvas, all_bodies, anat, bone)
    _draw_posterior_coronal(canvas, all_bodies, anat, bone)
    _draw_facets_coronal(canvas, bodies, anat, bone, bool(f["facet_sclerosis"]))
    if f["osteophytosis"]:
        _draw_osteophytes(canvas, bodies, anat, (-1, 1))
    if f["diffuse_degeneration"]:
        _draw_endplate_sclerosis(canvas, bodies, anat)
    if f["fractures"]:
        _draw_fracture_line(canvas, bodies[anat.fracture_level], anat)
    _draw_pelvis_coronal(canvas, anat, f, y_s1, bone)
    if f["instrumentation"]:
        _draw_instrumentation_coronal(canvas, bodies, anat, y_s1)
    return canvas.image


def _draw_posterior_coronal(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density) -> None:
    """Pedicles (cortical rings), transverse processes (L3's the longest) and spinous processes."""
    s = anat.scale
    for i, body in enumerate(bodies):
        h = (body.h_neg + body.h_pos) / 2
        # Vertebral rotation towards the convexity moves the pedicles off centre in a scoliosis.
        rot = (body.centre[0] - X0) * 0.25
        for side in (-1, 1):
            canvas.ellipse(
                body.point(side * 0.62 * body.half_w + rot, -0.2 * h),
                (0.016 * s, 0.024 * s),
                0.2 * bone.fill,
                angle=-body.theta,
                edge=bone.cortex * 0.9,
                edge_width=bone.width * 0.8,
            )
            length = (0.07 if i == 3 else 0.05) * s  # bodies[0] is T12
            canvas.ellipse(
                body.point(side * (body.half_w + length * 0.7), -0.05 * h),
                (length, 0.009 * s),
                bone.fill * 0.6,
                angle=-body.theta,
                edge=bone.cortex * 0.3,
            )
        canvas.ellipse(
            body.point(rot, 0.2 * h),
            (0.011 * s, 0.028 * s),
            bone.fill * 0.5,
            angle=-body.theta,
            edge=bone.cortex * 0.4,
        )


def _draw_facets_coronal(
    canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density, sclerosis: bool
) -> None:
    """Facet joints beside the pedicles at each disc level (L1-L2 ... L5-S1)."""
    s = anat.scale
    for k, body in enumerate(bodies):
        h = (body.h_neg + body.h_pos) / 2
        for side in (-1, 1):
            centre = body.point(side * 0.55 * body.half_w, h / 2 + 0.3 * anat.disc_h[k])
            sclerotic = sclerosis and k in anat.facet_levels
            _draw_facet(canvas, centre, (0.013 * s, 0.021 * s), -body.theta, anat, bone, sclerotic)


def _draw_pelvis_coronal(
    canvas: _Canvas, anat: _Anatomy, f: Mapping[str, int], y_s1: float, bone: _Density
) -> None:
    """Sacrum with foramina, iliac wings, the sacroiliac joints between them, femoral heads."""
    s, pw, x0 = anat.scale, anat.pelvis_w, X0
    fill, cortex, width = bone
    tw = 1.05 * float(anat.body_w[4])  # half the distance between the sacroiliac joints
    sij_top = [(x0 + side * tw, y_s1 + 0.012) for side in (-1, 1)]
    sij_bottom = [(x0 + side * tw * 0.72, y_s1 + 0.15 * s) for side in (-1, 1)]
    sacrum = [
        (x0 - tw, y_s1),
        (x0 + tw, y_s1),
        sij_bottom[1],
        (x0 + 0.2 * tw, y_s1 + 0.25 * s),
        (x0 - 0.2 * tw, y_s1 + 0.25 * s),
        sij_bottom[0],
    ]
    canvas.polygon(np.array(sacrum), fill * 0.8, edge=cortex * 0.6, edge_width=width, rounding=0.01)
    for row in range(3):
        for side in (-1, 1):
            canvas.ellipse(
                (x0 + side * tw * (0.42 - 0.08 * row), y_s1 + (0.045 + 0.05 * row) * s),
                (0.011 * s, 0.009 * s),
                -0.06,
            )
    for j, side in enumerate((-1, 1)):
        gap = 0.007 * side
        top, bottom = np.array(sij_top[j]), np.array(sij_bottom[j])
        ilium = [
            (top[0] + gap, top[1] - 0.01),
            (x0 + side * (tw + 0.14 * pw), y_s1 - 0.09 * s),
            (x0 + side * (tw + 0.19 * pw), y_s1 + 0.02 * s),
            (x0 + side * (tw + 0.1 * pw), y_s1 + 0.16 * s),
            (bottom[0] + gap, bottom[1] + 0.02),
        ]
        canvas.polygon(np.array(ilium), fill * 0.65, edge=cortex * 0.8, edge_width=width * 1.2, rounding=0.02)
        canvas.ellipse(
            (x0 + side * (tw + 0.13 * pw), y_s1 + 0.3 * s),
            (0.065 * s, 0.065 * s),
            fill * 0.9,
            edge=cortex * 0.6,
        )
        _draw_sij(
            canvas,
            top + np.array([gap / 2, 0]),
            bottom + np.array([gap / 2, 0]),
            anat,
            bool(f["sij_degeneration"] and side in anat.sij_sides),
        )


def _draw_sij(
    canvas: _Canvas, top: np.ndarray, bottom: np.ndarray, anat: _Anatomy, degenerated: bool
) -> None:
    """A sacroiliac joint: a dark joint line between two thin subchondral cortices; degenerated, the
    line is irregular and flanked by thick, bright, uneven sclerosis."""
    t = np.linspace(0, 1, 10)[:, None]
    line = top + t * (bottom - top)
    normal = np.array([bottom[1] - top[1], top[0] - bottom[0]])
    normal /= np.linalg.norm(normal)
    s = anat.scale
    if degenerated:
        wave = 0.004 * s * np.sin(9 * t + anat.sij_phase)
        line = line + wave * normal
        radii = 0.0055 * s * (1.3 + 0.6 * np.sin(7 * t[:-1, 0] + anat.sij_phase))
        for side in (-1, 1):
            canvas.polyline(line + side * 0.01 * s * normal, radii, 0.42 * anat.bone)
        canvas.polyline(line, 0.002 * s, -0.12)
    else:
        for side in (-1, 1):
            canvas.polyline(line + side * 0.007 * s * normal, 0.0025 * s, anat.sij_cortex * anat.bone)
        canvas.polyline(line, 0.0035 * s, -0.12)


def _draw_instrumentation_coronal(
    canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, y_s1: float
) -> None:
    """Pedicle screws converging medially from each pedicle and two vertical rods through their heads."""
    s, x0 = anat.scale, X0
    heads = {-1: [], 1: []}
    for v in anat.instrumented:
        if v < 5:
            body = bodies[v]
            h = (body.h_neg + body.h_pos) / 2
            points = {
                side: (
                    body.point(side * 0.85 * body.half_w, -0.15 * h),
                    body.point(side * 0.35 * body.half_w, -0.05 * h),
                )
                for side in (-1, 1)
            }
        else:
            half = 0.75 * float(anat.body_w[4])  # S1 pedicles sit about under L5's
            points = {
                side: (
                    np.array([x0 + side * 0.8 * half, y_s1 + 0.04 * s]),
                    np.array([x0 + side * 0.35 * half, y_s1 + 0.06 * s]),
                )
                for side in (-1, 1)
            }
        for side, (head, tip) in points.items():
            canvas.polyline(np.stack([head, tip]), 0.008 * s, METAL)
            canvas.ellipse(head, (0.012 * s, 0.012 * s), METAL)
            heads[side].append(head)
    for side in (-1, 1):
        pts = np.stack(heads[side])
        pts = np.concatenate([pts[:1] - [0, 0.02 * s], pts, pts[-1:] + [0, 0.02 * s]])
        canvas.polyline(pts, 0.0055 * s, METAL)


def _listhesis_shifts(anat: _Anatomy, f: Mapping[str, int]) -> np.ndarray:
    """Sideways shift of L1-L5 in the lateral view (negative = anterior): in an olisthesis the slipped
    vertebra carries the column above it over the vertebra below."""
    shifts = np.zeros(5)
    if f["anterolisthesis"]:
        shifts[: anat.antero_level + 1] -= anat.antero_shift * anat.body_d[anat.antero_level]
    if f["retrolisthesis"]:
        shifts[: anat.retro_level + 1] += anat.retro_shift * anat.body_d[anat.retro_level]
    return shifts


def _render_sagittal(anat: _Anatomy, f: Mapping[str, int], size: int, gas: np.ndarray) -> np.ndarray:
    """Lateral view (anterior = image left): L1-L5 on the lordotic curve, discs, pedicles, spinous
    processes and facet joints, sacrum, ilium overlay, femoral heads, soft tissue and bowel gas."""
    canvas = _Canvas(size)
    _soft_tissue(canvas, X0 - 0.04, 0.45 * anat.tissue_w, anat)
    _gas(canvas, (0.05, X0 - 0.12), gas)
    h_neg, h_pos = _fracture_heights(anat, f, "sagittal")
    curve = _sagittal_curve(anat, f)
    discs = _disc_heights(anat, f)
    bodies, y_s1 = _stack(h_neg, h_pos, anat.body_d / 2, discs, curve, _listhesis_shifts(anat, f))
    bone = _bone_density(anat, f)
    all_bodies = _with_t12(bodies, anat)
    _draw_bodies(canvas, all_bodies, anat, bone)
    _draw_posterior_sagittal(canvas, all_bodies, anat, bone)
    s = anat.scale
    for k, body in enumerate(bodies):  # facet joints behind the pedicles, at each disc level
        centre = body.point(body.half_w + 0.055 * s, body.h_pos / 2 + 0.4 * anat.disc_h[k])
        sclerotic = bool(f["facet_sclerosis"]) and k in anat.facet_levels
        _draw_facet(canvas, centre, (0.015 * s, 0.021 * s), -body.theta - 0.4, anat, bone, sclerotic)
    if f["osteophytosis"]:
        _draw_osteophytes(canvas, bodies, anat, (-1,))
    if f["diffuse_degeneration"]:
        _draw_endplate_sclerosis(canvas, bodies, anat)
    if f["fractures"]:
        _draw_fracture_line(canvas, bodies[anat.fracture_level], anat)
    s1 = _draw_pelvis_sagittal(canvas, anat, f, curve, y_s1, bone)
    if f["instrumentation"]:
        _draw_instrumentation_sagittal(canvas, bodies, s1, anat)
    return canvas.image


def _draw_posterior_sagittal(
    canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density
) -> None:
    """Pedicles and laminae running back from each body into a spinous process pointing down and back."""
    s = anat.scale
    for body in bodies:
        h, a = body.h_pos, body.half_w
        pedicle = np.stack([body.point(a, -0.2 * h), body.point(a + 0.05 * s, -0.15 * h)])
        canvas.polyline(pedicle, 0.012 * s, bone.fill * 0.6)
        spinous = np.stack(
            [
                body.point(a + 0.06 * s, -0.05 * h),
                body.point(a + 0.1 * s, 0.15 * h),
                body.point(a + 0.15 * s, 0.3 * h),
            ]
        )
        canvas.polyline(spinous, [0.02 * s, 0.014 * s], bone.fill * 0.55)


def _draw_pelvis_sagittal(
    canvas: _Canvas, anat: _Anatomy, f: Mapping[str, int], curve: Callable, y_s1: float, bone: _Density
) -> _Body:
    """The sacrum, tilted along the end of the lumbar curve plus the sacral slope (less tilted when the
    lordosis is lost), with the ilium overlay and a femoral head; returns S1 as a body (for screws)."""
    s = anat.scale
    fill, cortex, width = bone
    x, slope = curve(1.0)
    total = float(anat.body_h.sum() + anat.disc_h.sum())
    tilt = math.atan(slope / total) + (anat.sacral_tilt * (0.3 if f["loss_of_lordosis"] else 1.0))
    depth = float(anat.body_d[4])
    s1 = _Body(np.array([x, y_s1], np.float32), tilt, depth / 2, 0.0, 0.0)
    length = 0.24 * s
    corners = np.stack(
        [
            s1.point(-depth / 2, 0),
            s1.point(depth / 2, 0),
            s1.point(0.25 * depth, length),
            s1.point(-0.05 * depth, length),
        ]
    )
    canvas.polygon(corners, fill * 0.8, edge=cortex * 0.8, edge_width=width, rounding=0.008)
    canvas.ellipse(
        s1.point(0.25 * depth, 0.1 * s),
        (0.17 * s, 0.12 * s),
        fill * 0.3,
        angle=-tilt,
        edge=cortex * 0.2,
        blur=0.004,
    )
    canvas.ellipse(s1.point(-0.9 * depth, 0.28 * s), (0.065 * s, 0.065 * s), fill * 0.8, edge=cortex * 0.5)
    return s1


def _draw_instrumentation_sagittal(
    canvas: _Canvas, bodies: Sequence[_Body], s1: _Body, anat: _Anatomy
) -> None:
    """Screws from the posterior elements through the pedicles into the bodies, a rod through their
    heads, and an interbody cage in the instrumented disc (``anat.cage``)."""
    s = anat.scale
    heads = []
    for v in anat.instrumented:
        body = bodies[v] if v < 5 else _Body(s1.point(0, 0.05 * s), s1.theta, s1.half_w, 0.06 * s, 0.06 * s)
        head, tip = (
            body.point(body.half_w + 0.045 * s, -0.1 * body.h_pos),
            body.point(-0.4 * body.half_w, 0.0),
        )
        canvas.polyline(np.stack([head, tip]), 0.0075 * s, METAL)
        canvas.ellipse(head, (0.013 * s, 0.013 * s), METAL)
        heads.append(head)
    canvas.polyline(np.stack(heads), 0.006 * s, METAL)
    first = anat.instrumented[0]
    if anat.cage and first < 4:
        upper, lower = bodies[first], bodies[first + 1]
        mid = (upper.point(0, upper.h_pos / 2) + lower.point(0, -lower.h_pos / 2)) / 2
        box = _Body(mid, (upper.theta + lower.theta) / 2, 0.5 * upper.half_w, 0.02 * s, 0.02 * s)
        canvas.polygon(box.corners(), 1.2, edge=1.0, edge_width=0.003)


@dataclass(frozen=True)
class _Exposure:
    """How one radiograph was taken: patient position, detector response, noise, side marker."""

    shift: tuple[float, float]
    angle: float
    zoom: float
    gain: float  # exposure: attenuation -> brightness
    floor: float
    ceiling: float
    noise: float
    heel: float
    marker: tuple[float, float]


def _sample_exposure(rng: np.random.Generator) -> _Exposure:
    return _Exposure(
        shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03))),
        angle=float(rng.uniform(-0.07, 0.07)),
        zoom=float(rng.uniform(0.95, 1.05)),
        gain=float(rng.uniform(1.0, 1.5)),
        floor=float(rng.uniform(0.03, 0.08)),
        ceiling=float(rng.uniform(0.88, 0.97)),
        noise=float(rng.uniform(0.006, 0.016)),
        heel=float(rng.uniform(-0.08, 0.08)),
        marker=(float(rng.choice((0.08, 0.86))), float(rng.uniform(0.05, 0.2))),
    )


def _sample_gas(rng: np.random.Generator) -> np.ndarray:
    """(n, 5): x and y in [0, 1] of the abdomen, radii, darkness."""
    n = 6
    gas = np.column_stack(
        [
            rng.random(n),
            rng.random(n),
            rng.uniform(0.015, 0.045, n),
            rng.uniform(0.012, 0.035, n),
            rng.uniform(0.03, 0.1, n),
        ]
    )
    return gas[: int(rng.integers(2, n + 1))]


def _expose(atten: np.ndarray, exp: _Exposure, noise: np.ndarray) -> np.ndarray:
    """Attenuation map -> 12-bit radiograph (bone bright): patient placement (shift, small rotation,
    zoom), detector blur, the lead side marker, a saturating detector response, heel effect, noise."""
    size = atten.shape[0]
    c, s = math.cos(exp.angle), math.sin(exp.angle)
    matrix = np.array([[c, -s], [s, c]]) / exp.zoom
    centre = np.array([size / 2, size / 2])
    offset = centre - matrix @ centre - np.array([exp.shift[1], exp.shift[0]]) * size
    placed = ndimage.affine_transform(atten, matrix, offset=offset, order=1, mode="mirror")
    placed = ndimage.gaussian_filter(placed, sigma=0.5 * size / 256)
    mx, my = (int(v * size) for v in exp.marker)
    placed[my : my + max(size // 28, 2), mx : mx + max(size // 40, 2)] += METAL
    response = 1 - np.exp(-exp.gain * np.clip(placed, 0, None))
    rows = (np.arange(size) / size - 0.5)[:, None]
    grey = (exp.floor + (exp.ceiling - exp.floor) * response) * (1 + exp.heel * rows)
    grey = grey + exp.noise * (0.5 + grey) * noise
    return np.clip(np.rint(grey * MAX_VALUE), 0, MAX_VALUE).astype(np.uint16)


def _session_findings(session: Mapping[str, Any]) -> dict[str, int]:
    missing = [f"{f}_image" for f in FINDINGS if f"{f}_image" not in session]
    if missing:
        raise KeyError(f"render_views: the session has no image truth {missing}.")
    return {f: int(session[f"{f}_image"]) for f in FINDINGS}


def render_views(
    session: Mapping[str, Any], rng: np.random.Generator, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The (coronal, sagittal) radiographs of a session: 2-D uint16 arrays, 12-bit, bone bright.

    Coronal = AP view, sagittal = lateral view of the standing lumbar spine (the paper's "couples of
    planar radiographic images", Figure 2 fuses them as R and B). Findings are drawn from the image
    truth ``<finding>_image`` (see :data:`FINDING_VIEWS` for which view shows what). The bones come from
    ``session["anatomy_seed"]`` when given (the same patient looks the same in every session), else
    from ``rng``; placement, exposure, bowel gas and noise come from ``rng``. All random draws are made
    whatever the findings, so toggling one finding changes only what that finding draws.
    """
    findings = _session_findings(session)
    seed = session.get("anatomy_seed")
    anatomy_rng = np.random.default_rng(int(seed)) if seed is not None and not pd.isna(seed) else rng
    anat = _sample_anatomy(anatomy_rng)
    exposures = [_sample_exposure(rng) for _ in VIEWS]
    gas = [_sample_gas(rng) for _ in VIEWS]
    noise = [rng.standard_normal((size, size)).astype(np.float32) for _ in VIEWS]
    coronal = _render_coronal(anat, findings, size, gas[0])
    sagittal = _render_sagittal(anat, findings, size, gas[1])
    return _expose(coronal, exposures[0], noise[0]), _expose(sagittal, exposures[1], noise[1])

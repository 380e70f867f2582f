"""Reading planar radiographs (DICOM, PNG, JPEG, TIFF) as grey values in [0, 1], bone bright, and fusing
the coronal and sagittal views of one session into one RGB image (spine study, Figure 2).

DICOM: the modality LUT, then the file's own VOI windowing (Window Center/Width or a VOI LUT) when it
has one, else the stored range; MONOCHROME1 (bone dark) is inverted. 8-bit images are divided by 255;
16-bit images carry no window and are stretched to their own range.

:func:`check_radiograph` is the one check of a view image (issue 21, items 3 and 5): the spine
DataModule runs it on every view before the first epoch, and prediction
(:mod:`reportsup.api.spine_images`) runs it before the first batch, so a damaged file is named with
its views-table row at once instead of after training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

DICOM_SUFFIXES = (".dcm", ".dicom", "")
GREEN_CHANNEL = ("zeros", "mean", "coronal", "sagittal")


class RadiographReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


#: colour and palette modes are converted to grey ("L") as the paper's 8-bit radiographs would be;
#: every other PIL mode below is already one grey channel
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "LA", "La", "CMYK", "YCbCr", "LAB", "HSV")
GREY_MODES = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
#: file signatures, to tell a cut-short image from a file that never was one
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
RE_EXPORT = "re-export the image from PACS (or copy it again) and check that the copy is complete"


@dataclass(frozen=True)
class RadiographProblem:
    """Why a view image cannot be used: a short ``reason`` code, what is wrong and how to fix it."""

    reason: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem} Fix: {self.fix}"


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _stretch(a: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((a - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def read_dicom_radiograph(path: Path) -> np.ndarray:
    """Grey values in [0, 1] with the file's windowing, bone bright."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    if raw.ndim != 2:
        raise RadiographReadError(f"{path}: a {raw.ndim}-D pixel array; a radiograph is one 2-D frame.")
    values = apply_modality_lut(raw, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        # pydicom maps the window onto the stored range [0, 2^BitsStored - 1] (unsigned output)
        windowed = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        bits = int(getattr(ds, "BitsStored", 16))
        grey = _stretch(windowed, 0.0, float(2**bits - 1))
    else:
        grey = _stretch(values, float(values.min()), float(values.max()))
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        grey = 1.0 - grey  # MONOCHROME1: the minimum value is white; bone must be bright for the model
    return grey


def read_bitmap_radiograph(path: Path) -> np.ndarray:
    """PNG/JPEG/TIFF as grey values in [0, 1]."""
    with Image.open(path) as img:
        if img.mode in COLOUR_MODES:
            img = img.convert("L")
        a = np.asarray(img)
    if a.ndim != 2:
        raise RadiographReadError(
            f"{path}: PIL mode {img.mode!r} gives a {a.shape} array; a radiograph is one grey plane."
        )
    if a.dtype == np.uint8:
        return (a / 255.0).astype(np.float32)
    a = a.astype(np.float64)
    return _stretch(a, float(a.min()), float(a.max()))


def read_radiograph(path: str | Path) -> np.ndarray:
    """One radiograph as a 2-D float32 array in [0, 1], bone bright; :class:`RadiographReadError` if the
    file cannot be decoded."""
    path = Path(path)
    try:
        return read_dicom_radiograph(path) if _is_dicom(path) else read_bitmap_radiograph(path)
    except RadiographReadError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, AttributeError, KeyError) as err:
        raise RadiographReadError(
            f"{path}: cannot be read as a radiograph ({type(err).__name__}: {err})."
        ) from err


def _bitmap_header_problem(path: Path) -> RadiographProblem | None:
    """PIL's header and chunk check (``verify``: PNG chunk CRCs, a truncated stream), no decoding."""
    try:
        with Image.open(path) as img:
            mode, size, frames, fmt = img.mode, img.size, getattr(img, "n_frames", 1), img.format
            img.verify()
    except UnidentifiedImageError:
        head = path.read_bytes()[:16]
        started = next((fmt for sig, fmt in SIGNATURES.items() if head.startswith(sig)), None)
        if started:  # PIL cannot even identify it: the copy stops inside the header
            return RadiographProblem(
                "truncated",
                f"a {started} file cut short: {path.stat().st_size} bytes, not even its whole header.",
                RE_EXPORT + ".",
            )
        what = (
            "a text file"
            if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
            else "no image format PIL knows"
        )
        return RadiographProblem(
            "not_an_image",
            f"not an image: {what} (begins {head[:12]!r}), or only the first bytes of one.",
            "point the views table at the radiograph itself (DICOM, PNG, JPEG or TIFF), or "
            + RE_EXPORT
            + ".",
        )
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises SyntaxError for a broken PNG chunk
        return RadiographProblem(
            "truncated",
            f"damaged or truncated {path.suffix.lstrip('.').upper() or 'image'} file ({err}).",
            RE_EXPORT + ".",
        )
    if mode not in COLOUR_MODES + GREY_MODES:
        return RadiographProblem(
            "mode",
            f"{fmt} in PIL mode {mode!r}, which is not a grey or colour radiograph.",
            "save the view as 8- or 16-bit greyscale (e.g. `convert in.png -colorspace Gray out.png`).",
        )
    if min(size) < 1:
        return RadiographProblem("shape", f"the image is {size[0]} x {size[1]} pixels.", RE_EXPORT + ".")
    if frames > 1:
        return RadiographProblem(
            "shape",
            f"{frames} frames in one file; a view is one radiograph.",
            "save each radiograph in its own file and give it its own views-table row.",
        )
    return None


def _dicom_header_problem(path: Path) -> RadiographProblem | None:
    """The DICOM header and, for uncompressed pixel data, its length; no decoding."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, defer_size="1 KB")  # pixel data is left on disk until asked for
        # pydicom only warns when the file ends inside an element (e.g. compressed pixel data cut short)
        ended = [
            str(w.message) for w in caught if "End of file" in str(w.message) or "truncat" in str(w.message)
        ]
        if ended:
            return RadiographProblem("truncated", f"truncated DICOM: {ended[0]}.", RE_EXPORT + ".")
        if "PixelData" not in ds:
            return RadiographProblem(
                "no_pixels",
                f"a DICOM {getattr(ds, 'Modality', '?')} object without pixel data "
                f"(SOP class {getattr(ds, 'SOPClassUID', '?')}, e.g. a structured report).",
                "point the views table at the image object of the view, not a report or presentation state.",
            )
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples, frames = int(getattr(ds, "SamplesPerPixel", 1)), int(getattr(ds, "NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
        stored = len(ds.PixelData) if not ds.file_meta.TransferSyntaxUID.is_compressed else None
    except (InvalidDicomError, OSError, EOFError, AttributeError, KeyError, ValueError, TypeError) as err:
        return RadiographProblem(
            "unreadable", f"the DICOM header cannot be read ({type(err).__name__}: {err}).", RE_EXPORT + "."
        )
    if rows < 1 or cols < 1:
        return RadiographProblem("shape", f"the image is {cols} x {rows} pixels.", RE_EXPORT + ".")
    if samples > 1:
        return RadiographProblem(
            "mode",
            f"a colour DICOM ({getattr(ds, 'PhotometricInterpretation', '?')}, {samples} samples per pixel); "
            "a radiograph is one grey plane.",
            "export the view as a MONOCHROME1/MONOCHROME2 DICOM (the modality's original image, not a screen capture).",
        )
    if frames > 1:
        return RadiographProblem(
            "shape",
            f"{frames} frames in one DICOM file; a view is one radiograph.",
            "give the view's single-frame image (export the frame you want as its own file).",
        )
    expected = rows * cols * samples * bits // 8
    if stored is not None and stored < expected:
        return RadiographProblem(
            "truncated",
            f"truncated DICOM: {stored} bytes of pixel data where {rows} x {cols} x {bits} bits need {expected}.",
            RE_EXPORT + ".",
        )
    return None


def check_radiograph(path: str | Path, decode: bool = True) -> RadiographProblem | None:
    """Why the view image at ``path`` cannot be used, or None.

    Without decoding: the file exists and is not empty, its header is a radiograph's (one grey or colour
    plane, one frame, a non-zero size), a PNG's chunks are complete (PIL ``verify``), an uncompressed
    DICOM holds all its pixel bytes. With ``decode``: the pixels are read exactly as training reads them
    (:func:`read_radiograph`), which also finds a damaged compressed stream, and must be finite and not
    all one value (an empty export would teach the model nothing and score as a negative).
    """
    path = Path(path)
    if not path.is_file():
        return RadiographProblem(
            "missing",
            "file not found.",
            "correct the image path in the views table (a relative path is relative to the table's folder).",
        )
    if path.stat().st_size == 0:
        return RadiographProblem("empty", "the file is empty (0 bytes).", RE_EXPORT + ".")
    try:
        problem = _dicom_header_problem(path) if _is_dicom(path) else _bitmap_header_problem(path)
    except OSError as err:  # permissions, a file that vanished between the checks
        return RadiographProblem(
            "unreadable", f"cannot be opened ({err}).", "make the file readable by this user."
        )
    if problem is not None or not decode:
        return problem
    try:
        grey = read_radiograph(path)
    except RadiographReadError as err:
        detail = str(err).removeprefix(f"{path}: ")
        return RadiographProblem("unreadable", f"the pixels cannot be decoded: {detail}", RE_EXPORT + ".")
    if grey.ndim != 2:
        return RadiographProblem(
            "shape", f"decodes to a {grey.shape} array, not one 2-D radiograph.", RE_EXPORT + "."
        )
    if not np.isfinite(grey).all():
        return RadiographProblem(
            "not_finite",
            "holds NaN or infinite pixel values.",
            "re-export the view with integer pixels (8 or 16 bits).",
        )
    if float(grey.max()) == float(grey.min()):
        return RadiographProblem(
            "constant",
            f"every pixel has the same value ({float(grey.min()):.3g} after scaling to [0, 1]): a blank export.",
            RE_EXPORT + ", or remove the session from the views table.",
        )
    return None


def resize_view(grey: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(1, H, W)`` tensor resized to ``size`` without keeping the aspect ratio (paper: "resized to
    512x512 without preserving the original aspect ratio"); antialiased bilinear."""
    t = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]


def fuse_views(coronal: torch.Tensor, sagittal: torch.Tensor, green: str = "zeros") -> torch.Tensor:
    """``(3, H, W)``: R = coronal, B = sagittal (Figure 2); G = ``zeros`` (the paper), the two views'
    ``mean``, or a copy of the ``coronal`` or ``sagittal`` view."""
    if green not in GREEN_CHANNEL:
        raise ValueError(f"data.green_channel={green!r}: choose one of {GREEN_CHANNEL}.")
    c, s = coronal.reshape(coronal.shape[-2:]), sagittal.reshape(sagittal.shape[-2:])
    g = {
        "zeros": lambda: torch.zeros_like(c),
        "mean": lambda: (c + s) / 2,
        "coronal": lambda: c.clone(),
        "sagittal": lambda: s.clone(),
    }[green]()
    return torch.stack([c, g, s])

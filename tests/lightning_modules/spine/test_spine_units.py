"""Spine component, fast parts: view fusion, DICOM MONOCHROME1, Youden cut-offs, class-balanced loss,
occlusion maps, and the views table's errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from datamodules.spine.datamodule import SpineDataError, check_session_images, pair_views
from datamodules.spine.radiographs import fuse_views, read_radiograph, resize_view
from lightning_modules.common.losses import balanced_class_weights, class_weighted_bce_with_logits
from lightning_modules.common.occlusion import occlusion_maps
from lightning_modules.spine.evaluation import strict_threshold
from reportsup.analysis.youden import youden_cutoff


def _dicom(path, pixels: np.ndarray, photometric: str, window: tuple[float, float] | None = None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "P1"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_fusion_puts_coronal_in_red_sagittal_in_blue_and_green_as_configured():
    cor, sag = torch.full((1, 4, 4), 0.2), torch.full((1, 4, 4), 0.9)
    fused = fuse_views(cor, sag)
    assert fused.shape == (3, 4, 4)
    assert torch.all(fused[0] == 0.2) and torch.all(fused[2] == 0.9) and torch.all(fused[1] == 0)
    assert torch.allclose(fuse_views(cor, sag, "mean")[1], torch.full((4, 4), 0.55))
    assert torch.all(fuse_views(cor, sag, "sagittal")[1] == 0.9)
    with pytest.raises(ValueError, match="green_channel"):
        fuse_views(cor, sag, "blue")


def test_resize_ignores_the_aspect_ratio():
    # a 300 x 120 view with a bright square block in its top-left quarter (150 x 60 pixels): stretched,
    # not padded or cropped, the block fills exactly the top-left quarter of the 64 x 64 output
    view = np.zeros((300, 120))
    view[:150, :60] = 1.0
    out = resize_view(view, (64, 64))
    assert out.shape == (1, 64, 64)
    assert torch.all(out[0, :31, :31] > 0.99) and torch.all(out[0, 33:, :] < 0.01)
    assert torch.all(out[0, :, 33:] < 0.01)  # an aspect-keeping resize would put the edge elsewhere


def test_monochrome1_is_inverted_and_the_files_window_is_applied(tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 32), (16, 1))
    m2 = read_radiograph(_dicom(tmp_path / "m2.dcm", ramp, "MONOCHROME2"))
    m1 = read_radiograph(_dicom(tmp_path / "m1.dcm", 4095 - ramp, "MONOCHROME1"))
    assert m2[0, 0] == pytest.approx(0, abs=1e-3) and m2[0, -1] == pytest.approx(1, abs=1e-3)
    np.testing.assert_allclose(m1, m2, atol=1e-3)  # stored inverted, read back bone-bright
    narrow = read_radiograph(_dicom(tmp_path / "w.dcm", ramp, "MONOCHROME2", window=(2048, 1024)))
    assert narrow[0, 0] == 0 and narrow[0, -1] == 1 and 0 < narrow[0, 16] < 1  # saturated outside the window
    png = tmp_path / "v.png"
    Image.fromarray((ramp / 4095 * 255).astype(np.uint8)).save(png)
    np.testing.assert_allclose(read_radiograph(png), m2, atol=1 / 255 + 1e-3)


def test_an_unreadable_image_names_its_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        read_radiograph(bad)


def test_youden_cutoff_on_known_data():
    # negatives 0.1..0.4, positives 0.35..0.9: at 0.5, J = 4/5 + 1 - 1 (at 0.35 only 1 + 3/4 - 1)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6, 0.8, 0.9])
    res = youden_cutoff(y, s)
    assert res["cutoff"] == pytest.approx(0.5) and res["j"] == pytest.approx(0.8)
    assert res["sensitivity"] == pytest.approx(0.8) and res["specificity"] == 1.0
    # a tie of J (0.35 and 0.6 both give 0.75 without the 0.5 case) keeps the more specific cut-off
    assert youden_cutoff(np.delete(y, 5), np.delete(s, 5))["cutoff"] == pytest.approx(0.6)
    # applied with torchmetrics' strict ">" the cut-off itself still counts as positive
    assert np.float32(0.35) > strict_threshold(0.35)
    with pytest.raises(ValueError, match="one class"):
        youden_cutoff(np.ones(4), s[:4])


def test_balanced_class_weights_equal_sklearns_and_the_loss_is_their_weighted_mean():
    from sklearn.utils.class_weight import compute_class_weight

    y = torch.tensor([[1.0], [0.0], [0.0], [0.0], [float("nan")]])
    w = balanced_class_weights(y)
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array([1, 0, 0, 0]))
    np.testing.assert_allclose(w[:, 0].numpy(), expected)
    logits = torch.tensor([[0.5], [-1.0], [0.2], [0.0], [3.0]])
    two_class = torch.nn.functional.cross_entropy(
        torch.cat([torch.zeros(4, 1), logits[:4]], dim=1), y[:4, 0].long(), weight=w[:, 0]
    )
    assert class_weighted_bce_with_logits(logits, y, w).item() == pytest.approx(two_class.item(), rel=1e-5)


class _QuadrantOfRed(torch.nn.Module):
    """Output 0 = mean of the red (coronal) channel in the top-left 16x16 square: a planted 'finding'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :16, :16].mean(dim=(1, 2)).unsqueeze(1)


def test_occlusion_maps_have_the_image_shape_and_find_the_planted_region():
    image = torch.rand(3, 48, 48)
    maps = occlusion_maps(_QuadrantOfRed(), image, target=0, patch=8, stride=4)
    assert maps["coronal"].shape == (48, 48) and maps["sagittal"].shape == (48, 48)
    cor = maps["coronal"]
    assert cor[:16, :16].mean() > 10 * abs(cor[32:, 32:].mean()) + 1e-6
    assert np.abs(maps["sagittal"]).max() == 0  # occluding the sagittal view changes nothing here


def _views(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["session_id", "patient_id", "view", "image", "report_id"]).astype(str)


def test_views_table_errors_name_the_session_and_rows(tmp_path):
    img, lat = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(lat)
    ok = _views([["S1", "P1", "coronal", img, "R1"], ["S1", "P1", "Sagittal", lat, "R1"]])
    paired = pair_views(ok, tmp_path / "views.csv")
    assert paired["sagittal"].iloc[0] == str(lat)
    assert (paired["coronal_row"].iloc[0], paired["sagittal_row"].iloc[0]) == (2, 3)
    with pytest.raises(
        SpineDataError, match=r"session S1 \(rows 2, 3\) gives the same file as its coronal and its sagittal"
    ):
        pair_views(
            _views([["S1", "P1", "coronal", img, "R1"], ["S1", "P1", "sagittal", img, "R1"]]),
            tmp_path / "v.csv",
        )
    with pytest.raises(SpineDataError, match=r"session S2 \(rows 4\) has no sagittal"):
        pair_views(pd.concat([ok, _views([["S2", "P2", "coronal", img, "R2"]])]), tmp_path / "views.csv")
    three = _views([["S1", "P1", v, img, "R1"] for v in ("coronal", "sagittal", "sagittal")])
    with pytest.raises(SpineDataError, match="has 3 images"):
        pair_views(three, tmp_path / "views.csv")
    missing = pair_views(
        _views(
            [["S1", "P1", "coronal", tmp_path / "missing.png", "R1"], ["S1", "P1", "sagittal", lat, "R1"]]
        ),
        tmp_path / "v.csv",
    )
    with pytest.raises(
        SpineDataError, match=r"row 2 \(session S1, coronal view\) .*missing.png: file not found"
    ):
        check_session_images(missing, tmp_path / "v.csv", decode=False)
    with pytest.raises(SpineDataError, match="view must be one of"):
        pair_views(
            _views([["S1", "P1", "lateral", img, "R1"], ["S1", "P1", "coronal", img, "R1"]]),
            tmp_path / "v.csv",
        )
    assert pydicom  # the DICOM writer above uses it


def test_init_checkpoint_folder_resolves_to_the_run_of_the_same_finding(tmp_path):
    from lightning_modules.spine.image_module import SpineResNet, state_digest

    paths = {}
    for finding in ("scoliosis", "fractures"):
        model = SpineResNet([finding], torch.optim.SGD, weights=None)
        ckpt = tmp_path / f"0_{finding}" / "checkpoints" / "best-epoch03.ckpt"
        ckpt.parent.mkdir(parents=True)
        state = {f"network.{k}": v for k, v in model.network.state_dict().items()}
        torch.save({"state_dict": state, "label_manifest": model.label_manifest()}, ckpt)
        paths[finding] = (ckpt, state_digest(model.network.state_dict()))
    refined = SpineResNet(
        ["fractures"], torch.optim.SGD, weights="IMAGENET1K_V1", init_checkpoint=str(tmp_path)
    )
    assert refined.init["source"] == "checkpoint" and refined.init["file"] == str(
        paths["fractures"][0].resolve()
    )
    assert refined.init["state_sha256"] == paths["fractures"][1]  # no ImageNet download: the checkpoint wins
    with pytest.raises(FileNotFoundError, match="0 best checkpoints"):
        SpineResNet(["osteoporosis"], torch.optim.SGD, weights=None, init_checkpoint=str(tmp_path))


def test_flip_views_coronal_keeps_the_sagittal_view_front_to_back():
    from datamodules.spine.datamodule import ViewAugmentation

    views = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6) / 48
    quiet = {"blur_probability": 0.0, "contrast_probability": 0.0, "noise_sigma": 0.0}
    both = ViewAugmentation(flip_probability=1.0, **quiet)(views)
    assert torch.equal(both, views.flip(-1))  # the paper: the fused image flipped
    coronal = ViewAugmentation(flip_probability=1.0, flip_views="coronal", **quiet)(views)
    assert torch.equal(coronal[0], views[0].flip(-1)) and torch.equal(coronal[1], views[1])
    assert torch.equal(ViewAugmentation(flip_probability=0.0, **quiet)(views), views)
    with pytest.raises(ValueError, match="flip_views='sagittal'"):
        ViewAugmentation(flip_views="sagittal")

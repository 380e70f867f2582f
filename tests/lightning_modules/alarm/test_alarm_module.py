"""ALARM classifier: attention pooling ignores padding, masked loss, label manifest in checkpoints."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.alarm.module import ALARMClassifier
from lightning_modules.common.label_manifest import CheckpointManifestError
from lightning_modules.common.losses import masked_bce_with_logits
from lightning_modules.common.pooling import AttentionPooling


def _model(encoder, labels=("abnormal",)):
    torch.manual_seed(0)
    return ALARMClassifier(encoder=encoder, labels=list(labels), optimizer=torch.optim.Adam).eval()


def test_attention_pooling_weights_are_zero_on_padding():
    pool = AttentionPooling(8, 4)
    tokens = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled, w = pool(tokens, mask)
    assert torch.all(w[0, 3:] == 0) and torch.allclose(w.sum(-1), torch.ones(2))
    tokens2 = tokens.clone()
    tokens2[0, 3:] = 100.0  # whatever sits in padded positions
    assert torch.allclose(pool(tokens2, mask)[0], pooled)


def test_changing_padded_token_ids_changes_nothing(tiny_encoder):
    model = _model(tiny_encoder)
    batch = tiny_encoder.tokenize(
        ["no acute infarct.", "there is a large enhancing mass in the left frontal lobe."]
    )
    assert (batch["attention_mask"] == 0).any()
    ids = batch["input_ids"].clone()
    ids[batch["attention_mask"] == 0] = 7  # any other token id in the padding
    with torch.no_grad():
        a, wa = model(batch["input_ids"], batch["attention_mask"], return_attention=True)
        b, wb = model(ids, batch["attention_mask"], return_attention=True)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(wa, wb, atol=1e-6)
    assert torch.all(wa[batch["attention_mask"] == 0] == 0)


def test_masked_bce_ignores_unknown_targets():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    loss = masked_bce_with_logits(logits, targets)
    known = ~torch.isnan(targets)
    expected = F.binary_cross_entropy_with_logits(logits[known], targets[known])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert logits.grad[0, 1] == 0  # the unknown entry gets no gradient
    everything_unknown = masked_bce_with_logits(logits, torch.full((2, 2), float("nan")))
    assert everything_unknown.item() == 0.0 and everything_unknown.requires_grad


def _save_checkpoint(model, path):
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return ckpt


def test_checkpoint_carries_manifest_and_rebuilds_offline(tiny_encoder, tmp_path):
    model = _model(tiny_encoder, labels=["mass", "acute_stroke"])
    ckpt = _save_checkpoint(model, tmp_path / "m.ckpt")
    manifest = ckpt["label_manifest"]
    assert manifest["labels"] == ["mass", "acute_stroke"] and manifest["threshold"] == 0.5
    assert manifest["text_preprocessing"]["lowercase"] is True and manifest["framework"] == "reportsup"
    restored = ALARMClassifier.from_checkpoint(tmp_path / "m.ckpt")
    batch = tiny_encoder.tokenize(["Acute infarct in the left thalamus."])
    with torch.no_grad():
        assert torch.allclose(
            model(**batch), restored(**restored.encoder.tokenize(["Acute infarct in the left thalamus."]))
        )


def test_loading_a_checkpoint_checks_its_manifest(tiny_encoder, tmp_path):
    ckpt = _save_checkpoint(_model(tiny_encoder, labels=["mass"]), tmp_path / "m.ckpt")
    other = _model(tiny_encoder, labels=["atrophy"])
    with pytest.raises(CheckpointManifestError, match="labels.*mass.*atrophy"):
        other.on_load_checkpoint(ckpt)
    with pytest.raises(CheckpointManifestError, match="no label manifest"):
        other.on_load_checkpoint({"state_dict": {}})


def test_predict_returns_attention_per_report(tiny_encoder):
    model = _model(tiny_encoder)
    batch = tiny_encoder.tokenize(["a b c", "normal"])
    batch.update(index=torch.arange(2), targets=torch.zeros(2, 1))
    with torch.no_grad():
        out = model.predict_step(batch, 0)
    assert out["attention"].shape == batch["input_ids"].shape
    np.testing.assert_allclose(out["attention"].sum(-1).numpy(), 1.0, rtol=1e-5)

"""reportsup-export: a trained model as a Hugging Face layout folder with a model card, loaded offline
without unpickling; the spine report classifier also as a stock BertForSequenceClassification."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_modules.spine.report_module import SpineReportClassifier
from reportsup import ReportLabeller, export_model
from reportsup.api.loading import read_exported
from reportsup.cli.export import main
from reportsup.contracts.label_folder import read_label_folder
from reportsup.labelling import label_archive

ROOT = Path(__file__).resolve().parents[2]
PRE_LAYOUT = ROOT / "tests" / "data" / "alarm_pre_layout_v0.1.0.ckpt"
PRE_LAYOUT_EXPECTED = ROOT / "tests" / "data" / "alarm_pre_layout_v0.1.0_expected.csv"
PROBS = ["abnormal_prob", "mass_prob"]


def _run_folder(tmp_path: Path) -> Path:
    """A run folder as train.py leaves it: the checkpoint, splits.csv, data_summary.json, metrics.json."""
    run = tmp_path / "outputs" / "alarm_binary" / "2026-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(PRE_LAYOUT, run / "checkpoints" / "best-epoch01.ckpt")
    pd.DataFrame(
        {
            "id": ["r1", "r2", "r3", "r4"],
            "patient_id": ["p1", "p1", "p2", "p3"],
            "split": ["train", "train", "val", "test"],
        }
    ).to_csv(run / "splits.csv", index=False)
    (run / "data_summary.json").write_text(json.dumps({"sizes": {"train": 2, "val": 1, "test": 1}}))
    metrics = {
        "report_label": {
            "abnormal": {
                "auroc": {"value": 0.9731, "ci_low": 0.9512, "ci_high": 0.9899},
                "n": {"value": 120},
            }
        }
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_export_round_trips_with_a_model_card_and_never_unpickles(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    out = export_model(run, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((out / "config.json").read_text())["reportsup"]
    assert config["task"] == "alarm_report_classifier" and config["labels"] == ["abnormal", "mass"]
    assert config["threshold"] == 0.5 and config["preprocessing"]["lowercase"] is True
    assert config["label_manifest"]["framework_version"] == "0.1.0"  # the version that trained it
    assert (
        "files" not in config["label_manifest"]["encoder"]
        and config["encoder_config"]["model_type"] == "bert"
    )
    card = (out / "README.md").read_text()
    for needed in (
        "## What it predicts",
        "`abnormal`, `mass`",
        "doi.org/10.1007/s00330-021-08132-0",  # Wood et al. 2021
        "| train | 2 | 1 |",  # splits.csv: items and patients per split
        "| report_label | abnormal | auroc | 0.973 | 0.951 - 0.990 |",
        "## Intended use",
        "## Limitations",
    ):
        assert needed in card, needed

    # loading the export unpickles nothing: torch.load and pickle are off limits
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading an exported model")

    expected = pd.read_csv(PRE_LAYOUT_EXPECTED)
    with monkeypatch.context() as m:
        m.setattr(torch, "load", refuse)
        m.setattr(pickle, "load", refuse)
        m.setattr(pickle, "loads", refuse)
        m.setenv("HF_HUB_OFFLINE", "1")
        table = ReportLabeller.from_pretrained(out).predict(expected["text"].tolist())
    np.testing.assert_allclose(table[PROBS].to_numpy(), expected[PROBS].to_numpy(), atol=1e-5, rtol=0)
    # reportsup-label takes the exported folder too, with the same labels as the checkpoint gives
    archive = tmp_path / "archive.csv"
    pd.DataFrame({"report_id": ["a", "b", "c"], "text": expected["text"]}).to_csv(archive, index=False)
    label_archive(out, archive, tmp_path / "labels", progress=False)
    labelled, _ = read_label_folder(tmp_path / "labels")
    np.testing.assert_allclose(labelled[PROBS].to_numpy(), expected[PROBS].to_numpy(), atol=1e-5, rtol=0)
    manifest = json.loads((tmp_path / "labels" / "manifest.json").read_text())
    assert (
        manifest["checkpoint_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    )
    # save_pretrained of the loaded export: same weights, the card kept
    again = ReportLabeller.from_pretrained(out).save_pretrained(tmp_path / "again")
    assert (again / "README.md").read_text() == card
    for name, tensor in read_exported(out)[1].items():
        assert torch.equal(tensor, read_exported(again)[1][name])


def test_overwriting_is_refused(tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(PRE_LAYOUT, out)
    with pytest.raises(SystemExit, match="reportsup-export: .*not empty"):
        main([str(PRE_LAYOUT), str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    main([str(PRE_LAYOUT), str(tmp_path / "new")])  # the command itself, into a new folder
    assert (tmp_path / "new" / "model.safetensors").is_file()
    with pytest.raises(SystemExit, match="already an exported model"):
        main([str(tmp_path / "new"), str(tmp_path / "newer")])


@pytest.fixture
def spine_checkpoint(tiny_encoder, tmp_path):
    def make(pooling: str) -> tuple[SpineReportClassifier, Path]:
        torch.manual_seed(0)
        model = SpineReportClassifier(
            tiny_encoder, ["listesi", "artrosi"], optimizer=torch.optim.AdamW, pooling=pooling
        )
        model.class_weights.copy_(torch.tensor([[0.6, 0.7], [2.5, 1.8]]))
        checkpoint = {"state_dict": model.state_dict()}
        model.on_save_checkpoint(checkpoint)
        path = tmp_path / f"spine_{pooling}.ckpt"
        torch.save(checkpoint, path)
        return model.eval(), path

    return make


def test_spine_report_model_loads_as_a_stock_bert_sequence_classifier(
    spine_checkpoint, synthetic_dir, tmp_path
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, ckpt = spine_checkpoint("cls")
    out = export_model(ckpt, tmp_path / "spine")
    hf, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert type(hf).__name__ == "BertForSequenceClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.problem_type == "multi_label_classification"
    assert hf.config.id2label == {0: "listesi", 1: "artrosi"}
    texts = pd.read_csv(synthetic_dir / "reports.csv")["text"].head(12).tolist()
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer([model.encoder.preprocess(t) for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"])
        theirs = hf.eval()(**batch).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-6)
    # and back through reportsup, with the training-time class weights restored from the manifest
    labeller = ReportLabeller.from_pretrained(out)
    assert torch.equal(labeller.model.class_weights, model.class_weights)
    np.testing.assert_allclose(
        labeller.predict(texts)[["listesi_prob", "artrosi_prob"]].to_numpy(),
        torch.sigmoid(ours).numpy(),
        atol=1e-6,
    )


def test_spine_attention_pooling_is_not_a_bert_classifier_and_keeps_reportsup_names(
    spine_checkpoint, tmp_path
):
    _, ckpt = spine_checkpoint("attention")
    out = export_model(ckpt, tmp_path / "spine_att")
    config = json.loads((out / "config.json").read_text())
    assert config["reportsup"]["weights_layout"] == "reportsup" and "architectures" not in config
    assert ReportLabeller.from_pretrained(out).model.hparams.pooling == "attention"

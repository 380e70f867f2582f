"""The Python API for report models: ReportLabeller and SentenceDiscretizer load a run folder, a checkpoint
(weights_only) or an exported folder and predict the tables the console scripts write."""

from __future__ import annotations

import doctest
import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.common.tables import ReportTableError
from lightning_modules.alarm.module import ALARMClassifier
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from reportsup import ReportLabeller, SentenceDiscretizer
from reportsup.api import discretizer as discretizer_module
from reportsup.api import reports as reports_module
from reportsup.contracts.label_folder import read_label_folder
from reportsup.labelling import label_archive

ROOT = Path(__file__).resolve().parents[3]
PRE_LAYOUT = ROOT / "tests" / "data" / "alarm_pre_layout_v0.1.0.ckpt"
PRE_LAYOUT_EXPECTED = ROOT / "tests" / "data" / "alarm_pre_layout_v0.1.0_expected.csv"
PROBS = ["abnormal_prob", "mass_prob"]


def _alarm_checkpoint(encoder, path: Path, seed: int = 0, **extra) -> Path:
    torch.manual_seed(seed)
    model = ALARMClassifier(encoder, ["abnormal", "mass"], optimizer=torch.optim.Adam)
    torch.save({"state_dict": model.state_dict(), "label_manifest": model.label_manifest(), **extra}, path)
    return path


def test_pre_layout_checkpoint_reproduces_its_recorded_probabilities():
    """A real Lightning checkpoint written before the package move (v0.1.0) loads with weights_only and
    gives the probabilities recorded when it was written."""
    expected = pd.read_csv(PRE_LAYOUT_EXPECTED)
    labeller = ReportLabeller.from_pretrained(PRE_LAYOUT)
    assert labeller.labels == ["abnormal", "mass"] and labeller.threshold == 0.5
    table = labeller.predict(expected["text"].tolist())
    np.testing.assert_allclose(table[PROBS].to_numpy(), expected[PROBS].to_numpy(), atol=1e-5, rtol=0)
    assert table["abnormal"].tolist() == (expected["abnormal_prob"] > 0.5).astype(int).tolist()


def test_predict_gives_the_reportsup_label_columns_for_texts_tables_and_files(
    tiny_encoder, synthetic_dir, tmp_path
):
    ckpt = _alarm_checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    reports = pd.read_csv(synthetic_dir / "reports.csv", dtype=str)[["report_id", "patient_id", "text"]].head(
        40
    )
    labeller = ReportLabeller.from_pretrained(ckpt, batch_size=8)
    # what reportsup-label writes for the same archive and checkpoint
    reports.to_csv(tmp_path / "archive.csv", index=False)
    label_archive(ckpt, tmp_path / "archive.csv", tmp_path / "labels", progress=False)
    written, _ = read_label_folder(tmp_path / "labels")
    from_frame = labeller.predict(reports)
    assert list(from_frame.columns) == list(written.columns)
    pd.testing.assert_frame_equal(from_frame, written, check_dtype=False, atol=1e-6)
    for path in (tmp_path / "archive.csv", tmp_path / "archive.parquet", tmp_path / "archive.jsonl"):
        if path.suffix == ".parquet":
            reports.to_parquet(path)
        elif path.suffix == ".jsonl":
            reports.to_json(path, orient="records", lines=True)
        pd.testing.assert_frame_equal(labeller.predict(path), from_frame, check_dtype=False, atol=1e-6)
        assert labeller.predict(str(path))["report_id"].tolist() == reports["report_id"].tolist()
    texts = labeller.predict(reports["text"].tolist())
    assert texts["report_id"].tolist() == [str(i) for i in range(40)]
    np.testing.assert_allclose(texts[PROBS].to_numpy(), from_frame[PROBS].to_numpy(), atol=1e-6)
    # a run folder resolves to its best checkpoint
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, run / "checkpoints" / "best-epoch03.ckpt")
    np.testing.assert_allclose(
        ReportLabeller.from_pretrained(run).predict(reports)[PROBS].to_numpy(),
        from_frame[PROBS].to_numpy(),
        atol=1e-6,  # batches of 64 instead of 8: float sums in another order
    )


def test_bad_input_is_named(tiny_encoder, tmp_path):
    labeller = ReportLabeller.from_pretrained(_alarm_checkpoint(tiny_encoder, tmp_path / "a.ckpt"))
    with pytest.raises(ReportTableError, match=r"row 1 \(report_id '1'\): empty text"):
        labeller.predict(["a mass in the left frontal lobe", "   "])
    empty = labeller.predict([])
    assert empty.empty and list(empty.columns) == [
        "report_id",
        "abnormal_prob",
        "abnormal",
        "mass_prob",
        "mass",
    ]
    with pytest.raises(TypeError, match="pass a list"):
        labeller.predict("a mass in the left frontal lobe")
    with pytest.raises(ReportTableError, match="no column 'text'.*text_column"):
        labeller.predict(pd.DataFrame({"report": ["a mass"]}))
    assert labeller.predict(pd.DataFrame({"report": ["a mass"]}), text_column="report")[
        "report_id"
    ].tolist() == ["0"]
    with pytest.raises(FileNotFoundError, match="not found"):
        ReportLabeller.from_pretrained(tmp_path / "nothing_here")


def test_a_checkpoint_that_needs_unpickling_is_refused_with_the_reason(tiny_encoder, tmp_path):
    # e.g. a checkpoint whose hyper-parameters hold a functools.partial optimizer
    ckpt = _alarm_checkpoint(
        tiny_encoder,
        tmp_path / "pickled.ckpt",
        hyper_parameters={"optimizer": functools.partial(torch.optim.Adam)},
    )
    with pytest.raises(UnsafeCheckpointError, match=r"functools\.partial.*trust_checkpoint=True"):
        ReportLabeller.from_pretrained(ckpt)
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        ALARMClassifier.from_checkpoint(ckpt)
    assert ReportLabeller.from_pretrained(ckpt, trust_checkpoint=True).labels == ["abnormal", "mass"]
    from reportsup.cli.label import main

    archive = tmp_path / "a.csv"
    pd.DataFrame({"report_id": ["r1"], "text": ["a mass"]}).to_csv(archive, index=False)
    with pytest.raises(SystemExit, match="reportsup-label: .*--trust-checkpoint"):
        main([str(ckpt), str(archive), str(tmp_path / "out"), "--no-progress"])


def test_the_discretizer_is_not_a_report_labeller(tmp_path, tiny_discretizer_checkpoint):
    with pytest.raises(ValueError, match="crossdl_discretizer.*expected one of"):
        ReportLabeller.from_pretrained(tiny_discretizer_checkpoint)


@pytest.fixture(scope="module")
def tiny_discretizer_checkpoint(tmp_path_factory):
    from datamodules.synthetic.datasets.ct_reports import generate_ct_tables
    from lightning_modules.common.encoders import tiny_bert_encoder
    from lightning_modules.crossdl.discretizer.module import DiscretizerModule

    texts = generate_ct_tables(60, seed=1)["ct_sentences"]["text"].tolist()
    encoder = tiny_bert_encoder(
        texts,
        vocab_size=400,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    torch.manual_seed(0)
    model = DiscretizerModule(
        encoder=encoder,
        optimizer=torch.optim.Adam,
        sentence_splitting={
            "language": "en",
            "findings_headers": ["findings"],
            "end_headers": ["impression"],
        },
    )
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("disc") / "d.ckpt"
    torch.save(ckpt, path)
    return path


def test_sentence_discretizer_predicts_the_reportsup_discretize_table(tiny_discretizer_checkpoint, tmp_path):
    from datamodules.synthetic.datasets.ct_reports import generate_ct_tables
    from reportsup.discretize import discretize_file

    reports = generate_ct_tables(30, seed=5)["ct_reports"][["report_id", "patient_id", "scan_id", "text"]]
    reports.to_csv(tmp_path / "r.csv", index=False)
    discretize_file(tiny_discretizer_checkpoint, tmp_path / "r.csv", tmp_path / "out.parquet", progress=False)
    written = pd.read_parquet(tmp_path / "out.parquet")
    discretizer = SentenceDiscretizer.from_pretrained(tiny_discretizer_checkpoint)
    table = discretizer.predict(tmp_path / "r.csv")
    assert list(table.columns) == list(written.columns)
    pd.testing.assert_frame_equal(table, written, check_dtype=False)
    assert len(discretizer.regions) == 19 and discretizer.labels == [*discretizer.regions, *discretizer.types]
    soft = discretizer.predict(reports, probabilities=True)
    assert (
        any(c.endswith("_prob") for c in soft.columns)
        and soft["report_id"].tolist() == reports["report_id"].tolist()
    )
    # exported and loaded again: the same table
    out = discretizer.save_pretrained(tmp_path / "exported")
    pd.testing.assert_frame_equal(
        SentenceDiscretizer.from_pretrained(out).predict(reports), discretizer.predict(reports)
    )


def test_docstring_examples_run(monkeypatch, tiny_discretizer_checkpoint):
    monkeypatch.chdir(ROOT)  # the examples name tests/data/... relative to the repository
    for module, globs in ((reports_module, {}), (discretizer_module, {"path": tiny_discretizer_checkpoint})):
        result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, f"{module.__name__}: {result}"


def test_reportsup_discretize_into_a_folder_writes_the_file_modes_table_as_a_dataset(
    tiny_discretizer_checkpoint, tiny_encoder, tmp_path
):
    """Issue 21, item 7: ``reportsup-discretize`` into a folder (no .csv/.parquet suffix) writes a labelling
    folder whose parts hold the file mode's table; columns can be renamed; a classifier is refused."""
    from datamodules.synthetic.datasets.ct_reports import generate_ct_tables
    from reportsup.cli.discretize import main as discretize_main

    reports = generate_ct_tables(30, seed=5)["ct_reports"][["report_id", "patient_id", "scan_id", "text"]]
    reports.to_csv(tmp_path / "r.csv", index=False)
    ckpt, source = str(tiny_discretizer_checkpoint), str(tmp_path / "r.csv")
    discretize_main([ckpt, source, str(tmp_path / "file.parquet"), "--probabilities", "--no-progress"])
    discretize_main(
        [ckpt, source, str(tmp_path / "folder"), "--probabilities", "--chunk-size", "7", "--no-progress"]
    )
    written = pd.read_parquet(tmp_path / "file.parquet")
    labels, manifest = read_label_folder(tmp_path / "folder")
    assert len(list((tmp_path / "folder" / "parts").glob("part-*.parquet"))) == 5  # 30 reports in chunks of 7
    assert manifest["label_manifest"]["task"] == "crossdl_discretizer" and manifest["probabilities"] is True
    pd.testing.assert_frame_equal(labels, written, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "folder" / "parts"), labels)
    # renamed in either form; a name the discretizer does not write is refused, naming it
    first_cell = written.columns[5]
    for out in ("renamed.parquet", "renamed"):
        discretize_main(
            [ckpt, source, str(tmp_path / out), "--rename", f"{first_cell}=first_cell", "--no-progress"]
        )
    renamed, _ = read_label_folder(tmp_path / "renamed")
    assert "first_cell" in renamed.columns and first_cell not in renamed.columns
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "renamed.parquet"), renamed, check_dtype=False)
    for out in ("typo.parquet", "typo"):
        with pytest.raises(
            SystemExit, match=r"^reportsup-discretize: column map: no output column \['scan__hemorrhage_x'\]"
        ):
            discretize_main(
                [ckpt, source, str(tmp_path / out), "--rename", "scan__hemorrhage_x=y", "--no-progress"]
            )
    alarm = _alarm_checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    with pytest.raises(SystemExit, match="alarm_report_classifier.*expected one of"):
        discretize_main([str(alarm), source, str(tmp_path / "alarm"), "--no-progress"])
    assert not (tmp_path / "alarm" / "manifest.json").exists()


def test_the_api_labels_with_int8_when_asked_and_keeps_fp32_for_export(tiny_encoder, synthetic_dir, tmp_path):
    """Issue 21, item 6 through the API: ``quantize="int8"`` changes the probabilities (the int8 model runs)
    by a small amount, and the model kept for save_pretrained is the fp32 one."""
    ckpt = _alarm_checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    texts = pd.read_csv(synthetic_dir / "reports.csv")["text"].head(30).tolist()
    fp32 = ReportLabeller.from_pretrained(ckpt).predict_proba(texts)
    int8 = ReportLabeller.from_pretrained(ckpt, quantize="int8")
    gap = np.abs(int8.predict_proba(texts) - fp32).max()
    assert 1e-5 < gap < 0.2
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.model.modules())


def test_discretizer_applies_the_cutoffs_chosen_on_validation_and_exports_them(
    tiny_discretizer_checkpoint, tmp_path
):
    """model.threshold=validation (issue 22): reportsup-discretize and the API binarise each sentence
    label at its own cut-off from the checkpoint, not at one threshold; exported models keep them."""
    from datamodules.synthetic.datasets.ct_reports import generate_ct_tables

    reports = generate_ct_tables(20, seed=7)["ct_reports"][["report_id", "text"]]
    discretizer = SentenceDiscretizer.from_pretrained(tiny_discretizer_checkpoint)
    assert set(discretizer.cutoffs.values()) == {0.5}  # no choice: the paper's 0.5 everywhere
    model = discretizer.model

    def chosen(cut: float) -> dict:
        return {"cutoff": cut, "threshold": cut, "rule": "youden"}

    found = discretizer.predict(reports)["status"] == "ok"
    assert found.any()
    cells = discretizer._discretizer.space.matrix_columns()
    # every type's cut-off above 1: no sentence has a type, so no cell and no scan label is positive
    model.label_thresholds = {t: chosen(1.5) for t in discretizer.types}
    never = SentenceDiscretizer(model, discretizer.source)
    assert never.cutoffs[discretizer.types[0]] == 1.5 and never.cutoffs[discretizer.regions[0]] == 0.5
    table = never.predict(reports)
    assert (table.loc[found, cells].to_numpy() == 0).all()
    # every cut-off at 0: every sentence is every region and type, so every cell of a report is 1
    model.label_thresholds = {label: chosen(0.0) for label in discretizer.labels}
    always = SentenceDiscretizer(model, discretizer.source)
    assert (always.predict(reports).loc[found, cells].to_numpy() == 1).all()
    again = SentenceDiscretizer.from_pretrained(always.save_pretrained(tmp_path / "exported"))
    assert again.cutoffs == always.cutoffs

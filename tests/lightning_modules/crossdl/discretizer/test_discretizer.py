"""Cross-DL discretizer: label space, flip, Findings extraction, matrix merge, tables, bulk labelling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.common.report_sections import (
    MissingFindingsError,
    extract_findings,
    findings_sentences,
    split_sentences,
)
from datamodules.common.tables import ReportTableError
from datamodules.crossdl.sentences.datamodule import read_sentence_table
from datamodules.crossdl.sentences.text_flip import LeftRightFlip, symmetric_word_map
from datamodules.synthetic.datasets.ct_reports import generate_ct_tables, write_ct_dataset
from reportsup.contracts.labels.crossdl import REGIONS, TYPES, LabelSpace, report_matrices

SPACE = LabelSpace()


def _regions(*names):
    v = np.zeros(len(SPACE.regions), dtype=np.float32)
    for n in names:
        v[SPACE.regions.index(n)] = 1
    return v


def test_label_space_is_the_papers():
    assert len(SPACE.regions) == 19 and len(SPACE.anatomical_regions) == 17 and len(SPACE.types) == 4
    assert SPACE.regions[-2:] == ("other", "unclear") and "brain_stem" in SPACE.regions
    assert (
        len(SPACE.matrix_columns()) == 76
        and SPACE.matrix_columns()[0] == "left_frontal_lobe__intraparenchymal_hyperdensity"
    )
    assert SPACE.merged_region_names()["frontal_lobe"] == ["left_frontal_lobe", "right_frontal_lobe"]
    perm = SPACE.flip_permutation()
    assert np.array_equal(perm[perm], np.arange(19))  # an involution
    assert SPACE.regions[perm[SPACE.regions.index("left_cerebellum")]] == "right_cerebellum"
    assert SPACE.regions[perm[SPACE.regions.index("brain_stem")]] == "brain_stem"


def test_bad_label_space_config_is_refused():
    with pytest.raises(ValueError, match="side_pairs"):
        LabelSpace.from_config(side_pairs={"left_frontal_lobe": "right_nowhere"})


def test_flip_swaps_words_and_paired_labels_and_is_its_own_inverse():
    flip = LeftRightFlip(SPACE)
    text = "Hematoma in the left frontal lobe and Right temporal lobe; L parietal, Lt cerebellum, leftover, bright."
    regions = _regions("left_frontal_lobe", "right_temporal_lobe", "brain_stem", "unclear")
    flipped_text, flipped = flip(text, regions)
    assert (
        flipped_text
        == "Hematoma in the right frontal lobe and Left temporal lobe; R parietal, Rt cerebellum, leftover, bright."
    )
    assert np.array_equal(
        flipped, _regions("right_frontal_lobe", "left_temporal_lobe", "brain_stem", "unclear")
    )
    back_text, back = flip(flipped_text, flipped)
    assert back_text == text and np.array_equal(back, regions)


def test_chinese_word_map_and_asymmetric_map():
    flip = LeftRightFlip(SPACE, {"左": "右"})
    assert flip.flip_text("左侧额叶见高密度影，右侧正常。") == "右侧额叶见高密度影，左侧正常。"
    with pytest.raises(ValueError, match="symmetric"):
        symmetric_word_map({"left": "right", "right": "up"})


def test_findings_extraction_and_sentence_splitting():
    report = "Clinical history: fall.\nFINDINGS: Hematoma in the left frontal lobe. No midline shift.\nImpression: left frontal hematoma."
    assert extract_findings(report) == "Hematoma in the left frontal lobe. No midline shift."
    assert findings_sentences(report) == ["Hematoma in the left frontal lobe.", "No midline shift."]
    assert findings_sentences(
        "检查所见：左侧额叶见高密度影。中线结构居中。诊断意见：脑出血。", "zh", ["检查所见"], ["诊断意见"]
    ) == ["左侧额叶见高密度影。", "中线结构居中。"]
    assert split_sentences("Blutung links frontal. Keine Verlagerung.", "xx") == [
        "Blutung links frontal.",
        "Keine Verlagerung.",
    ]
    with pytest.raises(MissingFindingsError):
        findings_sentences("Impression: normal study.")


def test_report_matrix_merge_on_hand_made_sentences():
    # "hyperdensity in the left frontal and temporal lobes with a hypodense rim" + "subdural hematoma under the
    # right parietal plate" + a normal sentence; report 1 has no sentences.
    r = np.stack(
        [_regions("left_frontal_lobe", "left_temporal_lobe"), _regions("right_parietal_lobe"), _regions()]
    )
    t = np.array([[0.9, 0.1, 0.8, 0.0], [0.2, 0.95, 0.1, 0.3], [0.1, 0.1, 0.1, 0.1]], dtype=np.float32)
    a = report_matrices(np.array([0, 0, 0]), r, t, n_reports=2)
    expected = np.zeros((19, 4))
    for reg in ("left_frontal_lobe", "left_temporal_lobe"):
        expected[SPACE.regions.index(reg), [0, 2]] = 1
    expected[SPACE.regions.index("right_parietal_lobe"), 1] = 1
    assert np.array_equal(a[0], expected) and not a[1].any()
    soft = report_matrices(np.array([0, 0, 0]), r, t, n_reports=1, threshold=None)
    assert soft[0, SPACE.regions.index("left_frontal_lobe"), 0] == pytest.approx(0.9)


def test_synthetic_reports_agree_with_their_lesion_specs():
    tables = generate_ct_tables(300, seed=3)
    reports, sentences = tables["ct_reports"], tables["ct_sentences"]
    assert generate_ct_tables(300, seed=3)["ct_reports"].equals(reports)
    by_report = sentences.groupby("report_id")
    checked = 0
    for rid, group in by_report:
        gold = reports.loc[reports["report_id"] == rid, SPACE.matrix_columns()].to_numpy().reshape(19, 4)
        merged = report_matrices(
            np.zeros(len(group), int), group[list(REGIONS)].to_numpy(), group[list(TYPES)].to_numpy(), 1
        )[0]
        assert np.array_equal(merged, gold), rid
        checked += 1
    assert checked > 50
    texts = " ".join(reports["text"])
    for phrase in (
        "hematoma",
        "edema",
        "cranial plate",
        "mixed density",
        "cerebral falx",
        "No abnormal density in the brain parenchyma",
    ):
        assert phrase in texts, phrase


def test_malformed_sentence_tables(tmp_path):
    good = generate_ct_tables(40, seed=0)["ct_sentences"]
    good.drop(columns=["brain_stem"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ReportTableError, match=r"\['brain_stem'\].*data.labels"):
        read_sentence_table(tmp_path / "a.csv", SPACE)
    bad = good.astype(str)
    bad.loc[2, "other"] = "2"
    bad.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ReportTableError, match=r"row 3 \(sentence_id=.*column 'other'"):
        read_sentence_table(tmp_path / "b.csv", SPACE)
    good.drop(columns=["sentence_id"]).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ReportTableError, match="sentence_id"):
        read_sentence_table(tmp_path / "c.csv", SPACE)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from lightning_modules.common.encoders import tiny_bert_encoder
    from lightning_modules.crossdl.discretizer.module import DiscretizerModule

    tmp = tmp_path_factory.mktemp("disc")
    texts = generate_ct_tables(100, seed=1)["ct_sentences"]["text"].tolist()
    encoder = tiny_bert_encoder(
        texts,
        vocab_size=500,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
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
    torch.save(ckpt, tmp / "d.ckpt")
    return tmp / "d.ckpt"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_discretize_command_output_round_trips_into_the_schema(tmp_path, tiny_checkpoint, suffix):
    from reportsup.discretize import discretize_file

    reports = generate_ct_tables(120, seed=5)["ct_reports"][["report_id", "patient_id", "scan_id", "text"]]
    reports.loc[len(reports)] = ["R_nofind", "P_x", "S_x", "Report to follow."]
    src = tmp_path / "reports.jsonl"
    reports.to_json(src, orient="records", lines=True)
    out = tmp_path / f"labels{suffix}"
    counts = discretize_file(tiny_checkpoint, src, out, batch_size=32, chunk_size=50, progress=False)
    assert counts["reports"] == len(reports) and counts["no_findings"] >= 1
    table = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert table["report_id"].tolist() == reports["report_id"].tolist()  # input order, every report once
    expected = [
        "report_id",
        "patient_id",
        "scan_id",
        "status",
        "n_sentences",
        *SPACE.matrix_columns(),
        *[f"scan__{t}" for t in TYPES],
        "unclear",
    ]
    assert list(table.columns) == expected
    ok = table[table["status"] == "ok"]
    cells = ok[SPACE.matrix_columns()].to_numpy().reshape(-1, 19, 4)
    assert set(np.unique(cells)) <= {0, 1}
    assert np.array_equal(ok[[f"scan__{t}" for t in TYPES]].to_numpy(), cells.max(axis=1))
    assert table.loc[table["report_id"] == "R_nofind", SPACE.matrix_columns()].isna().all(axis=None)
    with pytest.raises(FileExistsError):
        discretize_file(tiny_checkpoint, src, out, progress=False)


def test_ct_dataset_writer_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        write_ct_dataset(tmp_path, n_reports=20)


def test_discretizer_holdouts_leave_development_and_are_report_level_test_sets(tmp_path):
    from datamodules.crossdl.sentences.datamodule import ReportSentenceDataModule
    from datamodules.synthetic.datasets.ct_reports import write_ct_dataset

    paths = write_ct_dataset(tmp_path / "data", n_reports=300, seed=2)
    reports = pd.read_csv(paths["ct_reports"])
    held_patients = sorted(reports["patient_id"].unique())[:10]
    held = reports[reports["patient_id"].isin(held_patients)]
    held.to_csv(tmp_path / "prospective.csv", index=False)
    dm = ReportSentenceDataModule(
        str(paths["ct_sentences"]),
        str(paths["ct_reports"]),
        holdouts={"prospective": str(tmp_path / "prospective.csv")},
        output_dir=str(tmp_path / "run"),
    )
    dm.setup()
    assert dm.test_set_names == ["sentence", "report", "prospective"]
    assert dm.report_level_sets == ["report", "prospective"]
    for name in ("train", "val", "sentence"):  # sentence annotations of hold-out patients left too
        assert not set(dm.tables[name]["patient_id"]) & set(held_patients), name
    assert not set(dm.gold_table("report")["patient_id"]) & set(held_patients)
    assert sorted(dm.gold_table("prospective")["report_id"]) == sorted(held["report_id"])
    rows = dm.test_table("prospective")
    assert set(rows["report_id"]) <= set(held["report_id"]) and rows["report_index"].max() < len(held)
    summary = dm.summary["holdouts"]["prospective"]
    assert summary["reports"] == len(held) and summary["development_reports_removed"] == len(held)
    assert summary["development_sentences_removed"] > 0
    splits = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert set(splits.loc[splits["split"] == "prospective", "id"]) == set(held["report_id"])
    # Everyone else keeps the split they have without the hold-out.
    ReportSentenceDataModule(
        str(paths["ct_sentences"]), str(paths["ct_reports"]), output_dir=str(tmp_path / "run0")
    ).setup()
    before = pd.read_csv(tmp_path / "run0" / "splits.csv").drop_duplicates("id").set_index("id")["split"]
    kept = splits[splits["split"] != "prospective"].drop_duplicates("id").set_index("id")["split"]
    assert (before[kept.index] == kept).all()
    with pytest.raises(ReportTableError, match=r"data\.holdouts\.report: 'report' names one of the internal"):
        ReportSentenceDataModule(str(paths["ct_sentences"]), holdouts={"report": "x.csv"})
    held.drop(columns=[SPACE.matrix_columns()[0]]).to_csv(tmp_path / "bad.csv", index=False)
    bad = ReportSentenceDataModule(
        str(paths["ct_sentences"]), str(paths["ct_reports"]), holdouts={"p": str(tmp_path / "bad.csv")}
    )
    with pytest.raises(ReportTableError, match=r"bad\.csv"):
        bad.setup()


# --- languages, the guarded flip and the paper's sentence split (issue 19, items 4 and 5) ------------------
def test_english_synthetic_output_is_unchanged_by_the_chinese_mode():
    """sha256 of the English tables of seed 3, written by the writer before it had a Chinese mode."""
    import hashlib

    t = generate_ct_tables(200, seed=3)
    digest = hashlib.sha256(
        (t["ct_reports"].to_csv(index=False) + t["ct_sentences"].to_csv(index=False)).encode()
    )
    assert digest.hexdigest() == "68443f60e57f95998006946da67fddca189180bdf1993f1baa0c158a7a270f55"


def _sides_named(text: str, language: str) -> set[str]:
    import re

    words = {
        "zh": {"left": "左", "right": "右"},
        "en": {"left": r"\b(?:left|Left)\b", "right": r"\b(?:right|Right)\b"},
    }
    cleaned = text.replace("左右", "") if language == "zh" else text
    return {side for side, pattern in words[language].items() if re.search(pattern, cleaned)}


def _lateral_sides(regions: np.ndarray) -> set[str]:
    """Sides with a region label whose mirror is not also labelled (bilateral findings name no side)."""
    flipped = regions[SPACE.flip_permutation()]
    sides = set()
    for j, name in enumerate(SPACE.regions):
        if regions[j] == 1 and flipped[j] != 1 and name.startswith(("left_", "right_")):
            sides.add(name.split("_")[0])
    return sides


def _flip_dataset(texts: list[str], regions: list[np.ndarray], word_map=None):
    from datamodules.common.reports import ReportDataset
    from datamodules.crossdl.sentences.datamodule import FlipAugmentedDataset

    n_types = len(SPACE.types)
    targets = np.stack([np.concatenate([r, np.zeros(n_types)]) for r in regions])
    base = ReportDataset(pd.DataFrame({"text": texts}), targets)
    flip = LeftRightFlip(SPACE, word_map or {"left": "right", "Left": "Right"})
    return base, FlipAugmentedDataset(base, flip, p=1.0, n_regions=len(SPACE.regions))


def test_a_flipped_training_sentence_never_keeps_a_lateral_label_without_a_side_word():
    texts = [
        "A hematoma is seen in the left frontal lobe.",  # names its side: flipped
        "A hematoma is seen in the surgery area.",  # annotated left frontal from context: never flipped
        "Edema in the bilateral frontal lobes.",  # no side word, symmetric labels: flipping changes nothing
        "左侧额叶见血肿。",  # Chinese under an English word map: never flipped
        "The midline structures are centered.",  # no label: flipping changes nothing
    ]
    regions = [
        _regions("left_frontal_lobe"),
        _regions("left_frontal_lobe"),
        _regions("left_frontal_lobe", "right_frontal_lobe"),
        _regions("left_frontal_lobe"),
        _regions(),
    ]
    base, ds = _flip_dataset(texts, regions)
    assert ds.flip_counts() == {"flippable": 3, "skipped": 2}
    for i in range(len(ds)):
        item = ds[i]
        unchanged = item["text"] == texts[i] and torch.equal(item["targets"], base[i]["targets"])
        lateral = _lateral_sides(item["targets"][: len(SPACE.regions)].numpy())
        # Flipped (p = 1): the text names the side of every lateral label; not flipped: as annotated.
        assert unchanged or lateral <= _sides_named(item["text"], "en"), (item["text"], lateral)
        assert unchanged == (i in (1, 2, 3, 4)), i
    flipped = ds[0]
    assert flipped["text"] == "A hematoma is seen in the right frontal lobe."
    assert flipped["targets"][SPACE.regions.index("right_frontal_lobe")] == 1
    # The Chinese map flips 左 and 右 but keeps 左右 ("about"); a sentence naming only 左右 is no side.
    zh = LeftRightFlip(SPACE, {"左": "右", "左右": "左右"})
    assert zh.flip_text("左侧额叶见高密度影，直径约20mm左右。") == "右侧额叶见高密度影，直径约20mm左右。"
    assert not zh.can_flip("直径约20mm左右。", _regions("left_frontal_lobe"))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_synthetic_sentences_split_and_flip_correctly(tmp_path, language):
    """Every report's Findings sentences, cut out and split with the language's preset, are its annotated
    sentences; in the training set (p = 1), every sentence flipped or not names the sides of its lateral
    labels, and with p = 1 every sentence naming a side comes out mirrored."""
    from datamodules.crossdl.sentences.datamodule import ReportSentenceDataModule
    from datamodules.crossdl.sentences.languages import language_preset

    preset = language_preset(language)
    tables = generate_ct_tables(300, seed=4, language=language)
    reports, sentences = tables["ct_reports"], tables["ct_sentences"]
    for rid, group in sentences.groupby("report_id"):
        text = reports.loc[reports["report_id"] == rid, "text"].iloc[0]
        got = findings_sentences(text, language, preset.findings_headers, preset.end_headers)
        assert got == group["text"].tolist(), rid
    if language == "zh":
        assert reports["text"].str.contains("检查所见|影像所见").all() or reports["text"].str.len().min() < 12
        assert sentences["text"].str.contains("左右").any()  # "about", never flipped
    reports.to_csv(tmp_path / "reports.csv", index=False)
    sentences.to_csv(tmp_path / "sentences.csv", index=False)
    dm = ReportSentenceDataModule(
        str(tmp_path / "sentences.csv"),
        str(tmp_path / "reports.csv"),
        language=language,
        flip={"probability": 1.0},
        output_dir=str(tmp_path / "run"),
    )
    dm.setup()
    ds, n_regions = dm.datasets["train"], len(SPACE.regions)
    assert dm.summary["flip"]["skipped"] == 0  # the writer names every side it labels
    mirrored = 0
    for i in range(len(ds)):
        original, item = ds.base[i], ds[i]
        regions = item["targets"][:n_regions].numpy()
        assert _lateral_sides(regions) <= _sides_named(item["text"], language), item["text"]
        if dm.flip.names_a_side(original["text"]):
            assert item["text"] == dm.flip.flip_text(original["text"]) != original["text"]
            assert np.array_equal(regions, dm.flip.flip_regions(original["targets"][:n_regions].numpy()))
            mirrored += 1
    assert mirrored > 30
    assert (tmp_path / "run" / "data_summary.json").exists()


def test_the_language_check_stops_a_run_in_another_language(tmp_path):
    from datamodules.crossdl.sentences.datamodule import ReportSentenceDataModule
    from datamodules.crossdl.sentences.languages import LanguageMismatchError

    for written, configured in (("zh", "en"), ("en", "zh")):
        tables = generate_ct_tables(120, seed=2, language=written)
        tables["ct_sentences"].to_csv(tmp_path / f"s_{written}.csv", index=False)
        tables["ct_reports"].to_csv(tmp_path / f"r_{written}.csv", index=False)
        for reports in (str(tmp_path / f"r_{written}.csv"), None):
            dm = ReportSentenceDataModule(str(tmp_path / f"s_{written}.csv"), reports, language=configured)
            with pytest.raises(
                LanguageMismatchError, match=rf"s_{written}\.csv.*data\.language='{configured}'"
            ):
                dm.setup()
        ReportSentenceDataModule(
            str(tmp_path / f"s_{written}.csv"), language=written
        ).setup()  # the right one
    with pytest.raises(
        LanguageMismatchError, match=r"data\.language='de' has no preset.*data\.findings_headers"
    ):
        ReportSentenceDataModule(str(tmp_path / "s_en.csv"), language="de")
    # Another language with every value given explicitly needs no preset.
    explicit = ReportSentenceDataModule(
        str(tmp_path / "s_en.csv"),
        language="de",
        findings_headers=["befund"],
        end_headers=["beurteilung"],
        flip={"word_map": {"left": "right"}},
    )
    explicit.setup()
    assert explicit.summary["language"] == "de"


def test_the_papers_sentence_split_is_random_and_the_reports_stay_split_by_patient(tmp_path):
    from datamodules.crossdl.sentences.datamodule import ReportSentenceDataModule

    paths = write_ct_dataset(tmp_path / "data", n_reports=600, seed=1)
    fractions = [0.6241, 0.1881, 0.1878]  # the paper's 3,000 / 904 / 903 of 4,807
    dm = ReportSentenceDataModule(
        str(paths["ct_sentences"]),
        str(paths["ct_reports"]),
        split={"unit": "row", "fractions": fractions, "seed": 0},
        max_train_sentences=500,
        output_dir=str(tmp_path / "run"),
    )
    dm.setup()
    n = len(pd.read_csv(paths["ct_sentences"]))
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    assert dm.summary["split_unit"] == "row"
    assert (len(dm.tables["val"]), len(dm.tables["sentence"])) == (n_val, n - n_train - n_val)
    assert len(dm.tables["train"]) == 500
    splits = pd.read_csv(tmp_path / "run" / "splits.csv", dtype=str)
    sentence_rows = splits[splits["id"].str.contains("_s")]
    report_rows = splits[~splits["id"].str.contains("_s")]
    assert (sentence_rows["split"] == "train").sum() == n_train
    # Random sentences: some patient's sentences sit in two splits (the paper's leakage of templates and
    # of patients); the reports scored at report level stay split by patient.
    assert sentence_rows.groupby("patient_id")["split"].nunique().max() > 1
    assert report_rows.groupby("patient_id")["split"].nunique().max() == 1
    # The stricter option: every row of a patient in one split, sentences and reports together.
    strict = ReportSentenceDataModule(
        str(paths["ct_sentences"]),
        str(paths["ct_reports"]),
        split={"unit": "patient", "fractions": fractions, "seed": 0},
        output_dir=str(tmp_path / "strict"),
    )
    strict.setup()
    both = pd.read_csv(tmp_path / "strict" / "splits.csv", dtype=str)
    assert both.groupby("patient_id")["split"].nunique().max() == 1

"""The word2vec baseline, run comparison, attention maps and t-SNE maps (Wood et al. 2021, Table 3,
Fig. 4, Fig. 5) on small hand-made inputs with known answers."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_modules.alarm.word2vec_baseline import Word2VecBaseline
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from reportsup.analysis.interpretability import attention_html, plot_embedding_maps, tsne_map, word_weights
from reportsup.analysis.run_comparison import (
    compare_experiments,
    comparison_markdown,
    delong_across_test_sets,
    load_run,
)

NORMAL = ["no abnormality is seen", "normal appearances of the brain", "no mass and no haemorrhage"]
ABNORMAL = [
    "a large mass in the left frontal lobe",
    "acute haemorrhage in the right parietal lobe",
    "mass effect",
]


def _baseline(tmp_path=None) -> Word2VecBaseline:
    texts = (NORMAL + ABNORMAL) * 5
    y = np.array(([0.0] * 3 + [1.0] * 3) * 5)[:, None]
    model = Word2VecBaseline(["abnormal"], features={"vector_size": 16, "epochs": 5, "ngram_min_df": 1})
    model.fit_baseline(texts, y, unlabelled=["the brain and the ventricles", "a mass"])
    return model


def test_word2vec_baseline_separates_and_survives_its_checkpoint(tmp_path):
    model = _baseline()
    p = model.predict_proba(["no mass is seen", "a mass in the frontal lobe"])[:, 0]
    assert p.shape == (2,) and p[1] > p[0]
    checkpoint = {"hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "best.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        Word2VecBaseline.from_checkpoint(tmp_path / "best.ckpt")  # its fitted models are a pickle
    again = Word2VecBaseline.from_checkpoint(tmp_path / "best.ckpt", trust_checkpoint=True)
    np.testing.assert_allclose(
        again.predict_proba(["a mass in the frontal lobe"]),
        model.predict_proba(["a mass in the frontal lobe"]),
    )
    assert model.features.mean_vectors(["zzz unseen"]).sum() == 0  # no known word: the zero vector


def test_word2vec_baseline_refuses_soft_targets():
    with pytest.raises(ValueError, match="soft targets"):
        Word2VecBaseline(["abnormal"], features={"vector_size": 8, "epochs": 1}).fit_baseline(
            NORMAL + ABNORMAL, np.array([[0.2], [0.0], [1.0], [1.0], [0.0], [1.0]])
        )


def test_subword_attention_is_summed_per_word():
    # "haemorrhage" split into 3 sub-words; [CLS]/[SEP] (word None) are left out.
    spans = [(None, 0, 0), (0, 0, 5), (1, 6, 9), (1, 9, 13), (1, 13, 17), (None, 0, 0)]
    weights = [0.1, 0.2, 0.1, 0.2, 0.3, 0.1]
    words = word_weights(spans, weights)
    assert [(s, e) for s, e, _ in words] == [(0, 5), (6, 17)]
    assert [w for _, _, w in words] == pytest.approx([0.2, 0.6])
    page = attention_html("acute haemorrhage <b>", words)
    assert 'rgba(220, 38, 38, 1.000)" title="0.6000">haemorrhage</span>' in page
    assert "&lt;b&gt;" in page  # report text is escaped


def test_tsne_map_and_figure(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(6, 1, (20, 8))])
    xy = tsne_map(x)
    assert xy.shape == (40, 2)
    y = np.array([0] * 20 + [1] * 20)
    # well separated clusters stay separated: each point's nearest neighbour has its label
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(40) * 1e9
    assert (y[d.argmin(1)] == y).mean() > 0.95
    png = plot_embedding_maps({"a": xy, "b": xy}, y, tmp_path / "map.png", "abnormal")
    assert png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="at least 5"):
        tsne_map(x[:3])


def _fake_run(root, name, seed, probs, ids, y, test_set="report_label", extra=None):
    run = root / f"{name}_{seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"name: {name}\nseed: {seed}\n")
    metrics = {test_set: {"abnormal": {"auroc": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}}}}
    pd.DataFrame({"id": ids, "abnormal_true": y, "abnormal_prob": probs}).to_csv(
        run / f"predictions_{test_set}.csv", index=False
    )
    for other, (oids, oy, op) in (extra or {}).items():
        metrics[other] = {"abnormal": {"auroc": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}}}
        pd.DataFrame({"id": oids, "abnormal_true": oy, "abnormal_prob": op}).to_csv(
            run / f"predictions_{other}.csv", index=False
        )
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_comparison_pairs_runs_by_seed_and_matches_the_paired_delong(tmp_path):
    """Two experiments x 2 seeds on pROC's aSAH markers: each repeat gives pROC's known z and p."""
    asah = pd.read_csv("tests/data/pROC_aSAH.csv")
    ids = [f"R{i}" for i in range(len(asah))]
    y = asah["poor_outcome"]
    runs = {"wfns_model": [], "s100b_model": []}
    for seed in (0, 1):
        # the second experiment's predictions in another row order: pairing is by id, not by row
        runs["wfns_model"].append(load_run(_fake_run(tmp_path, "wfns_model", seed, asah["wfns"], ids, y)))
        rev = slice(None, None, -1)
        runs["s100b_model"].append(
            load_run(_fake_run(tmp_path, "s100b_model", seed, asah["s100b"][rev], ids[rev], y[rev]))
        )
    comparison = compare_experiments(runs)
    tests = comparison["delong"]["s100b_model"]
    assert [t["seed"] for t in tests] == [0, 1]
    assert all(t["paired"] and t["statistic"] == pytest.approx(2.20898359144091) for t in tests)
    md = comparison_markdown(comparison)
    assert "median p 0.0272; 2/2 repeats p < 0.05" in md


def test_test_sets_of_one_run_are_compared_unpaired_when_disjoint(tmp_path):
    asah = pd.read_csv("tests/data/pROC_aSAH.csv")
    ids = [f"R{i}" for i in range(len(asah))]
    other_ids = [f"I{i}" for i in range(len(asah))]
    y = asah["poor_outcome"]
    run = _fake_run(
        tmp_path, "m", 0, asah["wfns"], ids, y, extra={"image_label": (other_ids, y, asah["s100b"])}
    )
    (res,) = delong_across_test_sets(load_run(run))
    assert res["sets"] == ["report_label", "image_label"] and not res["paired"]
    assert res["statistic"] == pytest.approx(1.43490640926908) and res["p_value"] == pytest.approx(
        0.152825378808796
    )


def test_two_settings_of_one_experiment_compare_as_two_groups_and_repeats_pool(tmp_path):
    """reportsup-compare answers "which encoder is best" without a second experiment file: runs of one
    experiment that differ in an override are two groups; their split seeds pool into repeats."""
    from reportsup.cli.compare_runs import compare_dirs

    asah = pd.read_csv("tests/data/pROC_aSAH.csv")
    ids = [f"R{i}" for i in range(len(asah))]
    for encoder, marker in (("biobert", "wfns"), ("minilm", "s100b")):
        for seed in (0, 1):
            run = _fake_run(tmp_path / encoder, "alarm_binary", seed, asah[marker], ids, asah["poor_outcome"])
            overrides = [f"encoder={encoder}", f"seed={seed}", f"paths.output_dir=/tmp/{encoder}{seed}"]
            (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    json_path, _ = compare_dirs([tmp_path / "biobert", tmp_path / "minilm"], tmp_path / "cmp")
    comparison = json.loads(json_path.read_text())
    assert list(comparison["experiments"]) == [
        "alarm_binary [encoder=biobert]",
        "alarm_binary [encoder=minilm]",
    ]
    tests = comparison["delong"]["alarm_binary [encoder=minilm]"]
    assert [t["seed"] for t in tests] == [0, 1]
    assert all(t["statistic"] == pytest.approx(2.20898359144091) for t in tests)  # pROC's paired z
    # the same comparison as a W&B run (offline): its table and figures
    compare_dirs(
        [tmp_path / "biobert", tmp_path / "minilm"], tmp_path / "cmp_wandb", wandb_project="reportsup-test"
    )
    assert "WANDB_SERVICE" not in os.environ  # no leak into the runs this process starts later
    (offline,) = (tmp_path / "cmp_wandb" / "wandb").glob("offline-run-*")
    media = offline / "files" / "media"
    for kind in ("bars", "roc"):
        assert len(list((media / "images" / "comparison" / kind).glob("report_label_abnormal_*.png"))) == 1
    (table,) = (media / "table" / "comparison").glob("metrics_*.table.json")
    logged = json.loads(table.read_text())
    rows = [dict(zip(logged["columns"], r, strict=True)) for r in logged["data"]]
    auroc = {r["experiment"]: r for r in rows if r["metric"] == "auroc"}
    assert auroc["alarm_binary [encoder=minilm]"]["repeats"] == 2 and "ci_low" in logged["columns"]
    bars = tmp_path / "cmp" / "plots" / "bars_report_label_abnormal.png"
    assert (
        bars.stat().st_size > 10_000
        and "bars_report_label_abnormal.png" in (tmp_path / "cmp" / "comparison.md").read_text()
    )
    with pytest.raises(ValueError, match="only one experiment setting"):
        compare_dirs([tmp_path / "biobert"], tmp_path / "cmp2")


def test_attention_page_selects_errors_with_the_metrics_threshold_rule():
    from reportsup.cli.attention_map import select_reports

    reports = pd.DataFrame(
        {"id": ["a", "b", "c", "d"], "y": [0, 1, 0, 1], "prob": [0.7, 0.7, 0.95, 0.69], "text": ["x"] * 4}
    )
    # threshold 0.7: prob == threshold is negative, as in reportsup.analysis.metrics (prob > threshold)
    chosen = select_reports(reports, "errors", threshold=0.7)
    # most confident error first, confidence measured from the threshold (c 0.25, d 0.01, b 0)
    assert chosen["id"].tolist() == ["c", "d", "b"]
    assert chosen["kind"].tolist() == ["false positive", "false negative", "false negative"]


def test_setting_labels_tell_apart_settings_within_an_experiment_only():
    from reportsup.analysis.run_comparison import setting_labels

    runs = [
        ("alarm", {"seed=0", "trainer.max_epochs=2"}),
        ("alarm", {"seed=1", "trainer.max_epochs=2"}),
        ("w2v", {"seed=0", "model.features.vector_size=50"}),
        ("alarm", {"seed=0", "trainer.max_epochs=2", "encoder=minilm", "paths.output_dir=/x"}),
    ]
    assert setting_labels(runs) == ["alarm", "alarm", "w2v", "alarm [encoder=minilm]"]

"""The Fig. S2B chain (discretizer size -> pseudo labels -> analyzer, reportsup/runner/pseudo_label_chain.py):
the labels table (pseudo for training, gold for the test split), the resume logic and the table on fake
runs (fast: train.py and the discretizer replaced by fakes that write what real runs write), and one slow
test that runs the real chain on the demo data for two sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

import reportsup.discretize
from reportsup.cli import pseudo_label_chain as cli
from reportsup.runner import pseudo_label_chain as chain

CELLS = ["left_frontal_lobe__intraparenchymal_hyperdensity", "brain_stem__extraparenchymal_hypodensity"]
T0 = "intraparenchymal_hyperdensity"


def _data(tmp_path: Path) -> tuple[Path, Path]:
    """8 scans of 8 patients, one report each; the gold table (with text) marks every cell 1."""
    manifest = pd.DataFrame(
        {
            "scan_id": [f"S{i}" for i in range(8)],
            "patient_id": [f"P{i}" for i in range(8)],
            "report_id": [f"R{i}" for i in range(8)],
        }
    )
    gold = pd.DataFrame({"report_id": manifest["report_id"], "text": "Findings: fine."})
    for c in CELLS:
        gold[c] = 1
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    gold.to_csv(tmp_path / "reports.csv", index=False)
    return tmp_path / "manifest.csv", tmp_path / "reports.csv"


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """compose_config, train_stage and discretize_file replaced; returns the list of training calls."""
    manifest, gold = _data(tmp_path)
    calls: list[list[str]] = []

    def compose(experiment, overrides):
        labels = next((o.split("=", 1)[1] for o in overrides if o.startswith("data.labels_path=")), str(gold))
        return OmegaConf.create(
            {
                "data": {
                    "manifest_path": str(manifest),
                    "labels_path": labels,
                    "split": {"seed": 0, "fractions": [0.5, 0.25, 0.25], "unit": "patient"},
                }
            }
        )

    def train(overrides, run_dir, what, label):
        calls.append(list(overrides))
        run_dir.mkdir(parents=True)
        size = len(calls)
        if overrides[0].startswith("experiment=crossdl"):
            metrics = {
                "sentence": {"micro": {"f1": {"value": 0.5 + size / 100, "ci_low": 0.4, "ci_high": 0.6}}},
                "report": {f"type:{T0}": {"auroc": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8}}},
            }
        else:
            metrics = {
                "test": {
                    "weighted_macro": {"auroc": {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}},
                    f"scan:{T0}": {"auroc": {"value": 0.75, "ci_low": 0.5, "ci_high": 1.0}},
                }
            }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "best-epoch00.ckpt").write_text("")
        return run_dir / "checkpoints" / "best-epoch00.ckpt"

    def discretize(checkpoint, reports, output, progress=False):
        table = pd.read_csv(reports)[["report_id"]].assign(status="ok", n_sentences=1)
        for c in CELLS:
            table[c] = 0
        table["scan__intraparenchymal_hyperdensity"] = 0
        table.to_csv(output, index=False)
        return {"reports": len(table), "no_findings": 0, "sentences": len(table)}

    monkeypatch.setattr(chain, "compose_config", compose)
    monkeypatch.setattr(chain, "train_stage", train)
    monkeypatch.setattr(reportsup.discretize, "discretize_file", discretize)
    return calls


def test_chain_trains_each_size_once_and_resumes(tmp_path, fakes):
    out = tmp_path / "chain"
    table = chain.run_chain(
        [100], out, analyzer_overrides=["data.labels_path=" + str(tmp_path / "reports.csv")]
    )
    assert len(fakes) == 2
    disc, analyzer = fakes
    assert "data.max_train_sentences=100" in disc and disc[0] == "experiment=crossdl_discretizer"
    # the chain's own labels and split replace the user's data.labels_path (the test scans' gold labels)
    (labels_arg,) = [o.split("=", 1)[1] for o in analyzer if o.startswith("data.labels_path=")]
    assert Path(labels_arg).parent.parent == out / "size_100" / "pseudo_labels"
    assert f"data.split.file={out / 'splits.csv'}" in analyzer

    # pseudo labels (all 0) for train/val, gold (all 1) for the test split's reports
    splits = pd.read_csv(out / "splits.csv")
    assert sorted(splits["split"].value_counts().to_dict().items()) == [("test", 2), ("train", 4), ("val", 2)]
    labels = pd.read_csv(labels_arg)
    test_reports = {f"R{s[1:]}" for s in splits.loc[splits["split"] == "test", "id"]}
    for _, row in labels.iterrows():
        expected = 1 if row["report_id"] in test_reports else 0
        assert [row[c] for c in CELLS] == [expected, expected]
        assert row["status"] == ("gold" if expected else "ok")

    assert table["size"].tolist() == [100]
    assert table.loc[0, "discretizer_sentence_micro_f1"] == pytest.approx(0.51)
    assert table.loc[0, "analyzer_cell_auroc_ci_low"] == 0.7
    assert table.loc[0, f"analyzer_scan_auroc:{T0}"] == 0.75
    assert math.isnan(table.loc[0, "analyzer_scan_auroc:extraparenchymal_hypodensity"])  # not in metrics

    # resumed with one more size: only the new size trains; again: nothing trains
    table = chain.run_chain(
        [100, 30], out, analyzer_overrides=["data.labels_path=" + str(tmp_path / "reports.csv")]
    )
    assert len(fakes) == 4 and "data.max_train_sentences=30" in fakes[2]
    assert table["size"].tolist() == [30, 100]
    chain.run_chain([30, 100], out, analyzer_overrides=["data.labels_path=" + str(tmp_path / "reports.csv")])
    assert len(fakes) == 4
    written = pd.read_csv(out / "pseudo_label_chain.csv")
    assert written["size"].tolist() == [30, 100]
    md = (out / "pseudo_label_chain.md").read_text()
    assert "| 100 | 0.510 (0.400-0.600) |" in md and "analyzer region AUROC, intra hyper" in md

    with pytest.raises(chain.ChainError, match="other settings.*analyzer_overrides"):
        chain.run_chain([100], out, analyzer_overrides=["trainer.max_epochs=2"])


def test_a_size_whose_steps_did_not_all_finish_is_left_out_of_the_table(tmp_path, fakes):
    out = tmp_path / "chain"
    chain.run_chain([100], out)
    (out / "size_100" / "analyzer" / "DONE.json").unlink()  # as if the analyzer had been interrupted
    assert chain.chain_table(out).empty
    assert len(fakes) == 2
    chain.run_chain([100], out)  # resumes: only the analyzer trains again, in a new attempt folder
    assert len(fakes) == 3 and fakes[2][0] == "experiment=damil_multiscale"
    assert len(list((out / "size_100" / "analyzer").glob("attempt-*"))) == 2
    assert chain.chain_table(out)["size"].tolist() == [100]


def test_training_labels_refuse_what_cannot_be_joined(tmp_path):
    manifest = pd.DataFrame({"scan_id": ["a", "b"], "patient_id": ["p", "q"], "report_id": ["r", "r"]})
    splits = pd.DataFrame({"id": ["a", "b"], "split": ["test", "train"]})
    pseudo = pd.DataFrame({"report_id": ["r"], CELLS[0]: [0]})
    gold = pd.DataFrame({"report_id": ["r"], CELLS[0]: ["1"]})
    with pytest.raises(chain.ChainError, match="report r belongs to scans in the test split and in"):
        chain.training_labels(pseudo, gold, manifest, splits)
    manifest["report_id"] = ["r", "s"]
    pseudo = pd.DataFrame({"report_id": ["r", "s"], CELLS[0]: [0, 0]})
    with pytest.raises(chain.ChainError, match="gold.csv: no column"):
        chain.training_labels(pseudo, gold.drop(columns=CELLS[0]), manifest, splits, gold_source="gold.csv")
    with pytest.raises(chain.ChainError, match="no row for the test report"):
        chain.training_labels(pseudo, gold.assign(report_id=["s"]), manifest, splits)
    with pytest.raises(chain.ChainError, match="not 0/1"):
        chain.training_labels(pseudo, gold.assign(**{CELLS[0]: ["yes"]}), manifest, splits)
    out = chain.training_labels(pseudo, gold, manifest, splits).set_index("report_id")
    assert out[CELLS[0]].to_dict() == {"r": 1.0, "s": 0.0}


def test_the_chain_split_is_stratified_by_the_gold_scan_types_and_refuses_scans_without_them(tmp_path):
    """data.split.stratify=true in the chain (issue 22 item 1): every split keeps positives of a rare type."""
    n = 120
    manifest = pd.DataFrame(
        {
            "scan_id": [f"s{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "report_id": [f"r{i}" for i in range(n)],
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    rare = [1 if i % 10 == 0 else 0 for i in range(n)]  # 12 positive patients
    gold = pd.DataFrame({"report_id": manifest["report_id"], "scan__hyper": rare, "scan__hypo": [0] * n})
    split = {"seed": 3, "fractions": [0.8, 0.1, 0.1], "stratify": True}
    path = chain.draw_split(tmp_path / "manifest.csv", split, tmp_path / "splits.csv", gold)
    drawn = pd.read_csv(path).merge(manifest, left_on="id", right_on="scan_id")
    positives = drawn.assign(rare=drawn["report_id"].map(dict(zip(gold["report_id"], rare, strict=True))))
    per_split = positives.groupby("split")["rare"].sum()
    assert (per_split[["train", "val", "test"]] >= 1).all(), per_split.to_dict()
    with pytest.raises(chain.ChainError, match=r"1 scan\(s\) have none \(e.g. \['s5'\]\)"):
        chain.draw_split(tmp_path / "manifest.csv", split, tmp_path / "other.csv", gold.drop(index=5))
    with pytest.raises(chain.ChainError, match="scan__<type> columns joined on report_id"):
        chain.draw_split(tmp_path / "manifest.csv", split, tmp_path / "other.csv", gold[["report_id"]])


def test_cli_needs_reports_with_text(tmp_path, fakes):
    pd.read_csv(tmp_path / "reports.csv").drop(columns="text").to_csv(tmp_path / "gold.csv", index=False)
    with pytest.raises(SystemExit, match="no 'text' column to discretize.*--reports"):
        cli.main(
            [
                "--sizes",
                "10",
                "--out-dir",
                str(tmp_path / "c"),
                "--analyzer",
                f"data.labels_path={tmp_path / 'gold.csv'}",
            ]
        )
    with pytest.raises(SystemExit, match="sizes"):
        cli.main(["--sizes", "0", "--out-dir", str(tmp_path / "d")])


# Both steps as small as they go: the tiny encoder (offline, trained from scratch), one epoch each,
# 300 synthetic reports, 20 phantoms at 32x32x16, 20 bootstrap replicates.
SLOW_BOTH = ["demo=true", "trainer.max_epochs=1", "callbacks.evaluator.n_bootstrap=20"]
SLOW_DISCRETIZER = [
    "demo_overrides.by_language.en.encoder=tiny",
    "~demo_overrides.by_language.en.encoder_options.dropout",
    "demo_overrides.by_language.en.model.optimizer.lr=5e-4",
    "data.demo.n_reports=300",
]
SLOW_ANALYZER = ["data.demo.n_scans=20", "demo_overrides.data.spatial_size=[32,32,16]"]


@pytest.mark.slow
def test_the_real_chain_for_two_sizes(tmp_path, capsys):
    out = tmp_path / "chain"
    argv = [
        "--sizes",
        "40",
        "120",
        "--out-dir",
        str(out),
        "--both",
        *SLOW_BOTH,
        f"paths.data_dir={tmp_path / 'data'}",
        "--discretizer",
        *SLOW_DISCRETIZER,
        "--analyzer",
        *SLOW_ANALYZER,
    ]
    cli.main(argv)
    table = pd.read_csv(out / "pseudo_label_chain.csv")
    assert table["size"].tolist() == [40, 120]
    assert table["discretizer_sentence_micro_f1"].between(0, 1).all()
    assert table["analyzer_cell_auroc"].between(0, 1).all()
    for _, row in table.iterrows():
        summary = json.loads((Path(row["discretizer_run"]) / "data_summary.json").read_text())
        assert summary["max_train_sentences"] == row["size"]
        # every analyzer trained and tested on the chain's split, the test scans with their gold labels
        run_split = pd.read_csv(Path(row["analyzer_run"]) / "splits.csv")
        assert run_split[["id", "split"]].equals(pd.read_csv(out / "splits.csv")[["id", "split"]])
        assert (Path(row["analyzer_run"]) / "predictions_test.csv").is_file()
    assert "| 40 |" in capsys.readouterr().out
    attempts = sorted(out.glob("size_*/*/attempt-*"))
    cli.main(argv)  # resumed: nothing is trained again
    assert sorted(out.glob("size_*/*/attempt-*")) == attempts

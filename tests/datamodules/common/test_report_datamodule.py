"""ReportDataModule: unknown-label policies, evaluation batches, hold-out handling."""

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.common.reports import ReportDataModule
from datamodules.common.tables import ReportTableError
from reportsup.contracts.splits import SplitError


def _table(tmp_path, with_prob=False):
    rows = []
    for i in range(60):
        label = "" if i % 3 == 0 else str(i % 2)
        row = {"report_id": f"r{i}", "patient_id": f"p{i}", "text": "word " * (1 + i % 9), "abnormal": label}
        if with_prob:
            row["abnormal_prob"] = 0.25
        rows.append(row)
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("policy,fill", [("mask", None), ("zeros", 0.0), ("ones", 1.0), ("soft", 0.25)])
def test_unknown_policies(tmp_path, policy, fill):
    dm = ReportDataModule(
        path=str(_table(tmp_path, with_prob=policy == "soft")),
        labels=["abnormal"],
        unknown_policy=policy,
        output_dir=str(tmp_path),
    )
    dm.setup()
    train = dm.datasets["train"]
    raw = train.table["abnormal"].to_numpy()
    targets = train.targets[:, 0].numpy()
    if fill is None:
        assert not np.isnan(raw).any()  # rows with no known label are not in this model's data ...
        assert dm.summary["removed_without_known_label"] == 20  # ... and are counted, not silently dropped
    else:
        unknown = np.isnan(raw)
        assert unknown.any() and np.all(targets[unknown] == fill)
    assert dm.summary["unknown_policy"] == policy


def test_test_sets_keep_unknown_labels_unknown(tmp_path):
    dm = ReportDataModule(
        path=str(_table(tmp_path)), labels=["abnormal"], unknown_policy="zeros", output_dir=str(tmp_path)
    )
    dm.setup()
    test = dm.datasets["report_label"]
    assert np.array_equal(np.isnan(test.targets[:, 0].numpy()), test.table["abnormal"].isna().to_numpy())


def test_evaluation_batches_are_length_sorted_and_dynamically_padded(tmp_path):
    dm = ReportDataModule(
        path=str(_table(tmp_path)), labels=["abnormal"], eval_batch_size=4, output_dir=str(tmp_path)
    )
    dm.setup()

    def tokenize(texts):
        n = max(len(t.split()) for t in texts)
        ids = torch.zeros(len(texts), n, dtype=torch.long)
        mask = torch.tensor([[1] * len(t.split()) + [0] * (n - len(t.split())) for t in texts])
        return {"input_ids": ids, "attention_mask": mask}

    dm.set_tokenizer(tokenize)
    widths = [b["input_ids"].shape[1] for b in dm.val_dataloader()]
    assert widths == sorted(widths, reverse=True)  # longest first, each batch padded to its own longest
    assert len(set(widths)) > 1


def test_unknown_policy_name_and_missing_holdout_columns(tmp_path):
    with pytest.raises(ReportTableError, match="unknown_policy"):
        ReportDataModule(path="x.csv", labels=["a"], unknown_policy="guess")
    holdout = tmp_path / "h.csv"
    pd.DataFrame({"report_id": ["h1"], "patient_id": ["ph"], "text": ["x"], "other": [1]}).to_csv(
        holdout, index=False
    )
    dm = ReportDataModule(
        path=str(_table(tmp_path)),
        labels=["abnormal"],
        holdouts={"image_label": str(holdout)},
        output_dir=str(tmp_path),
    )
    with pytest.raises(ReportTableError, match="hold-out 'image_label' has none of the label columns"):
        dm.setup()


@pytest.mark.parametrize(
    "fill,message", [("", "has no known value"), ("1", "is 1 for every training report")]
)
def test_a_label_that_cannot_be_learnt_is_an_error(tmp_path, fill, message):
    rows = [
        {"report_id": f"r{i}", "patient_id": f"p{i}", "text": "x y", "a": i % 2, "b": fill} for i in range(30)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    dm = ReportDataModule(path=str(tmp_path / "t.csv"), labels=["a", "b"], output_dir=str(tmp_path))
    with pytest.raises(SplitError, match=rf"t\.csv: label 'b' {message}"):
        dm.setup()


def test_a_runs_own_splits_csv_is_a_valid_split_file(synthetic_dir, tmp_path):
    kwargs = dict(
        path=str(synthetic_dir / "reports.csv"),
        labels=["abnormal"],
        holdouts={"image_label": str(synthetic_dir / "image_labels_abnormal.csv")},
    )
    first = ReportDataModule(**kwargs, split={"seed": 4}, output_dir=str(tmp_path / "a"))
    first.setup()
    again = ReportDataModule(
        **kwargs, split={"file": str(tmp_path / "a" / "splits.csv")}, output_dir=str(tmp_path / "b")
    )
    again.setup()
    for name in ("train", "val", "report_label"):
        assert (
            again.datasets[name].table["report_id"].tolist()
            == first.datasets[name].table["report_id"].tolist()
        )

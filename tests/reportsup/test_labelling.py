"""reportsup-label: streaming, resumable, sharded labelling of a report archive with bad rows listed."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from lightning_modules.alarm.module import ALARMClassifier
from reportsup.cli.label import main
from reportsup.labelling import label_archive, token_budget_batches


def _checkpoint(tiny_encoder, path, seed=0):
    torch.manual_seed(seed)
    model = ALARMClassifier(tiny_encoder, ["abnormal", "mass"], optimizer=torch.optim.Adam)
    torch.save({"state_dict": model.state_dict(), "label_manifest": model.label_manifest()}, path)
    return path


@pytest.fixture
def archive(synthetic_dir, tmp_path):
    table = pd.read_csv(synthetic_dir / "reports.csv")[["report_id", "patient_id", "text"]].head(230).copy()
    table.loc[3, "text"] = "   "
    table.loc[40, "report_id"] = table.loc[39, "report_id"]
    table.loc[120, "text"] = "caf\ufffd"
    path = tmp_path / "archive.csv"
    table.to_csv(path, index=False)
    return path, table


def _read(out):
    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))], ignore_index=True)


def test_archive_is_labelled_in_parts_with_errors_listed_and_the_labeller_recorded(
    tiny_encoder, archive, tmp_path
):
    path, table = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "labels"
    # batches of at most 16 reports and 256 padded tokens: the long reports go in smaller batches
    counts = label_archive(ckpt, path, out, chunk_size=50, batch_size=16, progress=False, batch_tokens=256)
    assert counts["reports"] == 227 and counts["errors"] == 3
    errors = pd.read_csv(out / "errors.csv")
    assert errors["row"].tolist() == [5, 42, 122]  # file rows (header = 1)
    assert errors["reason"].tolist() == [
        "empty text",
        "report_id repeated",
        "text contains U+FFFD (decoded from a wrong encoding)",
    ]
    labelled = _read(out)
    assert len(labelled) == 227 and set(labelled.columns) >= {
        "report_id",
        "abnormal_prob",
        "abnormal",
        "mass_prob",
        "mass",
    }
    assert len(list(out.glob("part-*.parquet"))) == 5  # one part per chunk of 50
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["label_manifest"]["labels"] == ["abnormal", "mass"]
        and len(manifest["checkpoint_sha256"]) == 64
    )
    meta = pq.read_schema(next(out.glob("part-*.parquet"))).metadata
    assert meta[b"reportsup_checkpoint_sha256"].decode() == manifest["checkpoint_sha256"]
    # the fast path equals the naive one: table order, every report padded to the encoder's maximum
    # length, batch 16, fp32 (every report, every label, within 1e-4)
    model = ALARMClassifier.from_checkpoint(ckpt).eval()
    first = table.drop_duplicates("report_id")  # the repeated id's second row is an error, not labelled
    texts = first.set_index("report_id").loc[labelled["report_id"], "text"].tolist()
    naive = []
    with torch.no_grad():
        for start in range(0, len(texts), 16):
            enc = model.encoder.tokenizer(
                [model.encoder.preprocess(t) for t in texts[start : start + 16]],
                padding="max_length",
                truncation=True,
                max_length=model.encoder.max_length,
                return_tensors="pt",
            )
            naive.append(torch.sigmoid(model(enc["input_ids"], enc["attention_mask"])))
    naive = torch.cat(naive).numpy()
    fast = labelled[["abnormal_prob", "mass_prob"]].to_numpy()
    assert naive.shape == fast.shape == (227, 2)
    assert abs(fast - naive).max() < 1e-4


def test_rerun_resumes_and_another_checkpoint_is_refused(tiny_encoder, archive, tmp_path):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "labels"
    label_archive(ckpt, path, out, chunk_size=50, progress=False)
    first = _read(out)
    (out / "part-000002.parquet").unlink()  # as if the job died before this part was committed
    (out / "part-000003.parquet.tmp123").write_bytes(b"half-written")
    counts = label_archive(ckpt, path, out, chunk_size=50, progress=False)
    assert (
        counts["reports"] == 49 and counts["skipped_done"] == 178 and counts["errors"] == 3
    )  # row 122 is in part 2
    pd.testing.assert_frame_equal(_read(out), first)
    other = _checkpoint(tiny_encoder, tmp_path / "b.ckpt", seed=1)
    with pytest.raises(FileExistsError, match="another checkpoint"):
        label_archive(other, path, out, chunk_size=50, progress=False)
    # parts are chunks: another chunk size (or a changed archive) would skip or repeat report ids
    with pytest.raises(FileExistsError, match="in chunks of 50; this run reads .* in chunks of 40"):
        label_archive(ckpt, path, out, chunk_size=40, progress=False)


def test_a_killed_labelling_process_resumes_and_every_id_is_labelled_once(
    tiny_encoder, synthetic_dir, tmp_path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    table = pd.read_csv(synthetic_dir / "reports.csv")[["report_id", "text"]]
    big = pd.concat([table.assign(report_id=table["report_id"] + f"_{k}") for k in range(6)])  # 4,800 rows
    path = tmp_path / "archive.parquet"
    big.to_parquet(path)
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "labels"
    cmd = [sys.executable, "-m", "reportsup.cli.label", str(ckpt), str(path), str(out), "--chunk-size", "200"]
    proc = subprocess.Popen([*cmd, "--no-progress"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no clean-up: a half-written part may be left behind
    proc.wait()
    done_before = len(list(out.glob("part-*.parquet")))
    assert 2 <= done_before < 24, "the process was not killed mid-archive"
    rerun = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, check=True)
    assert f"{200 * done_before} already done" in rerun.stderr
    labelled = _read(out)
    assert sorted(labelled["report_id"]) == sorted(big["report_id"])  # every id, exactly once
    reference = tmp_path / "uninterrupted"
    label_archive(ckpt, path, reference, chunk_size=200, progress=False)
    pd.testing.assert_frame_equal(labelled, _read(reference))


def test_bytes_that_are_not_utf8_list_their_row_and_the_rest_is_labelled(tiny_encoder, tmp_path):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    path = tmp_path / "mixed.csv"  # one cp1252 byte (0xE0, "a grave") in a UTF-8 archive
    path.write_bytes(b"report_id,text\nA,normal study\nB,lesione \xe0 destra\nC,small vessel disease\n")
    counts = label_archive(ckpt, path, tmp_path / "utf8", progress=False)
    errors = pd.read_csv(tmp_path / "utf8" / "errors.csv")
    assert counts["reports"] == 2 and errors.to_dict("records") == [
        {"row": 3, "report_id": "B", "reason": "text is not valid UTF-8"}
    ]
    assert _read(tmp_path / "utf8")["report_id"].tolist() == ["A", "C"]
    # told the archive's encoding, every row is read and labelled
    counts = label_archive(ckpt, path, tmp_path / "cp1252", progress=False, encoding="cp1252")
    assert counts["reports"] == 3 and counts["errors"] == 0
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(
        b'{"report_id": "A", "text": "ok"}\n{"report_id": "B", "text": "lesione \xe0 destra"}\n'
    )
    counts = label_archive(ckpt, jsonl, tmp_path / "jsonl", progress=False)
    assert counts["reports"] == 1 and pd.read_csv(tmp_path / "jsonl" / "errors.csv")[
        "report_id"
    ].tolist() == ["B"]


def test_shards_cover_the_archive_once(tiny_encoder, archive, tmp_path):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    label_archive(ckpt, path, single, chunk_size=50, progress=False)
    for shard in (0, 1):
        label_archive(ckpt, path, sharded, chunk_size=50, shard=shard, shards=2, progress=False)
    pd.testing.assert_frame_equal(_read(sharded), _read(single))
    assert pd.read_csv(sharded / "errors.csv").equals(pd.read_csv(single / "errors.csv"))


def test_int8_quantisation_reports_its_agreement_and_bad_input_is_named(
    tiny_encoder, archive, tmp_path, capsys
):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    counts = label_archive(
        ckpt, path, tmp_path / "q", chunk_size=100, quantize="int8", check_agreement=50, progress=False
    )
    agreement = counts["fp32_agreement"]
    assert agreement["mode"] == "int8" and agreement["n"] == 50 and 0.0 <= agreement["label_agreement"] <= 1.0
    assert "fp32_agreement" in json.loads((tmp_path / "q" / "manifest.json").read_text())
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["a"], "text": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(SystemExit, match="missing column"):
        main([str(ckpt), str(bad), str(tmp_path / "o"), "--no-progress"])


def test_bf16_autocast_on_cpu_stays_close_to_fp32_and_records_its_agreement(tiny_encoder, archive, tmp_path):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    fp32 = label_archive(ckpt, path, tmp_path / "fp32", chunk_size=100, device="cpu", progress=False)
    assert "fp32_agreement" not in fp32  # fp32 is the reference: nothing to compare
    counts = label_archive(
        ckpt, path, tmp_path / "bf16", chunk_size=100, precision="bf16", device="cpu", progress=False
    )
    agreement = counts["fp32_agreement"]
    assert agreement["mode"] == "bf16" and agreement["n"] == 98  # first chunk minus its 2 bad rows
    a, b = _read(tmp_path / "fp32"), _read(tmp_path / "bf16")
    assert a["report_id"].tolist() == b["report_id"].tolist()
    gap = (a["abnormal_prob"] - b["abnormal_prob"]).abs().max()
    assert 0 < gap < 0.02  # bf16 really ran (not bit-identical) and stays close to fp32
    assert json.loads((tmp_path / "bf16" / "manifest.json").read_text())["precision"] == "bf16"


def test_one_process_per_gpu_takes_the_gpu_of_its_local_rank(monkeypatch):
    from reportsup import labelling as bulk_label

    monkeypatch.setattr(bulk_label.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bulk_label.torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert [bulk_label.default_device(s) for s in (0, 1, 5)] == ["cuda:0", "cuda:1", "cuda:1"]
    monkeypatch.setenv("SLURM_LOCALID", "3")  # srun: 4 tasks on a 4-GPU node, task 3
    assert bulk_label.default_device(7) == "cuda:3"
    monkeypatch.setattr(bulk_label.torch.cuda, "is_available", lambda: False)
    assert bulk_label.default_device(3) == "cpu"


@pytest.mark.slow  # inductor compiles the tiny BERT (~30 s on 2 cores)
def test_compiled_bf16_path_labels_like_fp32_and_reports_its_compile_time(tiny_encoder, archive, tmp_path):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    label_archive(ckpt, path, tmp_path / "fp32", chunk_size=100, device="cpu", progress=False)
    counts = label_archive(
        ckpt,
        path,
        tmp_path / "compiled",
        chunk_size=100,
        precision="bf16",
        compile=True,
        device="cpu",
        progress=False,
    )
    assert counts["compile_seconds"] > 0 and counts["fp32_agreement"]["mode"] == "bf16"
    a, b = _read(tmp_path / "fp32"), _read(tmp_path / "compiled")
    assert a["report_id"].tolist() == b["report_id"].tolist()
    assert (a["abnormal_prob"] - b["abnormal_prob"]).abs().max() < 0.02
    assert json.loads((tmp_path / "compiled" / "manifest.json").read_text())["compile"] is True
    with pytest.raises(ValueError, match="do not combine"):
        label_archive(ckpt, path, tmp_path / "x", quantize="int8", compile=True, device="cpu", progress=False)


def test_token_budget_batches_cap_reports_and_padded_tokens():
    lengths = [512, 512, 300, 200, 100, 100, 50, 50, 50, 10]  # sorted longest first, as reportsup-label sorts
    batches = token_budget_batches(lengths, max_reports=4, max_tokens=1024)
    sizes = [b.stop - b.start for b in batches]
    assert sizes == [2, 3, 4, 1]  # 2 x 512; 3 x 300; 4 x 100 (the report cap); the last report
    assert all((b.stop - b.start) * lengths[b.start] <= 1024 for b in batches)
    assert [i for b in batches for i in range(b.start, b.stop)] == list(range(len(lengths)))
    assert [b.stop - b.start for b in token_budget_batches([900, 5], 4, 512)] == [1, 1]  # one report > budget
    assert [b.stop - b.start for b in token_budget_batches(lengths, 4, None)] == [4, 4, 2]  # no token limit

"""reportsup-label: streaming, resumable, sharded labelling of a report archive with bad rows listed."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from lightning_modules.alarm.module import ALARMClassifier
from reportsup.cli.label import main
from reportsup.contracts.label_folder import (
    LabelFolderError,
    completed_parts,
    part_path,
    read_label_folder,
)
from reportsup.labelling import ClassifierLabeller, label_archive, token_budget_batches


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """reportsup-label's default --backend auto caches its calibration: here, never in the user's ~/.cache."""
    monkeypatch.setenv("REPORTSUP_CACHE_DIR", str(tmp_path / "engine_cache"))


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
    return read_label_folder(out)[0]


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
    assert len(completed_parts(out)) == 5  # one part per chunk of 50
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["label_manifest"]["labels"] == ["abnormal", "mass"]
        and len(manifest["checkpoint_sha256"]) == 64
    )
    meta = pq.read_schema(completed_parts(out)[0]).metadata
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
    part_path(out, 2).unlink()  # as if the job died before this part was committed
    (out / "parts" / ".part-000003.parquet.tmp123").write_bytes(b"half-written")
    counts = label_archive(ckpt, path, out, chunk_size=50, progress=False)
    assert (
        counts["reports"] == 49 and counts["skipped_done"] == 178 and counts["errors"] == 3
    )  # row 122 is in part 2
    pd.testing.assert_frame_equal(_read(out), first)
    other = _checkpoint(tiny_encoder, tmp_path / "b.ckpt", seed=1)
    with pytest.raises(
        FileExistsError,
        match=r'checkpoint_sha256: "[0-9a-f]{64}" in the folder, .*a\.ckpt; this run.s: .*b\.ckpt\)',
    ):
        label_archive(other, path, out, chunk_size=50, progress=False)
    # parts are chunks: another chunk size (or a changed archive) would skip or repeat report ids
    with pytest.raises(FileExistsError, match="chunk_size: 50 in the folder, 40 now"):
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
    cmd += ["--backend", "torch"]  # compared below with label_archive's torch labels
    proc = subprocess.Popen([*cmd, "--no-progress"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while len(completed_parts(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no clean-up: a half-written part may be left behind
    proc.wait()
    done_before = len(completed_parts(out))
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


# --- issue 21, item 6: the labeller tells the truth about what it did ---------------------------------


def test_int8_runs_the_quantised_model_and_records_the_agreement_of_its_own_outputs(
    tiny_encoder, archive, tmp_path
):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    model = ALARMClassifier.from_checkpoint(ckpt).eval()
    labeller = ClassifierLabeller(model, quantize="int8")
    quantised = torch.ao.nn.quantized.dynamic.Linear
    # the function that labels is the quantised copy, and the caller's model stays fp32
    assert any(isinstance(m, quantised) for m in labeller.forward.modules())
    assert not any(isinstance(m, quantised) for m in model.modules())
    label_archive(ckpt, path, tmp_path / "fp32", chunk_size=100, progress=False)
    counts = label_archive(
        ckpt, path, tmp_path / "int8", chunk_size=100, quantize="int8", check_agreement=50, progress=False
    )
    a, b = _read(tmp_path / "fp32"), _read(tmp_path / "int8")
    assert a["report_id"].tolist() == b["report_id"].tolist()
    probs = ["abnormal_prob", "mass_prob"]
    gap = (a[probs] - b[probs]).abs().to_numpy()
    assert gap.max() > 1e-4  # int8 really ran: not the fp32 numbers
    recorded = json.loads((tmp_path / "int8" / "manifest.json").read_text())["fp32_agreement"]
    assert recorded == counts["fp32_agreement"] and recorded["mode"] == "int8" and recorded["n"] == 50
    # the recorded agreement is that of the written int8 labels: on the first 50 reports, the largest gap
    # and the share of reports whose labels all agree are the parts' own
    first = slice(0, 50)
    assert recorded["max_abs_probability_difference"] == pytest.approx(gap[first].max(), abs=1e-6)
    assert 0 < recorded["max_abs_probability_difference"] < 0.2
    same = (
        a.iloc[first][["abnormal", "mass"]].to_numpy() == b.iloc[first][["abnormal", "mass"]].to_numpy()
    ).all(1)  # iloc: the first 50 rows (.loc[0:50] is 51 rows, which failed when the 51st disagreed)
    assert recorded["label_agreement"] == pytest.approx(same.mean())
    with pytest.raises(ValueError, match="int8 layers run on fp32 activations"):
        ClassifierLabeller(model, quantize="int8", precision="bf16")


def _settings_runs(ckpt, other, path, out):
    """A run per output-changing setting, each different from the first run's, and the difference named."""
    return [
        (dict(quantize="int8"), r'quantize: null in the folder, "int8" now'),
        (dict(precision="bf16"), r'precision: "32" in the folder, "bf16" now'),
        (dict(max_length=16), r"max_length: \d+ in the folder, 16 now"),
        (dict(columns_map={"mass": "mass_x"}), r'columns_map: \{\} in the folder, \{"mass": "mass_x"\} now'),
        (dict(encoding="cp1252"), r'encoding: "utf-8" in the folder, "cp1252" now'),
        (dict(checkpoint=other), r"checkpoint_sha256: \"[0-9a-f]{64}\" in the folder, \"[0-9a-f]{64}\" now"),
    ]


def test_a_rerun_with_other_settings_is_refused_and_the_manifest_still_describes_the_parts(
    tiny_encoder, archive, tmp_path
):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    other = _checkpoint(tiny_encoder, tmp_path / "b.ckpt", seed=1)
    out = tmp_path / "labels"
    label_archive(ckpt, path, out, chunk_size=50, progress=False)
    part_path(out, 3).unlink()  # a part left to label: a refused rerun must not write it
    manifest = (out / "manifest.json").read_bytes()
    parts = {p.name: p.read_bytes() for p in completed_parts(out)}
    for change, named in _settings_runs(ckpt, other, path, out):
        kwargs = {"chunk_size": 50, "progress": False, **change}
        with pytest.raises(LabelFolderError, match=named) as refused:
            label_archive(kwargs.pop("checkpoint", ckpt), path, out, **kwargs)
        assert "rerun with them to resume, or label into a new output folder" in str(refused.value)
        assert (out / "manifest.json").read_bytes() == manifest
        assert {p.name: p.read_bytes() for p in completed_parts(out)} == parts
    # two differences at once: both named
    with pytest.raises(LabelFolderError, match="precision.*max_length"):
        label_archive(ckpt, path, out, chunk_size=50, precision="bf16", max_length=16, progress=False)
    # the CLI says it in one line, without a traceback
    with pytest.raises(SystemExit, match=r'^reportsup-label: .*quantize: null in the folder, "int8" now'):
        main([str(ckpt), str(path), str(out), "--chunk-size", "50", "--quantize", "int8", "--no-progress"])
    # the same settings resume; batch size and shard count do not change labels and are not checked
    counts = label_archive(ckpt, path, out, chunk_size=50, batch_size=7, progress=False)
    assert counts["reports"] == 50 and (out / "manifest.json").read_bytes() == manifest
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["reports"] for r in runs] == [227, 50] and runs[1]["batch_size"] == 7


def test_a_run_that_fails_before_its_first_part_leaves_no_manifest_and_the_fixed_rerun_works(
    tiny_encoder, archive, tmp_path, monkeypatch
):
    path, table = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "labels"
    # an archive without a text column: refused before the model is loaded
    bad = tmp_path / "bad.csv"
    table.rename(columns={"text": "report"}).to_csv(bad, index=False)
    with pytest.raises(SystemExit, match=r"bad.csv: missing column\(s\) \['text'\]"):
        main([str(ckpt), str(bad), str(out), "--no-progress"])
    assert not (out / "manifest.json").exists() and not completed_parts(out)
    # a labelling failure inside the first chunk (here: bf16 on a machine that cannot run it)
    from reportsup import labelling

    def broken(self, chunk):
        raise RuntimeError("no bf16 kernel")

    with monkeypatch.context() as m:
        m.setattr(labelling.ClassifierLabeller, "label_chunk", broken)
        with pytest.raises(RuntimeError, match="no bf16 kernel"):
            label_archive(ckpt, path, out, chunk_size=50, precision="bf16", check_agreement=0, progress=False)
    assert not (out / "manifest.json").exists() and not completed_parts(out)
    # the rerun with other settings (fp32 this time) labels the folder and records its own settings
    counts = label_archive(ckpt, path, out, chunk_size=50, progress=False)
    assert counts["reports"] == 227
    assert json.loads((out / "manifest.json").read_text())["precision"] == "32"


def test_manifests_without_parts_are_replaced_and_parts_without_a_manifest_refused(
    tiny_encoder, archive, tmp_path
):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    # what the earlier version left after failing before its first part: a manifest, no part
    out = tmp_path / "failed_before"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"checkpoint_sha256": "0" * 64, "precision": "bf16"}))
    assert label_archive(ckpt, path, out, chunk_size=50, progress=False)["reports"] == 227
    assert json.loads((out / "manifest.json").read_text())["precision"] == "32"
    (out / "manifest.json").unlink()
    with pytest.raises(LabelFolderError, match=r"5 part\(s\) in parts/ but no manifest.json"):
        label_archive(ckpt, path, out, chunk_size=50, progress=False)


# --- issue 21, item 7: the labeller's output is a dataset ----------------------------------------------


def test_the_folder_is_a_parquet_dataset_with_one_schema_that_pandas_and_arrow_read(
    tiny_encoder, synthetic_dir, tmp_path
):
    import pyarrow.dataset as ds

    table = pd.read_csv(synthetic_dir / "reports.csv")[["report_id", "patient_id", "text"]].head(120).copy()
    table.loc[40:79, "text"] = ""  # the second chunk: no report to label, an empty part
    table.loc[:39, "patient_id"] = None  # the first chunk: no patient ids (an all-empty column)
    path = tmp_path / "archive.parquet"
    table.to_parquet(path)
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "labels"
    label_archive(ckpt, path, out, chunk_size=40, progress=False)
    (out / "parts" / ".part-000009.parquet.tmp999").write_bytes(b"a half-written part of another run")
    labels, manifest = read_label_folder(out)
    assert (
        len(labels) == 80 and labels["report_id"].tolist() == table["report_id"].drop(range(40, 80)).tolist()
    )
    schemas = [pq.read_schema(p) for p in completed_parts(out)]
    assert len(schemas) == 3 and all(s.equals(schemas[0]) for s in schemas)  # the empty part too
    assert manifest["columns"] == schemas[0].names and manifest["layout"] == 2
    # the folder's parts/ is what pandas and Arrow read directly, in input order, temporary parts skipped
    pd.testing.assert_frame_equal(pd.read_parquet(out / "parts"), labels)
    assert ds.dataset(out / "parts").to_table().num_rows == 80
    assert sorted(p.name for p in out.iterdir()) == [
        "errors",
        "errors.csv",
        "manifest.json",
        "parts",
        "runs.jsonl",
    ]
    assert pd.read_csv(out / "errors.csv")["row"].tolist() == list(range(42, 82))


def test_a_folder_of_the_earlier_layout_is_refused_with_the_way_out(tiny_encoder, archive, tmp_path):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "old"
    label_archive(ckpt, path, out, chunk_size=50, progress=False)
    for part in completed_parts(out):  # as the earlier version wrote them: beside manifest.json
        part.rename(out / part.name)
    for call in (
        lambda: label_archive(ckpt, path, out, chunk_size=50, progress=False),
        lambda: read_label_folder(out),
    ):
        with pytest.raises(
            LabelFolderError, match=r"earlier layout \(5 part-\*.parquet beside manifest.json"
        ) as e:
            call()
        assert f"mv {out}/part-*.parquet {out / 'parts'}/" in str(e.value)


def test_output_columns_are_renamed_and_unknown_names_are_refused(tiny_encoder, archive, tmp_path):
    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    columns_map = tmp_path / "map.json"
    columns_map.write_text(json.dumps({"abnormal_prob": "alarm_abnormal_prob"}))
    out = tmp_path / "renamed"
    main(
        [
            str(ckpt),
            str(path),
            str(out),
            "--rename",
            "abnormal=alarm_abnormal",
            "--columns-map",
            str(columns_map),
            "--no-progress",
        ]
    )
    labels, manifest = read_label_folder(out)
    assert list(labels.columns) == [
        "report_id",
        "patient_id",
        "alarm_abnormal_prob",
        "alarm_abnormal",
        "mass_prob",
        "mass",
    ]
    assert manifest["columns_map"] == {"abnormal_prob": "alarm_abnormal_prob", "abnormal": "alarm_abnormal"}
    cases = [
        (
            ["--rename", "abnormal_x=y"],
            r"no output column \['abnormal_x'\]; this labeller writes \['report_id', 'patient_id', 'abnormal_prob'",
        ),
        (["--rename", "abnormal=mass"], r"column map: \['mass'\] would name two output columns"),
        (["--rename", "abnormal"], r"--rename 'abnormal': write --rename OLD=NEW"),
        (["--columns-map", str(path)], rf"--columns-map {path}: not JSON"),
        (["--columns-map", str(tmp_path / "none.json")], r"none.json: file not found"),
    ]
    (tmp_path / "list.json").write_text('["abnormal"]')
    cases.append(
        (["--columns-map", str(tmp_path / "list.json")], r'expected one JSON object of names, \{"old_name"')
    )
    for options, message in cases:
        with pytest.raises(SystemExit, match=r"^reportsup-label: .*" + message):
            main([str(ckpt), str(path), str(tmp_path / "refused"), "--no-progress", *options])
        assert not (tmp_path / "refused" / "manifest.json").exists()


def test_gzip_compressed_archives_are_labelled_end_to_end(tiny_encoder, archive, tmp_path):
    """Issue 21, item 7: ``.csv.gz`` and ``.jsonl.gz`` archives (read by datamodules.common.tables) through
    the command, with the same labels and the same error rows as the plain CSV."""
    import gzip

    path, table = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    csv_gz, jsonl_gz = tmp_path / "archive.csv.gz", tmp_path / "archive.jsonl.gz"
    csv_gz.write_bytes(gzip.compress(path.read_bytes()))
    jsonl_gz.write_bytes(gzip.compress(table.to_json(orient="records", lines=True).encode()))
    label_archive(ckpt, path, tmp_path / "plain", chunk_size=50, progress=False)
    plain = _read(tmp_path / "plain")
    for source in (csv_gz, jsonl_gz):
        out = tmp_path / source.name.replace(".", "_")
        main([str(ckpt), str(source), str(out), "--chunk-size", "50", "--backend", "torch", "--no-progress"])
        labels, manifest = read_label_folder(out)
        pd.testing.assert_frame_equal(labels, plain, check_dtype=False, atol=1e-6)
        assert manifest["input"] == str(source.resolve())
        assert pd.read_csv(out / "errors.csv")["row"].tolist() == [5, 42, 122]


def test_shards_started_together_create_one_manifest_and_cover_the_archive(tiny_encoder, archive, tmp_path):
    """Two shards labelling the same folder at once (threads here; a job array in use): the manifest is
    created once, by whichever commits a part first, and the other shard's settings are checked against it."""
    from concurrent.futures import ThreadPoolExecutor

    path, _ = archive
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    label_archive(ckpt, path, tmp_path / "single", chunk_size=25, progress=False)
    out = tmp_path / "together"
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(label_archive, ckpt, path, out, chunk_size=25, shard=s, shards=2, progress=False)
            for s in (0, 1)
        ]
        counts = [r.result() for r in runs]
    assert sum(c["reports"] for c in counts) == 227
    pd.testing.assert_frame_equal(_read(out), _read(tmp_path / "single"))
    assert sorted(p.name for p in out.iterdir()) == [
        "errors",
        "errors.csv",
        "manifest.json",
        "parts",
        "runs.jsonl",
    ]
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2

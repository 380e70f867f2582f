"""reportsup-label --backend (issue 23): ONNX Runtime as an engine of the labeller (same columns, same
resumable folder, its agreement with fp32 recorded), the cached export, and --backend auto's cached choice."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_modules.alarm.module import ALARMClassifier
from reportsup.cli.label import main
from reportsup.contracts import label_folder
from reportsup.contracts.label_folder import part_path, read_label_folder
from reportsup.engines import auto, onnx_export
from reportsup.engines.auto import Candidate, choose, cpu_candidates
from reportsup.engines.onnx_export import ExportError, cached_onnx_model
from reportsup.labelling import ClassifierLabeller, label_archive
from tests.reportsup.test_labelling import _checkpoint  # one ALARM checkpoint for both files


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """Every test gets its own cache (exports, calibrations), never the user's ~/.cache."""
    folder = tmp_path / "engine_cache"
    monkeypatch.setenv("REPORTSUP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def archive(synthetic_dir, tmp_path):
    table = pd.read_csv(synthetic_dir / "reports.csv")[["report_id", "text"]].head(150)
    path = tmp_path / "archive.csv"
    table.to_csv(path, index=False)
    return path


def _probs(out):
    labelled = read_label_folder(out)[0]
    return labelled.set_index("report_id")[["abnormal_prob", "mass_prob"]]


def test_onnxruntime_gives_torch_fp32_probabilities_and_records_itself(tiny_encoder, archive, tmp_path):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    label_archive(ckpt, archive, tmp_path / "torch", chunk_size=50, progress=False)
    counts = label_archive(
        ckpt, archive, tmp_path / "ort", chunk_size=50, progress=False, backend="onnxruntime"
    )
    torch_probs, ort_probs = _probs(tmp_path / "torch"), _probs(tmp_path / "ort")
    assert list(ort_probs.index) == list(torch_probs.index)  # same reports, same order, same columns
    assert np.abs(ort_probs.to_numpy() - torch_probs.to_numpy()).max() < 1e-4
    assert list(read_label_folder(tmp_path / "ort")[0].columns) == list(
        read_label_folder(tmp_path / "torch")[0].columns
    )
    manifest = json.loads((tmp_path / "ort" / "manifest.json").read_text())
    assert manifest["backend"] == "onnxruntime" and manifest["quantize"] is None
    # another engine than torch fp32: its agreement with torch fp32 is recorded, as --precision's is
    agreement = manifest["fp32_agreement"]
    assert agreement["backend"] == "onnxruntime" and agreement["mode"] == "32"
    assert agreement["label_agreement"] == 1.0 and agreement["max_abs_probability_difference"] < 1e-4
    # the optimizer fused the encoder (attention, layer norms, GELU)
    fused = manifest["engine"]["fused_operators"]
    assert fused.get("Attention") == 1 and fused.get("SkipLayerNormalization") and fused.get("BiasGelu")
    assert counts["backend"] == "onnxruntime" and counts["setup_seconds"] > 0
    assert json.loads((tmp_path / "torch" / "manifest.json").read_text())["backend"] == "torch"


def test_a_rerun_with_another_backend_is_refused_and_the_same_one_resumes(tiny_encoder, archive, tmp_path):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    out = tmp_path / "labels"
    label_archive(ckpt, archive, out, chunk_size=50, progress=False, backend="onnxruntime")
    first = _probs(out)
    with pytest.raises(FileExistsError, match='backend: "onnxruntime" in the folder, "torch" now'):
        label_archive(ckpt, archive, out, chunk_size=50, progress=False, backend="torch")
    with pytest.raises(FileExistsError, match='quantize: null in the folder, "int8" now'):
        label_archive(
            ckpt, archive, out, chunk_size=50, progress=False, backend="onnxruntime", quantize="int8"
        )
    part_path(out, 1).unlink()  # as if the job died before this part
    counts = label_archive(ckpt, archive, out, chunk_size=50, progress=False, backend="onnxruntime")
    assert counts["reports"] == 50 and counts["skipped_done"] == 100
    pd.testing.assert_frame_equal(_probs(out), first)
    # --backend auto resumes a folder with the engine its manifest records, without calibrating
    part_path(out, 2).unlink()
    counts = label_archive(ckpt, archive, out, chunk_size=50, progress=False, backend="auto")
    assert counts["backend"] == "onnxruntime" and "resuming" in counts["backend_choice"]["reason"]


def test_manifests_from_before_the_backend_setting_still_resume():
    recorded = {key: None for key in label_folder.OUTPUT_SETTINGS if key != "backend"}
    assert label_folder.settings_differences(recorded, {**recorded, "backend": "torch"}) == []
    assert label_folder.settings_differences(recorded, {**recorded, "backend": "onnxruntime"}) == [
        'backend: "torch" in the folder, "onnxruntime" now'
    ]


def test_the_export_is_cached_by_checkpoint_and_settings(tiny_encoder, tmp_path, engine_cache):
    model = ALARMClassifier(tiny_encoder, ["abnormal", "mass"], optimizer=torch.optim.Adam).eval()
    first = cached_onnx_model(model, "a" * 64)
    again = cached_onnx_model(model, "a" * 64)
    assert not first.reused and again.reused and again.path == first.path and again.seconds == 0.0
    assert first.path.is_relative_to(engine_cache / "onnx")
    stamp = first.path.stat().st_mtime_ns
    other = cached_onnx_model(model, "b" * 64)  # another checkpoint: another export
    assert not other.reused and other.path.parent != first.path.parent
    int8 = cached_onnx_model(model, "a" * 64, quantize="int8")  # made from the cached fp32 export
    assert not int8.reused and int8.record["quantized_nodes"] >= 1 and int8.path.parent != first.path.parent
    assert first.path.stat().st_mtime_ns == stamp
    assert len(list((engine_cache / "onnx").iterdir())) == 3


def test_labelling_twice_exports_once_and_a_new_checkpoint_exports_again(tiny_encoder, archive, tmp_path):
    a = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    label_archive(a, archive, tmp_path / "one", chunk_size=50, progress=False, backend="onnxruntime")
    label_archive(a, archive, tmp_path / "two", chunk_size=50, progress=False, backend="onnxruntime")
    engines = [json.loads((tmp_path / o / "manifest.json").read_text())["engine"] for o in ("one", "two")]
    assert not engines[0]["export_reused"] and engines[1]["export_reused"]
    assert engines[0]["onnx_model"] == engines[1]["onnx_model"]
    b = _checkpoint(tiny_encoder, tmp_path / "b.ckpt", seed=1)
    label_archive(b, archive, tmp_path / "three", chunk_size=50, progress=False, backend="onnxruntime")
    third = json.loads((tmp_path / "three" / "manifest.json").read_text())["engine"]
    assert not third["export_reused"] and third["onnx_model"] != engines[0]["onnx_model"]


def test_onnxruntime_int8_records_its_fp32_agreement(tiny_encoder, archive, tmp_path):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    counts = label_archive(
        ckpt,
        archive,
        tmp_path / "q",
        chunk_size=50,
        progress=False,
        backend="onnxruntime",
        quantize="int8",
        check_agreement=40,
    )
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["backend"] == "onnxruntime" and manifest["quantize"] == "int8"
    agreement = manifest["fp32_agreement"]
    assert agreement["mode"] == "int8" and agreement["n"] == 40
    assert 0.0 < agreement["max_abs_probability_difference"] < 0.2  # int8 did run, and close to fp32
    assert counts["fp32_agreement"] == agreement


def test_auto_calibrates_once_and_reuses_its_cached_choice(
    tiny_encoder, archive, tmp_path, engine_cache, capsys
):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    cmd = [str(ckpt), str(archive), "--chunk-size", "50", "--calibration-reports", "30", "--no-progress"]
    main([cmd[0], cmd[1], str(tmp_path / "one"), *cmd[2:]])
    assert "--backend auto:" in capsys.readouterr().err
    first = json.loads((tmp_path / "one" / "manifest.json").read_text())
    choice = first["backend_choice"]
    assert choice["requested"] == "auto" and choice["cached"] is False
    names = [m["name"] for m in choice["measurements"]]
    assert names[:3] == ["torch fp32", "onnxruntime fp32", "ctranslate2 fp32"] and "ctranslate2 int8" in names
    assert all(m["reports"] == 30 for m in choice["measurements"])
    assert choice["measurements"][0]["label_agreement"] == 1.0  # the reference
    # the manifest records the engine chosen, not "auto": a rerun must match it
    assert first["backend"] == choice["chosen"]["backend"] and first["backend"] != "auto"
    assert first["quantize"] == choice["chosen"]["quantize"]
    assert [p.suffix for p in (engine_cache / "auto").iterdir()] == [".json"]
    main([cmd[0], cmd[1], str(tmp_path / "two"), *cmd[2:]])
    second = json.loads((tmp_path / "two" / "manifest.json").read_text())["backend_choice"]
    assert second["cached"] is True and second["chosen"] == choice["chosen"]
    assert second["measurements"] == choice["measurements"]
    # --recalibrate measures again
    main([cmd[0], cmd[1], str(tmp_path / "three"), *cmd[2:], "--recalibrate"])
    assert json.loads((tmp_path / "three" / "manifest.json").read_text())["backend_choice"]["cached"] is False


def test_auto_keeps_torch_for_its_own_options_and_int8_chooses_among_int8(tiny_encoder, archive, tmp_path):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    counts = label_archive(
        ckpt, archive, tmp_path / "bf16", chunk_size=50, progress=False, backend="auto", precision="bf16"
    )
    assert counts["backend"] == "torch" and "--precision bf16" in counts["backend_choice"]["reason"]
    label_archive(
        ckpt,
        archive,
        tmp_path / "q",
        chunk_size=50,
        progress=False,
        backend="auto",
        quantize="int8",
        calibration_reports=20,
    )
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["quantize"] == "int8"
    assert {m["name"] for m in manifest["backend_choice"]["measurements"]} == {
        "torch int8",
        "onnxruntime int8",
        "ctranslate2 int8",
    }


def _m(name, rps, agreement=1.0):
    exact = "int8" not in name and "bf16" not in name
    return {"name": name, "exact": exact, "reports_per_second": rps, "label_agreement": agreement}


def test_choose_takes_reduced_precision_only_when_clearly_faster_and_in_agreement():
    fp32 = [_m("torch fp32", 10.0), _m("onnxruntime fp32", 11.0)]
    assert choose([*fp32, _m("onnxruntime int8", 20.0, 1.0)])[0] == "onnxruntime int8"
    name, reason = choose([*fp32, _m("onnxruntime int8", 20.0, 0.99)])
    assert name == "onnxruntime fp32" and "agrees on 99.0% < 99.5%" in reason
    name, reason = choose([*fp32, _m("torch int8", 11.5, 1.0)])  # 1.05x: not worth the exactness
    assert name == "onnxruntime fp32" and "1.05x" in reason
    assert choose([_m("torch int8", 5.0), _m("onnxruntime int8", 6.0)])[0] == "onnxruntime int8"


def test_the_candidates_follow_the_cpu_features():
    def names(flags, quantize=None, ort=True, exact_only=False):
        return [c.name for c in cpu_candidates({"flags": flags}, quantize, ort, exact_only)]

    zen4 = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]  # no AMX
    assert names(zen4) == ["torch fp32", "onnxruntime fp32", "torch bf16", "onnxruntime int8", "torch int8"]
    assert "torch bf16 compile" in names([*zen4, "amx_tile", "amx_bf16", "amx_int8"])
    assert names(["avx2"]) == ["torch fp32", "onnxruntime fp32", "onnxruntime int8", "torch int8"]
    assert names(["avx2"], ort=False) == ["torch fp32", "torch int8"]
    assert names(zen4, quantize="int8") == ["torch int8", "onnxruntime int8"]
    assert names(zen4, exact_only=True) == ["torch fp32", "onnxruntime fp32"]
    every = [c.name for c in cpu_candidates({"flags": zen4}, None, True, ctranslate2=True)]
    assert every == [
        "torch fp32",
        "onnxruntime fp32",
        "ctranslate2 fp32",
        "torch bf16",
        "onnxruntime int8",
        "ctranslate2 int8",
        "torch int8",
    ]
    assert Candidate("torch", "bf16", compile=True).name == "torch bf16 compile"
    signature = auto.cpu_signature()
    assert (
        signature["model"]
        and signature["threads"] >= 1
        and set(signature["flags"]) <= set(auto.RELEVANT_FLAGS)
    )


def test_missing_onnxruntime_is_named_with_the_install_command(tiny_encoder, archive, tmp_path, monkeypatch):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(
        SystemExit, match=r"needs onnxruntime: pip install onnxruntime==1\.32\.0.*--backend torch"
    ):
        main([str(ckpt), str(archive), str(tmp_path / "o"), "--backend", "onnxruntime", "--no-progress"])
    # auto without onnxruntime (nor ctranslate2): the torch paths only, and it says why
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    counts = label_archive(
        ckpt, archive, tmp_path / "auto", progress=False, backend="auto", calibration_reports=20
    )
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    note = manifest["backend_choice"]["note"]
    assert counts["backend"] == "torch" and note == "onnxruntime and ctranslate2 not installed: not tried"
    assert {m["backend"] for m in manifest["backend_choice"]["measurements"]} == {"torch"}


def test_a_model_that_cannot_export_is_refused_naming_the_torch_backend(tiny_encoder, tmp_path, monkeypatch):
    model = ALARMClassifier(tiny_encoder, ["abnormal"], optimizer=torch.optim.Adam).eval()

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    with pytest.raises(
        ExportError, match="could not be exported to ONNX .*operator foo.*Use --backend torch"
    ):
        ClassifierLabeller(model, backend="onnxruntime", checkpoint_sha256="c" * 64)
    with pytest.raises(ExportError, match="BERT encoder.*Use --backend torch"):
        onnx_export.check_exportable(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="--compile are torch's: use --backend torch"):
        ClassifierLabeller(model, precision="bf16", backend="onnxruntime")


def test_auto_falls_back_to_fp32_when_the_run_disagrees_and_remembers_it(
    tiny_encoder, archive, tmp_path, engine_cache, monkeypatch
):
    """The calibration checks a few dozen reports; the run's own check (its first --check-agreement reports
    against fp32) overrules a reduced-precision choice that misses the floor."""
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    monkeypatch.setattr(auto, "choose", lambda measurements: ("torch int8", "forced by the test"))
    monkeypatch.setattr(auto, "AGREEMENT_FLOOR", 1.01)  # no run can reach it: the fallback must happen
    counts = label_archive(
        ckpt, archive, tmp_path / "o", chunk_size=50, progress=False, backend="auto", calibration_reports=20
    )
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    choice = manifest["backend_choice"]
    assert choice["fallback"]["from"] == "torch int8" and choice["fallback"]["agreement"]["mode"] == "int8"
    fastest_fp32 = max(
        (m for m in choice["measurements"] if m["exact"]), key=lambda m: m["reports_per_second"]
    )
    assert manifest["backend"] == fastest_fp32["backend"] and manifest["quantize"] is None
    assert manifest["fp32_agreement"]["backend"] == fastest_fp32["backend"]
    assert counts["backend"] == fastest_fp32["backend"]
    # every part was labelled by the fallback: the torch fp32 labels (ONNX Runtime fp32 within 1e-4)
    label_archive(ckpt, archive, tmp_path / "fp32", chunk_size=50, progress=False)
    assert np.abs(_probs(tmp_path / "o").to_numpy() - _probs(tmp_path / "fp32").to_numpy()).max() < 1e-4
    cached = json.loads(next((engine_cache / "auto").iterdir()).read_text())
    assert cached["name"] == fastest_fp32["name"] and cached["overruled"]["name"] == "torch int8"


def test_ctranslate2_gives_torch_fp32_probabilities_converts_once_and_int8_records_agreement(
    tiny_encoder, archive, tmp_path, engine_cache
):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    label_archive(ckpt, archive, tmp_path / "torch", chunk_size=50, progress=False)
    label_archive(ckpt, archive, tmp_path / "ct2", chunk_size=50, progress=False, backend="ctranslate2")
    assert np.abs(_probs(tmp_path / "ct2").to_numpy() - _probs(tmp_path / "torch").to_numpy()).max() < 1e-4
    first = json.loads((tmp_path / "ct2" / "manifest.json").read_text())
    assert first["backend"] == "ctranslate2" and first["fp32_agreement"]["label_agreement"] == 1.0
    assert not first["engine"]["export_reused"]
    label_archive(
        ckpt, archive, tmp_path / "q", chunk_size=50, progress=False, backend="ctranslate2", quantize="int8"
    )
    second = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert second["engine"]["export_reused"] and second["engine"]["compute_type"] == "int8"
    assert second["fp32_agreement"]["mode"] == "int8"
    assert 0.0 < second["fp32_agreement"]["max_abs_probability_difference"] < 0.2  # int8 did run
    assert len(list((engine_cache / "ctranslate2").iterdir())) == 1  # one conversion serves both
    with pytest.raises(FileExistsError, match='backend: "ctranslate2" in the folder, "onnxruntime" now'):
        label_archive(ckpt, archive, tmp_path / "ct2", chunk_size=50, progress=False, backend="onnxruntime")


def test_missing_ctranslate2_is_named_with_the_install_command(tiny_encoder, archive, tmp_path, monkeypatch):
    ckpt = _checkpoint(tiny_encoder, tmp_path / "a.ckpt")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(
        SystemExit, match=r"needs ctranslate2: pip install ctranslate2==4\.8\.5.*--backend torch"
    ):
        main([str(ckpt), str(archive), str(tmp_path / "o"), "--backend", "ctranslate2", "--no-progress"])

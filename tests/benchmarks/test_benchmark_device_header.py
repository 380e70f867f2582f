"""``benchmarks/_device.py``: what every benchmark prints about where it ran (issue 23 item 5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def device_module():
    # loaded by path: benchmarks/ is a folder of scripts, not a package (and a `benchmarks` package
    # from another distribution may be installed)
    spec = importlib.util.spec_from_file_location("_device", ROOT / "benchmarks" / "_device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_header_names_device_dtype_cpu_and_amx(device_module, monkeypatch):
    info = {"model": "Some CPU", "flags": ["avx512f", "avx512_bf16", "amx_tile"], "usable_cpus": 4}
    monkeypatch.setattr(device_module, "cpu_info", lambda: info)
    text = device_module.header("cpu", "fp32", "data path only")
    assert text.splitlines()[0] == "device: cpu, dtype: fp32 (data path only)"
    assert "CPU: Some CPU, 4 usable cores" in text and "AMX: yes, avx512_bf16: yes" in text
    assert "GPU" not in text
    monkeypatch.setattr(device_module, "cpu_info", lambda: {**info, "flags": ["avx2"]})
    assert "AMX: no, avx512_bf16: no" in device_module.header("cpu", "bf16")


def test_cpu_peak_memory_is_the_process_peak(device_module):
    assert device_module.pick_device("cpu") == "cpu"
    device_module.reset_peak("cpu")  # a no-op on the CPU
    assert device_module.peak_gib("cpu") > 0
    assert device_module.peak_memory("cpu").startswith("peak resident memory (process): ")


def test_gpu_lines_need_a_gpu(device_module):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert device_module.gpu_line("cpu") is None
        assert device_module.pick_device("auto") == "cpu"
        return
    text = device_module.header("cuda", "bf16 autocast")
    assert "GPU: " in text and "CUDA" in text
    assert device_module.peak_memory("cuda").startswith("peak GPU memory")

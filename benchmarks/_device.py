"""What every benchmark in ``benchmarks/`` prints about where it ran (issue 23 item 5), in one place.

* :func:`header`: the device and dtype a measurement uses, the CPU's name, whether it has AMX tiles
  (oneDNN's bf16 / int8 matrix units: without them bf16 autocast is often *slower* than fp32 on a CPU)
  and AVX-512 bf16, the threads; on a GPU its name, CUDA and cuDNN versions.
* :func:`peak_memory`: the peak GPU memory allocated by PyTorch (``torch.cuda.max_memory_allocated``,
  reset with :func:`reset_peak`) on a GPU, the process's peak resident memory on the CPU.
* :func:`pick_device`: ``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``.

The CPU model and flags come from :func:`reportsup.runner.provenance.cpu_info`, the same reader a
training run's ``provenance.json`` uses. A leading underscore: not a benchmark itself; the scripts
import it as ``from _device import header`` (Python puts the script's folder on ``sys.path``).
"""

from __future__ import annotations

import resource

from reportsup.runner.provenance import cpu_info


def pick_device(requested: str = "auto") -> str:
    """``auto``: ``cuda`` when a GPU is visible, else ``cpu``; anything else is returned as given."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_line() -> str:
    """``CPU: <model>, <n> threads, AMX: yes|no, avx512_bf16: yes|no``."""
    import torch

    info = cpu_info()
    flags = info["flags"]
    if flags is None:
        features = "AMX: unknown (no /proc/cpuinfo)"
    else:
        has = lambda flag: "yes" if flag in flags else "no"  # noqa: E731
        features = f"AMX: {has('amx_tile')}, avx512_bf16: {has('avx512_bf16')}"
    return (
        f"CPU: {info['model'] or 'unknown'}, {info['usable_cpus']} usable cores, "
        f"{torch.get_num_threads()} torch threads, {features}"
    )


def gpu_line(device: str) -> str | None:
    """``GPU: <name>, CUDA <v>, cuDNN <v>`` for a CUDA device, else ``None``."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index or 0
    return (
        f"GPU: {torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}"
    )


def header(device: str, dtype: str, what: str = "") -> str:
    """The lines a benchmark prints first; ``dtype`` as the script runs it (``fp32``, ``bf16 autocast``,
    ``int16 DICOM -> float32``, ...). ``what``: one line saying what runs there when not everything
    does (e.g. a data-loading benchmark runs no model on the GPU)."""
    lines = [f"device: {device}, dtype: {dtype}" + (f" ({what})" if what else ""), cpu_line()]
    gpu = gpu_line(device)
    if gpu:
        lines.append(gpu)
    return "\n".join(lines)


def reset_peak(device: str) -> None:
    """Start a new peak-memory window on a GPU (no-op on the CPU: the process peak cannot be reset)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: str) -> float:
    """Peak GPU memory allocated by PyTorch since :func:`reset_peak` (GiB) on a GPU; on the CPU the
    process's peak resident memory (GiB, Linux ``ru_maxrss`` in KiB, includes PyTorch itself)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_memory(device: str) -> str:
    """``peak GPU memory: <x> GiB`` on a GPU, ``peak resident memory (process): <x> GiB`` on the CPU."""
    if str(device).startswith("cuda"):
        return f"peak GPU memory (torch.cuda.max_memory_allocated): {peak_gib(device):.2f} GiB"
    return f"peak resident memory (process): {peak_gib(device):.2f} GiB"

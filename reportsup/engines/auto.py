"""``reportsup-label --backend auto`` on a CPU: the candidates this CPU offers, a calibration run that
times them on the archive's own reports and checks their labels against torch fp32, and the choice,
cached per CPU, checkpoint and settings (issue 23, item 2).

Machines differ: on a CPU with AMX, bf16 ``--compile`` was the fastest path (BENCHMARKS.md, issue 8); on a
2-core AMD EPYC without AMX, bf16 autocast was slower than fp32 and dynamic int8 about twice as fast. So
the choice is measured, not read from one machine's table:

* the candidates follow the CPU's features (:func:`cpu_candidates`): torch, ONNX Runtime and CTranslate2
  fp32 always (the engines that are installed); torch bf16 autocast where the CPU has AVX512-BF16 or AMX;
  torch bf16 ``--compile`` where it has AMX (elsewhere its ~30 s compilation is not worth trying); int8
  (ONNX Runtime, CTranslate2 and torch dynamic) always;
* each runs the same calibration reports (default 200, spread over the first chunk) after a warm-up batch;
* :func:`choose` takes the fastest fp32 path, unless a reduced-precision path (bf16, int8) is at least
  :data:`MIN_GAIN` times as fast **and** its labels equal torch fp32's on at least :data:`AGREEMENT_FLOOR`
  of the calibration reports. Exactness is not given away for noise, nor speed for a model whose margins
  int8 moves: with 200 reports, one disagreeing report is allowed.

The result is cached in ``<cache>/auto/<key>.json`` (:mod:`reportsup.engines.cache`); the key is the CPU
model and flags, the thread count, the checkpoint's SHA-256, the candidates, batch settings, maximum
length and library versions. The archive is not in the key: a cached choice made on long reports is
reused for short ones (``--recalibrate`` measures again).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reportsup.engines.cache import cache_root, settings_key

#: a reduced-precision path must give torch fp32's labels on this share of the calibration reports
AGREEMENT_FLOOR = 0.995
#: ... and be this many times as fast as the fastest fp32 path
MIN_GAIN = 1.10
CALIBRATION_FORMAT = 1
CALIBRATION_REPORTS = 64
#: CPU flags that decide which paths are worth trying (Linux /proc/cpuinfo names)
RELEVANT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


def cpu_signature() -> dict[str, Any]:
    """The CPU's model name, its relevant flags, torch's CPU capability and the thread count."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the model name only (and torch's view of the vector units)
        pass
    model = model or platform.processor() or platform.machine()
    return {
        "model": model,
        "flags": sorted(f for f in RELEVANT_FLAGS if f in flags),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


@dataclass(frozen=True)
class Candidate:
    """One way of running the classifier: engine, float precision, int8, torch.compile."""

    backend: str  # "torch" | "onnxruntime"
    precision: str = "32"
    quantize: str | None = None
    compile: bool = False

    @property
    def name(self) -> str:
        mode = self.quantize or ("fp32" if self.precision == "32" else self.precision)
        return f"{self.backend} {mode}" + (" compile" if self.compile else "")

    @property
    def exact(self) -> bool:
        """fp32 arithmetic: its labels are torch fp32's up to float rounding."""
        return self.precision == "32" and self.quantize is None


def cpu_candidates(
    signature: Mapping[str, Any],
    quantize: str | None,
    onnxruntime: bool,
    exact_only: bool = False,
    ctranslate2: bool = False,
) -> list[Candidate]:
    """The paths worth calibrating on this CPU (torch fp32 first: the reference). ``quantize="int8"``: the
    int8 paths only; ``exact_only`` (``--precision 32``): the fp32 paths only. ``onnxruntime`` /
    ``ctranslate2``: whether those engines are installed (and the model converts)."""
    flags = set(signature["flags"])
    engines = [e for e, ok in (("onnxruntime", onnxruntime), ("ctranslate2", ctranslate2)) if ok]
    if quantize == "int8":
        return [Candidate("torch", quantize="int8")] + [Candidate(e, quantize="int8") for e in engines]
    out = [Candidate("torch")] + [Candidate(e) for e in engines]
    if exact_only:
        return out
    if flags & {"avx512_bf16", "amx_bf16"}:
        out.append(Candidate("torch", "bf16"))
    if "amx_bf16" in flags:
        out.append(Candidate("torch", "bf16", compile=True))
    out += [Candidate(e, quantize="int8") for e in engines]
    out.append(Candidate("torch", quantize="int8"))
    return out


def choose(
    measurements: Sequence[Mapping[str, Any]], floor: float = AGREEMENT_FLOOR, min_gain: float = MIN_GAIN
) -> tuple[str, str]:
    """``(name, reason)`` of the chosen path among calibrated ones (each: ``name``, ``exact``,
    ``reports_per_second``, ``label_agreement``). Without an exact candidate (``--quantize int8``): the fastest."""
    fastest = max(measurements, key=lambda m: m["reports_per_second"])
    exact = [m for m in measurements if m["exact"]]
    if not exact:
        return fastest["name"], "the fastest of the int8 paths"
    best = max(exact, key=lambda m: m["reports_per_second"])
    fast = [
        m
        for m in measurements
        if not m["exact"]
        and m["label_agreement"] >= floor
        and m["reports_per_second"] >= min_gain * best["reports_per_second"]
    ]
    if fast:
        pick = max(fast, key=lambda m: m["reports_per_second"])
        return pick["name"], (
            f"{pick['reports_per_second'] / best['reports_per_second']:.2f}x the fastest fp32 path "
            f"({best['name']}) with labels = torch fp32 on {pick['label_agreement']:.1%} of the calibration reports"
        )
    why = []
    for m in measurements:
        if m["exact"]:
            continue
        if m["label_agreement"] < floor:
            why.append(f"{m['name']} agrees on {m['label_agreement']:.1%} < {floor:.1%}")
        else:
            why.append(
                f"{m['name']} is {m['reports_per_second'] / best['reports_per_second']:.2f}x (< {min_gain:.2f}x)"
            )
    return best["name"], "the fastest fp32 path" + (f" ({'; '.join(why)})" if why else "")


class Labeller(Protocol):
    labels: list[str]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray: ...


def calibrate(
    candidates: Sequence[Candidate],
    build: Callable[[Candidate], Labeller],
    texts: Sequence[str],
    thresholds: np.ndarray,
) -> list[dict[str, Any]]:
    """Each candidate on ``texts`` (after a warm-up batch): reports/s, its one-off setup seconds, and its
    labels against the first candidate's (torch fp32, or torch int8 when int8 was asked for: then a torch
    fp32 reference is run too, for the agreement only)."""
    reference: np.ndarray | None = None
    if candidates[0] != Candidate("torch"):
        reference = build(Candidate("torch")).probabilities(texts)
    out = []
    for candidate in candidates:
        start = time.perf_counter()
        labeller = build(candidate)
        setup = time.perf_counter() - start
        labeller.probabilities(texts[:4])  # warm-up: allocator, kernel selection
        start = time.perf_counter()
        probs = labeller.probabilities(texts)
        seconds = time.perf_counter() - start
        if reference is None:
            reference = probs
        same = ((reference > thresholds) == (probs > thresholds)).all(axis=1)
        out.append(
            {
                **asdict(candidate),
                "name": candidate.name,
                "exact": candidate.exact,
                "reports": len(texts),
                "seconds": seconds,
                "reports_per_second": len(texts) / max(seconds, 1e-9),
                "setup_seconds": setup,
                "label_agreement": float(same.mean()),
                "max_abs_probability_difference": float(np.abs(reference - probs).max()),
            }
        )
        del labeller
    return out


def calibration_texts(texts: Sequence[str], n: int = CALIBRATION_REPORTS) -> list[str]:
    """Up to ``n`` reports spread evenly over ``texts`` (the first chunk: its length mix, not its head)."""
    if len(texts) <= n:
        return list(texts)
    return [texts[i] for i in np.linspace(0, len(texts) - 1, n).round().astype(int)]


def auto_choice(
    candidates: Sequence[Candidate],
    build: Callable[[Candidate], Labeller],
    texts: Sequence[str],
    thresholds: np.ndarray,
    key_settings: Mapping[str, Any],
    cache_dir: str | Path | None = None,
    recalibrate: bool = False,
) -> dict[str, Any]:
    """The chosen candidate and the calibration behind it, from the cache when this CPU, checkpoint and
    settings were calibrated before (``key_settings``: checkpoint hash, batch settings, max length...)."""
    signature = cpu_signature()
    key_material = {
        "format": CALIBRATION_FORMAT,
        "cpu": signature,
        "candidates": [c.name for c in candidates],
        "floor": AGREEMENT_FLOOR,
        "min_gain": MIN_GAIN,
        "torch": torch.__version__,
        **key_settings,
    }
    path = cache_root(cache_dir) / "auto" / f"{settings_key(key_material)}.json"
    if path.exists() and not recalibrate:
        record = json.loads(path.read_text())
        return {**record, "cached": True, "cache_file": str(path)}
    start = time.perf_counter()
    measurements = calibrate(candidates, build, texts, thresholds)
    name, reason = choose(measurements)
    chosen = next(m for m in measurements if m["name"] == name)
    record = {
        "chosen": {k: chosen[k] for k in ("backend", "precision", "quantize", "compile")},
        "name": name,
        "reason": reason,
        "measurements": measurements,
        "calibration_seconds": time.perf_counter() - start,
        "calibrated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "key": key_material,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)
    return {**record, "cached": False, "cache_file": str(path)}


def record_fallback(choice: dict[str, Any], fallback: Candidate) -> None:
    """A run's own check overruled the cached choice (its labels disagreed with fp32 on more than the floor
    allows): the cache now holds the fp32 path, so later runs do not try the reduced one first again."""
    path = Path(choice.get("cache_file", ""))
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    record["overruled"] = {"name": record["name"], "by": choice.get("fallback")}
    record["chosen"] = asdict(fallback)
    record["name"] = fallback.name
    record["reason"] = (
        f"{fallback.name}: the fastest fp32 path ({record['overruled']['name']} disagreed with fp32 in a run)"
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)

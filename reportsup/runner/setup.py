"""Hydra glue used by ``train.py``: config registration, resolvers, run directories and demo mode.

* ``experiments/*.yaml`` and ``sweeps/*.yaml`` live at the top level (DESIGN.md) and are registered
  in Hydra's ConfigStore as the groups ``experiment`` and ``sweep`` (package ``_global_``).
* Resolvers: ``run_dir`` (``outputs/<experiment>/<date>_<time>[_<slurm job>_<task>]``, or the run
  directory of ``ckpt_path`` when resuming), ``hydra_subdir`` (a resumed run keeps the original
  ``.hydra/``), ``slurm_suffix``, ``auto_precision`` (bf16-mixed where the GPU supports it) and
  ``language_preset`` (``${language_preset:zh,findings_headers}``: a value of the Cross-DL sentence
  pipeline's language presets, :mod:`datamodules.crossdl.sentences.languages`).
* ``demo=true``: synthetic reports written (seeded) under ``paths.data_dir``, the offline ``tiny``
  encoder and the CPU-sized settings of ``demo_overrides``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reportsup.contracts.run_dir import (
    CONFIG_DIR,
    CONFIG_DIR_RESUMED_PREFIX,
    HPC_CHECKPOINT_GLOB,
    last_checkpoint,
    run_dir_of_checkpoint,
)


def find_project_root(strict: bool = True) -> Path:
    """The folder holding ``train.py``, ``configs/``, ``experiments/`` and ``sweeps/``.

    ``$REPORTSUP_ROOT`` when set; else the clone this package was installed from (editable install);
    else the working directory when it holds ``configs/`` (a clone next to a regular install)."""
    candidates = [os.environ.get("REPORTSUP_ROOT"), Path(__file__).resolve().parents[2], Path.cwd()]
    for c in candidates:
        if c and (Path(c) / "configs" / "train.yaml").is_file():
            return Path(c).resolve()
    if not strict:
        return Path(__file__).resolve().parents[2]
    raise FileNotFoundError(
        "reportsup cannot find its configs (configs/train.yaml): run from a clone of the repository, or "
        "set REPORTSUP_ROOT to the clone's folder."
    )


# not strict at import: the library and its API work without a clone; train.py's runner checks
PROJECT_ROOT = find_project_root(strict=False)


def slurm_suffix() -> str:
    """``_<job id>_<array task id>`` inside a SLURM job, so two jobs never share a run directory."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return ""
    return f"_{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"


def run_dir(output_root: str, name: str, ckpt_path: str | None = None) -> str:
    if ckpt_path:
        ckpt = Path(ckpt_path)
        if not ckpt.is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path!r} does not exist.")
        # <run dir>/checkpoints/last.ckpt: resume inside the run that wrote it.
        return str(run_dir_of_checkpoint(ckpt))
    return str(Path(output_root) / name / (time.strftime("%Y-%m-%d_%H-%M-%S") + slurm_suffix()))


_MULTIRUN_DIR: dict[str, str] = {}
MULTIRUN_DIR_ENV = "REPORTSUP_MULTIRUN_DIR"


def multirun_dir(output_root: str, name: str) -> str:
    """The sweep directory of a multirun, fixed by its first resolution in this process.

    The launcher resolves it from the primary config before any job; jobs re-resolve it with their
    own config, where ``name`` may differ (``-m experiment=glob(alarm_*)``). Keeping the first value
    puts every job of one multirun under one folder, where the summary finds them.
    """
    if "dir" not in _MULTIRUN_DIR:
        # SLURM jobs of a multirun (hydra-submitit) re-compose the config in their own processes; the
        # environment, which sbatch passes on, carries the folder the launching process chose.
        _MULTIRUN_DIR["dir"] = os.environ.get(MULTIRUN_DIR_ENV) or str(
            Path(output_root) / name / ("multirun_" + time.strftime("%Y-%m-%d_%H-%M-%S") + slurm_suffix())
        )
        os.environ[MULTIRUN_DIR_ENV] = _MULTIRUN_DIR["dir"]
    return _MULTIRUN_DIR["dir"]


def requeued_checkpoint(run_dir: str | Path) -> Path | None:
    """``<run>/checkpoints/last.ckpt`` when this SLURM job was requeued (preemption, time-out,
    ``scontrol requeue``) and has one: the restarted job resumes there instead of from epoch 0."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return None
    if list(Path(run_dir).glob(HPC_CHECKPOINT_GLOB)):
        return None  # Lightning saved one on the warning signal and restores it itself (newer than last.ckpt)
    return last_checkpoint(run_dir)


def hydra_subdir(ckpt_path: str | None = None) -> str:
    return f"{CONFIG_DIR_RESUMED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}" if ckpt_path else CONFIG_DIR


def auto_precision(cpu: str = "32") -> str:
    """``bf16-mixed`` on GPUs that support it, else ``32-true``. ``${auto_precision:cpu_bf16}`` (the
    DaMIL demo's 3D U-Net) also picks bf16-mixed on CPUs with native bf16 for oneDNN's convolutions:
    AMX tiles (2.6x faster demo steps on a Sapphire-Rapids-class Xeon) or AVX-512 BF16 (2.0x for the
    demo's step, 64x64x32 x 2 scans, and 1.8x for the bare U-Net at 160x160x80 on 2 AMD EPYC Zen 4 cores,
    2026-12-03, benchmarks/damil_overhead.py). On CPUs with neither, bf16 is emulated and slower.
    The report models stay fp32 (``${auto_precision:}``): BERT under bf16 autocast measured 0.64x fp32
    on that EPYC (``reportsup-label`` chooses its own path)."""
    import torch

    if cpu not in ("32", "cpu_bf16"):
        raise ValueError(
            f"auto_precision: {cpu!r}; use ${{auto_precision:}} or ${{auto_precision:cpu_bf16}}."
        )
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if cpu == "cpu_bf16" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
        return "bf16-mixed"
    return "32-true"


def demo_run_mode(mode: str, demo: bool) -> str:
    """``hydra.mode`` of experiments that sweep one model per label (the spine findings): ``RUN`` under
    demo=true, whose recipe trains one multi-label model instead, else ``mode``."""
    return "RUN" if str(demo).lower() == "true" else mode


def slurm_gpus(accelerator: str, devices: object) -> int | None:
    """GPUs per node to request from SLURM: ``trainer.devices`` unless the trainer runs on CPUs.

    On a SLURM launcher ``accelerator: auto`` means the GPUs it asks for (``python train.py -m ...
    hydra/launcher=slurm trainer.devices=4`` requests 4 GPUs per node); CPU clusters say
    ``trainer.accelerator=cpu`` or use ``launcher=slurm_cpu``. ``devices: auto`` requests none.
    """
    if str(accelerator).lower() not in ("auto", "gpu", "cuda"):
        return None
    return int(devices) if str(devices).isdigit() else None


def language_preset(language: str, key: str) -> list[str] | dict[str, str]:
    """``data.findings_headers``, ``data.end_headers`` or ``data.flip.word_map`` of ``data.language``."""
    from datamodules.crossdl.sentences.languages import preset_value

    return preset_value(str(language), str(key))


def register_resolvers() -> None:
    for name, fn in (
        ("run_dir", run_dir),
        ("multirun_dir", multirun_dir),
        ("hydra_subdir", hydra_subdir),
        ("slurm_suffix", slurm_suffix),
        ("auto_precision", auto_precision),
        ("demo_run_mode", demo_run_mode),
        ("slurm_gpus", slurm_gpus),
        ("language_preset", language_preset),
    ):
        if not OmegaConf.has_resolver(name):
            # Cached: the run directory must not change between the places that resolve it.
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


def register_configs(root: Path = PROJECT_ROOT) -> None:
    """Store every ``experiments/*.yaml`` and ``sweeps/*.yaml`` as Hydra group options."""
    cs = ConfigStore.instance()
    for folder, group in (("experiments", "experiment"), ("sweeps", "sweep")):
        for path in sorted((root / folder).glob("*.yaml")):
            cs.store(
                group=group,
                name=path.stem,
                node=OmegaConf.load(path),
                package="_global_",
                provider=f"reportsup/{folder}",
            )


def register_all(root: Path = PROJECT_ROOT) -> None:
    register_resolvers()
    register_configs(root)


GROUPS = (
    "data",
    "model",
    "encoder",
    "callbacks",
    "logger",
    "trainer",
    "paths",
    "experiment",
    "sweep",
    "launcher",
    "debug",
    "local",
)


def apply_demo(
    cfg: DictConfig, root: Path = PROJECT_ROOT, command_line_overrides: list[str] | None = None
) -> DictConfig:
    """Switch ``cfg`` to synthetic data (the data config's ``demo`` recipe) and the offline demo encoder.

    ``data.demo`` names a function that writes seeded synthetic tables under ``paths.data_dir`` and
    returns the ``data.*`` values pointing at them; ``demo_overrides`` holds the encoder and the
    CPU-sized model/trainer settings. Values typed on the command line win over both.
    """
    if cfg.data.get("demo") is None:
        raise ValueError(f"demo=true: the data config {cfg.data.get('_target_')} has no `demo` recipe.")
    overrides = cfg.get("demo_overrides") or {}
    typed = command_line_values(command_line_overrides or [])
    with open_dict(cfg):
        # The recipe and the demo encoder are chosen once the demo's data settings and what the user typed
        # are in place: data.language=zh makes the discretizer demo write Chinese reports (its recipe reads
        # ${data.language}) and train the encoder that can read them.
        if "data" in overrides:
            cfg.data = OmegaConf.merge(cfg.data, overrides["data"])
        for key, value in typed.items():
            if key.startswith("data."):
                OmegaConf.update(cfg, key, value, force_add=True)
        data_values = instantiate(cfg.data.demo, data_dir=cfg.paths.data_dir, _convert_="all")
        demo_encoder = overrides.get("encoder", "tiny")
        if cfg.get("encoder") is None or demo_encoder is None:
            pass  # an image model: no text encoder to swap in
        elif not any(o.split("=")[0].lstrip("+~") == "encoder" for o in command_line_overrides or []):
            cfg.encoder = OmegaConf.load(root / "configs" / "encoder" / f"{demo_encoder}.yaml")
        if cfg.get("encoder") is not None and overrides.get("encoder_options"):
            cfg.encoder = OmegaConf.merge(
                cfg.encoder, overrides["encoder_options"]
            )  # e.g. the paper's preprocessing
        for key, value in data_values.items():
            # A dotted key is a full config path: a recipe that trains a previous stage (the spine
            # 2steps regime) hands over its checkpoint as model.init_checkpoint.
            if "." in key:
                OmegaConf.update(cfg, key, value, force_add=True)
            else:
                cfg.data[key] = value
        for key in ("model", "trainer", "callbacks"):
            if key in overrides:
                extra = overrides[key]
                if key == "model":
                    # The base demo settings name text-model keys (optimizer.lr); a model without
                    # them (DaMIL) keeps only the settings meant for it.
                    extra = {k: v for k, v in extra.items() if k in cfg.model}
                    # Another optimizer class takes other arguments (Adam has no momentum): replace it.
                    demo_opt = extra.get("optimizer") or {}
                    if "_target_" in demo_opt and demo_opt["_target_"] != cfg.model.optimizer.get("_target_"):
                        cfg.model.optimizer = demo_opt
                        extra = {k: v for k, v in extra.items() if k != "optimizer"}
                cfg[key] = OmegaConf.merge(cfg[key], extra)
        # What the user typed wins over the demo settings.
        for key, value in typed.items():
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def command_line_values(overrides: list[str]) -> dict[str, object]:
    """``key=value`` overrides of config values (not group choices such as ``trainer=ddp``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = {}
    for ov in OverridesParser.create().parse_overrides(overrides):
        key = ov.key_or_group
        if (
            ov.is_delete()
            or ov.is_sweep_override()
            or key.split(".")[0] == "hydra"
            or ("." not in key and key in GROUPS)
        ):
            continue
        values[key] = ov.value()
    return values

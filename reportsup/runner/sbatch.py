"""``reportsup-sbatch``: a plain sbatch script from the same config as ``launcher=slurm_*``, for users
who submit with ``sbatch`` themselves.

    reportsup-sbatch experiment=damil_multiscale launcher=slurm_4gpu launcher.partition=gpu > damil.sbatch
    sbatch damil.sbatch

The script asks for ``trainer.num_nodes`` nodes with ``trainer.devices`` tasks (ranks) and GPUs each,
the CPUs, memory and time of ``launcher.*``, ``--requeue`` and ``--signal=USR1@120``; ``srun`` starts
one ``train.py`` per rank, which Lightning's SLURM environment recognises. On the warning signal
Lightning saves a checkpoint and requeues the job; the run folder is fixed by the job id, so the
requeued job finds that checkpoint (or ``last.ckpt``) and resumes.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from reportsup.runner.setup import PROJECT_ROOT


def sbatch_script(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """The script text for the composed ``cfg`` (with ``overrides`` passed on to ``train.py``)."""
    launcher, trainer = cfg.launcher, cfg.trainer
    if str(trainer.devices) == "auto":
        raise ValueError(
            "trainer.devices=auto: give the number of devices (ranks) per node, e.g. trainer.devices=4."
        )
    name = str(cfg.get("name", "reportsup"))
    output_dir = Path(cfg.paths.output_dir).resolve()
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={int(trainer.num_nodes)}",
        f"#SBATCH --ntasks-per-node={int(trainer.devices)}",
        f"#SBATCH --cpus-per-task={int(launcher.cpus_per_task)}",
        f"#SBATCH --mem={int(launcher.mem_gb)}G",
        f"#SBATCH --time={int(launcher.timeout_min)}",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR1@120",
        "#SBATCH --output=slurm_%x_%j.out",  # in the folder sbatch is called from (must exist at submission)
    ]
    if launcher.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={int(launcher.gpus_per_node)}")
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos")):
        if launcher.get(key):
            lines.append(f"#SBATCH --{flag}={launcher[key]}")
    passed = [
        o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(("launcher", "hydra/launcher"))
    ]
    run_dir = f"{output_dir}/{name}/sbatch_${{SLURM_JOB_ID}}"
    command = " ".join(
        [
            shlex.quote(sys.executable),
            shlex.quote(str(Path(PROJECT_ROOT) / "train.py")),
            *(shlex.quote(o) for o in passed),
            f"trainer.devices={int(trainer.devices)}",
            f"trainer.num_nodes={int(trainer.num_nodes)}",
            f"trainer.strategy={trainer.strategy}",
            f"trainer.accelerator={trainer.accelerator}",
            f'"hydra.run.dir={run_dir}"',  # fixed by the job id: a requeued job resumes in the same folder
        ]
    )
    lines += [
        "",
        f"mkdir -p {shlex.quote(str(output_dir / name))}",
        f"cd {shlex.quote(str(PROJECT_ROOT))}",
        # one failed rank ends the job instead of leaving the others waiting for it in DDP set-up
        f"srun --kill-on-bad-exit=1 {command}",
        "",
    ]
    return "\n".join(lines)

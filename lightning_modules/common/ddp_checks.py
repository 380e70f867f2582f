"""A check for multi-process training: every rank writes a digest of its parameters when training ends.

DDP keeps the replicas identical by averaging gradients; a rank that diverged (a missed all-reduce,
an unsynchronised buffer, a rank-dependent code path) shows up as a different digest. Add it to any
run: ``+callbacks.parameter_digest._target_=lightning_modules.common.ddp_checks.ParameterDigest
+callbacks.parameter_digest.output_dir=<run dir>`` (the SLURM tests do).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning.pytorch as pl

from reportsup.contracts.run_dir import parameter_digest_json, write_json


class ParameterDigest(pl.Callback):
    """Writes ``parameter_digest_rank<r>.json`` (SHA-256 of all parameters, rank, world size, host)."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import socket

        digest = hashlib.sha256()
        for name, param in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        write_json(
            self.output_dir / parameter_digest_json(trainer.global_rank),
            {
                "sha256": digest.hexdigest(),
                "global_rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "host": socket.gethostname(),
                "epoch": trainer.current_epoch,
            },
        )

"""``reportsup-export``: a trained model as a folder in the Hugging Face layout, with a model card.

    reportsup-export outputs/alarm_binary/<run> alarm_abnormal/
    reportsup-export outputs/spine_nlp/<run>/checkpoints/best-epoch07.ckpt spine_nlp_model/

OUT_DIR gets ``model.safetensors``, ``config.json``, the tokenizer files and ``README.md`` (what it
predicts, paper, training data, test metrics with CIs, intended use, limitations); it must not exist or
be empty. ``from_pretrained(OUT_DIR)`` of the Python API loads it offline without unpickling. The work
is :func:`reportsup.export.export_model`'s; this module only parses the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_modules.common.checkpoints import UnsafeCheckpointError
from lightning_modules.common.label_manifest import CheckpointManifestError
from reportsup.export import export_model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a .ckpt file")
    parser.add_argument("out_dir", help="a new (or empty) folder")
    parser.add_argument(
        "--run-dir",
        default=None,
        help="the training run for the model card's data summary and test metrics (default: the checkpoint's run)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling a checkpoint that torch.load(weights_only=True) refuses (only files you trust)",
    )
    args = parser.parse_args(argv)
    try:
        out = export_model(
            args.checkpoint, args.out_dir, run_dir=args.run_dir, trust_checkpoint=args.trust_checkpoint
        )
    except (
        FileExistsError,
        FileNotFoundError,
        ValueError,
        UnsafeCheckpointError,
        CheckpointManifestError,
    ) as err:
        raise SystemExit(f"reportsup-export: {err}") from None
    print(f"exported to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}", file=sys.stderr)


if __name__ == "__main__":
    main()

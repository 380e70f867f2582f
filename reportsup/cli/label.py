"""``reportsup-label``: label a whole report archive with a trained report model, resumably.

    reportsup-label outputs/alarm_binary/<run> archive.parquet labels/
    reportsup-label outputs/alarm_binary/<run>/checkpoints/best-epoch03.ckpt archive.parquet labels/
    reportsup-label exported_model/ archive.csv labels/ --shards 8   # in a SLURM job array of 8 tasks
    reportsup-label CKPT archive.parquet labels/ --backend onnxruntime   # ONNX Runtime, fused (CPU)

On a CPU the default ``--backend auto`` times the paths this CPU offers on the archive's first reports
once (cached per CPU and checkpoint) and takes the fastest whose labels equal fp32's on >= 99.5 % of
them; the choice and why are in the folder's manifest.json.

The work is done by :func:`reportsup.labelling.label_archive` (its docstring describes the output
folder); this module only parses the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from datamodules.common.tables import ReportTableError
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from reportsup import labelling
from reportsup.contracts import label_folder
from reportsup.engines.auto import CALIBRATION_REPORTS
from reportsup.engines.onnxruntime_backend import BackendUnavailableError
from reportsup.labelling import (
    BACKENDS,
    BATCH_TOKENS,
    add_column_map_options,
    columns_map_from_options,
    label_archive,
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=labelling.__doc__,
    )
    parser.add_argument(
        "checkpoint", help="a run folder (its best checkpoint), a .ckpt, or a reportsup-export folder"
    )
    parser.add_argument("input", help="the archive: .csv, .parquet or .jsonl with report_id and text")
    parser.add_argument(
        "out_dir",
        help="output folder: the labels as a Parquet dataset in OUT_DIR/parts; manifest.json, errors.csv, runs.jsonl beside",
    )
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64, help="at most this many reports per batch")
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=BATCH_TOKENS,
        help="report classifiers: at most this many padded tokens per batch (long reports go in smaller "
        "batches); 0: no limit. The default suits a CPU; on a GPU raise it with --batch-size",
    )
    parser.add_argument("--shards", type=int, default=1, help="split the chunks over this many processes")
    parser.add_argument(
        "--shard",
        type=int,
        default=None,
        help="this process's shard (default: SLURM_ARRAY_TASK_ID in a job array, SLURM_PROCID under srun, else 0)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): on a CPU, the fastest path measured here whose labels equal fp32's on >= 99.5 %% "
        "of calibration reports (cached); torch; onnxruntime (CPU: the model exported to ONNX once, fused, "
        "cached); ctranslate2 (CPU: its encoder, converted once and cached, the head in torch)",
    )
    parser.add_argument(
        "--engine-cache",
        default=None,
        metavar="DIR",
        help="where ONNX exports, auto calibrations and inductor kernels are kept "
        "(default: $REPORTSUP_CACHE_DIR or ~/.cache/reportsup)",
    )
    parser.add_argument(
        "--calibration-reports",
        type=int,
        default=CALIBRATION_REPORTS,
        help="--backend auto: reports of the first chunk each candidate path labels once",
    )
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="--backend auto: measure again instead of the cached choice",
    )
    parser.add_argument("--precision", choices=["auto", "32", "bf16", "fp16"], default="auto")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="CPU: int8 dynamic quantisation")
    parser.add_argument(
        "--check-agreement", type=int, default=500, help="reports to compare bf16/fp16/int8 labels with fp32"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile with frozen weights (report classifiers): ~1.4x on CPU after a one-off compilation of ~30 s",
    )
    parser.add_argument(
        "--encoding",
        default="utf-8",
        help="text encoding of a CSV/JSONL archive (e.g. cp1252); rows with bytes it cannot decode go to errors.csv",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling a checkpoint that torch.load(weights_only=True) refuses (only files you trust)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="truncate reports at this many tokens (default: the encoder's maximum); recorded, a rerun must match",
    )
    add_column_map_options(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    # a job array: one shard per array task; `srun --ntasks=4 --gpus-per-task=1`: one per task (and GPU)
    env_shard = os.environ.get("SLURM_ARRAY_TASK_ID", os.environ.get("SLURM_PROCID", "0"))
    shard = args.shard if args.shard is not None else int(env_shard)
    try:
        columns_map = columns_map_from_options(args.rename, args.columns_map)
        counts = label_archive(
            args.checkpoint,
            args.input,
            args.out_dir,
            args.chunk_size,
            args.batch_size,
            shard,
            args.shards,
            args.precision,
            args.quantize,
            args.check_agreement,
            args.device,
            progress=not args.no_progress,
            encoding=args.encoding,
            compile=args.compile,
            batch_tokens=args.batch_tokens or None,
            trust_checkpoint=args.trust_checkpoint,
            max_length=args.max_length,
            columns_map=columns_map,
            backend=args.backend,
            engine_cache=args.engine_cache,
            calibration_reports=args.calibration_reports,
            recalibrate=args.recalibrate,
        )
    except (
        ReportTableError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
        UnsafeCheckpointError,
        BackendUnavailableError,
    ) as err:
        raise SystemExit(f"reportsup-label: {err}") from None
    parts = Path(args.out_dir) / label_folder.PARTS
    print(
        f"labelled {counts['reports']} reports in {counts['seconds']:.1f} s = {counts['reports_per_second']:.1f} reports/s; "
        f"{counts['skipped_done']} already done; {counts['errors']} row(s) not labelled, listed in {Path(args.out_dir) / label_folder.ERRORS}; "
        f"read the labels with pandas.read_parquet('{parts}')",
        file=sys.stderr,
    )
    if "backend_choice" in counts:
        c = counts["backend_choice"]
        print(
            f"--backend auto: {c['name']} ({c['reason']}; "
            f"{'cached choice' if c.get('cached') else 'decided'} in {c.get('resolve_seconds', 0):.1f} s)",
            file=sys.stderr,
        )
    if "fp32_agreement" in counts:
        print(f"{counts['fp32_agreement']['mode']} vs fp32: {counts['fp32_agreement']}", file=sys.stderr)


if __name__ == "__main__":
    main()

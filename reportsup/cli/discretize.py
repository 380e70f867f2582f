"""``reportsup-discretize``: apply a trained Cross-DL discretizer to a report table, streamed in chunks.

    reportsup-discretize outputs/crossdl_discretizer/<run> reports.csv pseudo_labels.parquet
    reportsup-discretize exported_discretizer/ reports.parquet labels.csv --probabilities

The work is done by :func:`reportsup.discretize.discretize_file` (its module docstring describes the
output table); this module only parses the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from datamodules.common.tables import ReportTableError
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from reportsup import discretize
from reportsup.discretize import discretize_file


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=discretize.__doc__,
    )
    parser.add_argument(
        "checkpoint", help="a run folder (its best checkpoint), a .ckpt, or a reportsup-export folder"
    )
    parser.add_argument("input", help="reports table: .csv, .parquet or .jsonl")
    parser.add_argument("output", help="new .csv or .parquet file")
    parser.add_argument("--batch-size", type=int, default=256, help="sentences per forward pass")
    parser.add_argument("--chunk-size", type=int, default=5000, help="reports read and written at a time")
    parser.add_argument("--probabilities", action="store_true", help="also write the soft matrix")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling a checkpoint that torch.load(weights_only=True) refuses (only files you trust)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        counts = discretize_file(
            args.checkpoint,
            args.input,
            args.output,
            args.batch_size,
            args.chunk_size,
            args.probabilities,
            progress=not args.no_progress,
            trust_checkpoint=args.trust_checkpoint,
        )
    except (ReportTableError, FileExistsError, FileNotFoundError, ValueError, UnsafeCheckpointError) as err:
        raise SystemExit(f"reportsup-discretize: {err}") from None
    print(
        f"labelled {counts['reports']} reports ({counts['sentences']} Findings sentences) in "
        f"{counts['seconds']:.1f} s = {counts['reports_per_second']:.1f} reports/s -> {args.output}",
        file=sys.stderr,
    )
    if counts["no_findings"]:
        print(
            f"{counts['no_findings']} report(s) have no Findings section: status=no_findings, labels empty.",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

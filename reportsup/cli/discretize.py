"""``reportsup-discretize``: apply a trained Cross-DL discretizer to a report table, streamed in chunks.

    reportsup-discretize outputs/crossdl_discretizer/<run> reports.csv pseudo_labels.parquet
    reportsup-discretize exported_discretizer/ reports.parquet labels.csv --probabilities
    reportsup-discretize exported_discretizer/ reports.csv.gz labels/      # a resumable labelling folder

The work is done by :func:`reportsup.discretize.discretize_file` (a file; its module docstring describes
the output table) or :func:`reportsup.labelling.label_archive` (a folder: the same columns as a Parquet
dataset in ``labels/parts``); this module only parses the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.common.tables import ReportTableError
from lightning_modules.common.checkpoints import UnsafeCheckpointError
from lightning_modules.crossdl.discretizer.module import DiscretizerModule
from reportsup import discretize
from reportsup.contracts import label_folder
from reportsup.discretize import discretize_file
from reportsup.labelling import add_column_map_options, columns_map_from_options, label_archive


def is_file_output(output: str | Path) -> bool:
    """A ``.csv`` / ``.parquet`` name is one output file; anything else is a labelling folder."""
    return Path(output).suffix.lower() in (".csv", ".parquet")


def discretize_folder(args: argparse.Namespace, columns_map: dict[str, str]) -> dict[str, Any]:
    """The discretizer through the resumable labeller into a labelling folder (issue 21, item 7), with the
    counts the file mode prints read back from its parts."""
    counts = label_archive(
        args.checkpoint,
        args.input,
        args.output,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        trust_checkpoint=args.trust_checkpoint,
        probabilities=args.probabilities,
        columns_map=columns_map,
        tasks=(DiscretizerModule.TASK,),
    )
    labels, _ = label_folder.read_label_folder(args.output)
    status = columns_map.get("status", "status")
    n_sentences = columns_map.get("n_sentences", "n_sentences")
    counts["no_findings"] = int((labels[status] != "ok").sum())
    counts["sentences"] = int(labels[n_sentences].sum())
    return counts


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
    parser.add_argument(
        "output",
        help="a new .csv or .parquet file, or a folder (no such suffix): a resumable Parquet dataset in "
        "OUTPUT/parts with manifest.json, errors.csv and runs.jsonl beside",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="sentences per forward pass")
    parser.add_argument("--chunk-size", type=int, default=5000, help="reports read and written at a time")
    parser.add_argument("--probabilities", action="store_true", help="also write the soft matrix")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow unpickling a checkpoint that torch.load(weights_only=True) refuses (only files you trust)",
    )
    add_column_map_options(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        columns_map = columns_map_from_options(args.rename, args.columns_map)
        if is_file_output(args.output):
            counts = discretize_file(
                args.checkpoint,
                args.input,
                args.output,
                args.batch_size,
                args.chunk_size,
                args.probabilities,
                progress=not args.no_progress,
                trust_checkpoint=args.trust_checkpoint,
                columns_map=columns_map,
            )
        else:
            counts = discretize_folder(args, columns_map)
    except (ReportTableError, FileExistsError, FileNotFoundError, ValueError, UnsafeCheckpointError) as err:
        raise SystemExit(f"reportsup-discretize: {err}") from None
    print(
        f"labelled {counts['reports']} reports ({counts['sentences']} Findings sentences) in "
        f"{counts['seconds']:.1f} s = {counts['reports_per_second']:.1f} reports/s -> {args.output}",
        file=sys.stderr,
    )
    if "errors" in counts:  # a folder: rows without an id or text are listed, not labelled
        print(
            f"{counts['errors']} row(s) not labelled, listed in {Path(args.output) / label_folder.ERRORS}; "
            f"read the labels with pandas.read_parquet('{Path(args.output) / label_folder.PARTS}')",
            file=sys.stderr,
        )
    if counts["no_findings"]:
        print(
            f"{counts['no_findings']} report(s) have no Findings section: status=no_findings, labels empty.",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

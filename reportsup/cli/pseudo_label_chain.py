"""``reportsup-pseudo-label-chain``: Fig. S2B of Liu et al. 2023, the analyzer trained on the pseudo
labels of discretizers trained on different numbers of sentences (discretizer size -> discretize ->
analyzer), the command line of :mod:`reportsup.runner.pseudo_label_chain`.

For each --sizes N: a discretizer run (``data.max_train_sentences=N``), its labels of the head-CT
reports (the test scans keep their gold labels), an analyzer run on them; every step in its own folder
under --out-dir, finished steps are never rerun (run the same command again to resume, or with more
sizes), and the table ``pseudo_label_chain.csv`` / ``.md`` (size -> discretizer F1, analyzer AUROCs per
type with 95 % CIs) is rebuilt from the finished runs.

    reportsup-pseudo-label-chain --sizes 100 200 500 1000 1500 3000 --out-dir s2b \\
        --both demo=true paths.data_dir=data
    reportsup-pseudo-label-chain --sizes 500 1500 3000 --out-dir s2b \\
        --discretizer data.sentences_path=sentences.csv data.reports_path=reports.csv \\
        --analyzer data.manifest_path=registered/manifest_registered.csv data.labels_path=gold.csv \\
        --reports head_ct_reports.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from reportsup.runner.pseudo_label_chain import TABLE_CSV, TABLE_MD, ChainError, run_chain, to_markdown

PROG = "reportsup-pseudo-label-chain"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", required=True, help="discretizer training sentences, one chain each"
    )
    parser.add_argument(
        "--out-dir", type=Path, required=True, help="the chain's folder (new, or one to resume)"
    )
    parser.add_argument(
        "--discretizer-experiment", default="crossdl_discretizer", help="default: %(default)s"
    )
    parser.add_argument("--analyzer-experiment", default="damil_multiscale", help="default: %(default)s")
    parser.add_argument(
        "--discretizer",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="train.py overrides of the discretizer",
    )
    parser.add_argument(
        "--analyzer",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="train.py overrides of the analyzer; its data.labels_path holds the test scans' gold labels",
    )
    parser.add_argument(
        "--both", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of both, e.g. demo=true"
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="head-CT reports to discretize (report_id, text); default: the analyzer's data.labels_path "
        "when it has a text column (the demo's reports.csv)",
    )
    args = parser.parse_args(argv)
    try:
        table = run_chain(
            args.sizes,
            args.out_dir,
            discretizer_experiment=args.discretizer_experiment,
            analyzer_experiment=args.analyzer_experiment,
            discretizer_overrides=[*args.both, *args.discretizer],
            analyzer_overrides=[*args.both, *args.analyzer],
            reports=args.reports,
        )
    except (ChainError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"{PROG}: error: {err}") from None
    except RuntimeError as err:  # a step's train.py failed: its log is named in the message
        raise SystemExit(f"{PROG}: {err}") from None
    print(to_markdown(table), end="")
    print(f"written: {args.out_dir / TABLE_CSV}, {args.out_dir / TABLE_MD}")


if __name__ == "__main__":
    main()

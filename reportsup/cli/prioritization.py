"""``reportsup-prioritization``: rank a set of scans by the DaMIL analyzer's abnormality score and test,
per disease, whether its scans come first (Liu et al. 2023, Figure 5 and S5), the command line of
:mod:`reportsup.analysis.prioritization`.

RUN is a DaMIL run folder tested on the scans (its ``predictions_<set>.csv``; ``--test-set`` when it has
several), a ``reportsup-damil-predict`` output folder (its ``predictions.csv``), or such a CSV. The
disease table has ``scan_id`` and one 0/1 column per disease (the paper: 12 diseases on its 1,204
preoperative scans); only its scans are ranked. Writes, in ``--out`` (never over existing files):
``prioritization.csv`` (per score and disease: scans, positive ratio, rank quartiles and percentiles,
U, AUROC, one-sided rank-sum p, significant at ``--alpha``), ``prioritization_<score>.png`` (Fig. 5A for
``any``, Fig. S5a-d for the types) and ``prioritization_median_ranks.png`` (Fig. 5B).

    reportsup-prioritization outputs/damil_multiscale/<run> --diseases preoperative_diseases.csv \\
        --test-set preoperative --out prioritization
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from reportsup.analysis.prioritization import (
    ANY,
    PAPER_ALPHA,
    PrioritizationInputError,
    align,
    disease_matrix,
    plot_median_ranks,
    plot_prioritization,
    prioritize_all,
    read_run_scores,
)
from reportsup.cli.common import read_table

RESULT_CSV = "prioritization.csv"
MEDIAN_RANKS_PNG = "prioritization_median_ranks.png"
PROG = "reportsup-prioritization"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run", type=Path, help="DaMIL run folder, reportsup-damil-predict folder, or predictions CSV"
    )
    parser.add_argument(
        "--diseases",
        type=Path,
        required=True,
        help="table (CSV/Parquet/JSONL): scan_id + one 0/1 column per disease",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--test-set", default=None, help="which predictions_<set>.csv of a run (if it has several)"
    )
    parser.add_argument(
        "--scores",
        nargs="+",
        default=None,
        metavar="SCORE",
        help=f"abnormality scores to rank by: '{ANY}' (max over the types, Fig. 5A) and/or type names "
        "(Fig. 5B, S5); default: all",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=PAPER_ALPHA,
        help="significance threshold (default: the paper's %(default)g)",
    )
    parser.add_argument(
        "--method",
        choices=["auto", "exact", "asymptotic"],
        default="auto",
        help="p-value of scipy's Mann-Whitney U: exact null distribution, normal approximation, or exact "
        "for a group of <= 8 scans without ties (auto, default)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error("--alpha must lie between 0 and 1")
    try:
        scores, predictions_path = read_run_scores(args.run, args.test_set)
        diseases = disease_matrix(read_table(args.diseases, PROG), str(args.diseases))
        align(scores, diseases, str(args.diseases))  # names unpredicted scans before anything is written
        result = prioritize_all(scores, diseases, args.scores, alpha=args.alpha, method=args.method)
    except PrioritizationInputError as err:
        sys.exit(f"{PROG}: error: {err}")
    names = list(dict.fromkeys(result["score"]))
    outputs = [RESULT_CSV, *(f"prioritization_{n}.png" for n in names)] + (
        [MEDIAN_RANKS_PNG] if len(names) > 1 else []
    )
    existing = [args.out / name for name in outputs if (args.out / name).exists()]
    if existing:
        sys.exit(
            f"{PROG}: error: {existing[0]} exists; choose a new --out (nothing you made is overwritten)."
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out / RESULT_CSV, index=False)
    aligned = scores.loc[diseases.index]
    for name in names:
        rows = result[result["score"] == name].reset_index(drop=True)
        label = "max over the types" if name == ANY else name.replace("_", " ")
        plot_prioritization(
            aligned[name].to_numpy(),
            diseases,
            rows,
            args.out / f"prioritization_{name}.png",
            title=f"Prioritization by abnormality score ({label}), {len(diseases)} scans",
        )
    if len(names) > 1:
        plot_median_ranks(result, args.out / MEDIAN_RANKS_PNG)
    unlabelled = len(scores) - len(diseases)
    print(
        f"ranked {len(diseases)} scans of {args.diseases} by {predictions_path}"
        + (f" ({unlabelled} predicted scan(s) without disease labels left out)" if unlabelled else "")
    )
    head = result[result["score"] == names[0]]
    print(f"score '{names[0]}': disease (positive ratio): median rank [Q1, Q3], one-sided rank-sum p")
    for _, r in head.iterrows():
        if r["note"]:
            print(f"  {r['disease']} ({r['n_scans']} scans): {r['note']}")
            continue
        mark = "*" if r["significant"] else " "
        print(
            f"  {r['disease']} ({r['positive_ratio']:.1%}): {r['median_rank']:g} [{r['q1_rank']:g}, "
            f"{r['q3_rank']:g}] of {r['n_total']}, p = {r['p_value']:.3g}{mark}"
        )
    print(f"(* p < {args.alpha:g}); written: {', '.join(str(args.out / n) for n in outputs)}")


if __name__ == "__main__":
    main()

"""reportsup-sweep-status: the trials of an Optuna sweep by state (running, complete, pruned, failed).

reportsup-sweep-status outputs/sweeps/alarm_lr
reportsup-sweep-status postgresql://user@host/db --study alarm_lr
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reportsup.contracts.run_dir import SWEEP_DB, SWEEP_JOURNAL
from reportsup.runner.sweep import storage_for, study_table


def main(argv: Sequence[str] | None = None) -> None:
    """``reportsup-sweep-status SWEEP_FOLDER_OR_STORAGE_URL [--study NAME]``: trials by state."""
    parser = argparse.ArgumentParser(
        prog="reportsup-sweep-status", description="Show the trials of an Optuna sweep by state."
    )
    parser.add_argument(
        "where", help=f"a sweep folder (holds {SWEEP_DB} or {SWEEP_JOURNAL}) or a storage URL"
    )
    parser.add_argument("--study", default=None)
    args = parser.parse_args(argv)
    where = Path(args.where)
    if where.is_dir():
        if (where / SWEEP_DB).exists():
            storage: Any = f"sqlite:///{where / SWEEP_DB}"
        elif (where / SWEEP_JOURNAL).exists():
            storage = storage_for("journal", where)
        else:
            raise SystemExit(f"reportsup-sweep-status: {where} holds neither {SWEEP_DB} nor {SWEEP_JOURNAL}.")
    elif "://" in args.where:
        storage = args.where
    else:
        raise SystemExit(f"reportsup-sweep-status: {where} is neither a sweep folder nor a storage URL.")
    try:
        name, table = study_table(storage, args.study)
    except (ValueError, KeyError) as err:
        raise SystemExit(f"reportsup-sweep-status: {err}") from None
    counts = table["state"].value_counts() if len(table) else pd.Series(dtype=int)
    print(
        f"study {name}: "
        + ", ".join(f"{counts.get(s, 0)} {s.lower()}" for s in ("RUNNING", "COMPLETE", "PRUNED", "FAIL"))
    )
    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()

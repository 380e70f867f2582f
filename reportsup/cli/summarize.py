"""reportsup-summarize: summarise a multirun folder into ``summary.json`` and ``summary.md`` (every metric as
mean and 95 % CI over its runs), as the multirun callback does when a sweep ends.

    reportsup-summarize outputs/alarm_binary_10x/2026-11-23_12-00-00
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from reportsup.runner.summary import summarize_multirun


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reportsup-summarize", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", help="a multirun folder (holds one sub-folder per run)")
    args = parser.parse_args(argv)
    try:
        json_path, md_path = summarize_multirun(args.multirun_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"reportsup-summarize: {err}") from None
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()

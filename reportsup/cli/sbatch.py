"""reportsup-sbatch: print the sbatch script for a training run composed from the same overrides as
``python train.py`` (the script itself: ``reportsup/runner/sbatch.py``).

    reportsup-sbatch experiment=damil_multiscale launcher=slurm_4gpu > job.sh
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir

from reportsup.runner.sbatch import sbatch_script
from reportsup.runner.setup import PROJECT_ROOT, register_all


def main(argv: Sequence[str] | None = None) -> None:
    # argparse only for --help: Hydra overrides never start with "-", so they all land in `overrides`
    parser = argparse.ArgumentParser(
        prog="reportsup-sbatch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides as for train.py, e.g. experiment=... launcher=slurm_4gpu",
    )
    overrides = list(parser.parse_args(argv).overrides)
    register_all()
    try:
        with initialize_config_dir(str(Path(PROJECT_ROOT) / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        print(sbatch_script(cfg, overrides))
    except ValueError as err:
        raise SystemExit(f"reportsup-sbatch: {err}") from None


if __name__ == "__main__":
    main()

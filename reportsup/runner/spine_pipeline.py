"""The spine study's stages for demo=true (spine study, Figure 1): synthetic data -> report NLP ->
machine labels -> 1step image model, each made once per data set and reused by later runs.

The image experiments need what earlier stages produced: the 1step regime trains on machine labels
from the report NLP, the 2steps regime starts from the 1step checkpoint. With real data a user runs
the stages (``experiment=spine_nlp``, ``reportsup-label``, ``experiment=spine_resnet18_1step``) and
passes their outputs; demo=true runs them here, as separate ``train.py`` processes (the same command a
user types) with their logs beside their outputs under ``<paths.data_dir>/spine_pipeline/``. A file
lock per stage lets the DDP ranks of one job, or parallel runs, share one result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.synthetic.datasets.spine import demo_data_config
from reportsup.runner.stages import once, train_stage


def _data_overrides(**recipe: Any) -> list[str]:
    """The data recipe as overrides, so a stage's own run makes (and so reuses) the same data set."""
    return [f"data.demo.{key}={value}" for key, value in recipe.items()]


def nlp_demo_data(
    data_dir: str,
    n_sessions: int = 2000,
    seed: int = 0,
    image_size: int = 128,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.5,
) -> dict[str, Any]:
    """``data.*`` of the spine report NLP under demo=true: the synthetic human-annotated reports."""
    paths = demo_data_config(
        data_dir,
        n_sessions=n_sessions,
        seed=seed,
        image_size=image_size,
        report_noise=report_noise,
        nlp_fraction=nlp_fraction,
    )
    return {"path": paths["reports_annotated"], "holdouts": {}}


#: A stage of a smoke run (``debug=fast_dev_run``): one epoch of two batches, no test, in its own stage
#: folder (``<stage>_quick``) so that a real demo on the same data never reuses an untrained stage.
QUICK_STAGE = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "test=false",
]


#: An image stage trained for the next stage draws no occlusion maps (12 maps cost ~30 s on a CPU): its
#: checkpoint is what is needed; ``experiment=spine_resnet18_1step demo=true`` draws them.
NO_OCCLUSION = ["callbacks.occlusion.n_per_finding=0"]


def trained_once(
    folder: Path,
    experiment: str,
    data_dir: str,
    data_overrides: list[str],
    quick: bool = False,
    extra: Sequence[str] = (),
) -> str:
    """The best checkpoint of ``experiment`` under demo=true on this data set, trained on first use
    (``quick``: the smoke-run stage of :data:`QUICK_STAGE`; ``extra``: further overrides)."""
    folder = folder.with_name(folder.name + "_quick") if quick else folder

    def build(attempt: Path) -> dict[str, Any]:
        overrides = [
            f"experiment={experiment}",
            "demo=true",
            f"paths.data_dir={data_dir}",
            *data_overrides,
            *(QUICK_STAGE if quick else []),
            *extra,
        ]
        return {"checkpoint": str(train_stage(overrides, attempt, experiment))}

    return once(folder, build)["checkpoint"]


def machine_labels(
    data_dir: str, paths: dict[str, str], data_overrides: list[str], quick: bool = False
) -> str:
    """The report NLP (``spine_nlp`` under demo=true: one 12-head model, the multi-label option, 12x
    cheaper than the paper's 12 models) trained on the annotated reports, then ``reportsup-label`` over
    every report of the archive."""
    stages = Path(data_dir) / "spine_pipeline" / Path(paths["views"]).parent.name

    def build_labels(attempt: Path) -> dict[str, Any]:
        from reportsup.labelling import label_archive

        nlp = trained_once(stages / "nlp", "spine_nlp", data_dir, data_overrides)
        counts = label_archive(nlp, paths["reports"], attempt, progress=False)
        return {"machine_labels": str(attempt), "reports": counts["reports"]}

    return once(stages / ("machine_labels_quick" if quick else "machine_labels"), build_labels)[
        "machine_labels"
    ]


def image_demo_data(
    data_dir: str,
    regime: str = "1step",
    n_sessions: int = 2000,
    seed: int = 0,
    image_size: int = 128,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.5,
    quick_stages: bool = False,
) -> dict[str, Any]:
    """``data.*`` (and for 2steps ``model.init_checkpoint``) of a spine image regime under demo=true.
    ``quick_stages`` (set by ``debug=fast_dev_run``): the 1step stage of 2steps as a smoke run too, kept
    apart. The report NLP stays a real stage: its machine labels must be learnable (a two-batch NLP
    labels every report negative, which the image DataModule rightly refuses)."""
    if regime not in ("1step", "2steps", "step2only"):
        raise ValueError(f"data.demo.regime={regime!r}: 1step, 2steps or step2only.")
    recipe = dict(
        n_sessions=n_sessions,
        seed=seed,
        image_size=image_size,
        report_noise=report_noise,
        nlp_fraction=nlp_fraction,
    )
    paths = demo_data_config(data_dir, **recipe)
    overrides = _data_overrides(**recipe)
    values: dict[str, Any] = {
        "views": paths["views"],
        "test_labels": paths["test_labels"],
        "refinement_labels": paths["refinement_labels"],
        "nlp_reports": paths["reports_annotated"],
    }
    if regime in ("1step", "2steps"):
        values["machine_labels"] = machine_labels(data_dir, paths, overrides)
    if regime == "2steps":
        stages = Path(data_dir) / "spine_pipeline" / Path(paths["views"]).parent.name
        values["model.init_checkpoint"] = trained_once(
            stages / "1step", "spine_resnet18_1step", data_dir, overrides, quick_stages, NO_OCCLUSION
        )
    return values

"""The model card (``README.md``) of an exported image model: the DaMIL analyzer and the spine ResNet-18.

The card itself is :func:`reportsup.export.model_card` (paper, training data and test metrics with CIs
from the run folder); this module supplies what differs from the report models: the intended use and
the limitations of a model that looks at images, and how to load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reportsup.api.loading import MODEL_CARD
from reportsup.contracts.run_dir import DATA_SUMMARY, METRICS_JSON, SPLITS_CSV, run_dir_of_checkpoint

INTENDED_USE: dict[str, str] = {
    "damil": (
        "Research on detecting and localising intracranial abnormalities (intra-/extraparenchymal hyper-/"
        "hypodensity in 17 regions) in non-contrast head CT, trained from report-derived labels as in Liu "
        "et al.; e.g. ranking scans for review in a study, never reading them alone."
    ),
    "spine_resnet18": (
        "Research on classifying lumbar-spine radiographs (fused coronal + sagittal views) for findings "
        "whose labels came from report NLP, as in the spine study."
    ),
}
LIMITATIONS = (
    "- Not a medical device and not for clinical decision-making.\n"
    "- Trained on labels extracted from reports, not on image annotations: findings the reports miss or "
    "over-call are learnt as such.\n"
    "- Trained on one institution's scanners and protocols; other sites, devices or populations may lower "
    "the accuracy: check it on a labelled sample of your own images first.\n"
    "- Inputs must be prepared as recorded in config.json (preprocessing); the metrics below hold for the "
    "listed test sets only."
)
USAGE = (
    "```python\n"
    "from reportsup import {cls}\n"
    '{var} = {cls}.from_pretrained("path/to/this/folder")  # offline, nothing is unpickled\n'
    "{var}.predict({arg})\n"
    "```\n"
)


def training_run(source: Path | None) -> Path | None:
    """The run a checkpoint belongs to, when it holds the files a card reads (metrics, data summary)."""
    if source is None or source.is_dir():
        return None
    run = run_dir_of_checkpoint(source)
    return run if any((run / n).is_file() for n in (METRICS_JSON, SPLITS_CSV, DATA_SUMMARY)) else None


def card_files(
    manifest: Mapping[str, Any],
    source: Path | None,
    run_dir: str | Path | None,
    usage: str,
) -> dict[str, str | bytes]:
    """``{"README.md": card}``: a re-saved export keeps its card; otherwise a new one from ``run_dir``
    (default: the run of the checkpoint the model came from)."""
    from reportsup.export import model_card  # the export module imports the API: import on use

    if source is not None and source.is_dir() and run_dir is None and (source / MODEL_CARD).is_file():
        return {MODEL_CARD: (source / MODEL_CARD).read_bytes()}
    task = str(manifest.get("task"))
    run = Path(run_dir) if run_dir is not None else training_run(source)
    card = model_card(
        manifest,
        run,
        usage=usage,
        intended_use=INTENDED_USE.get(task, "Research use."),
        limitations=LIMITATIONS,
    )
    return {MODEL_CARD: card}

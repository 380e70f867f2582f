"""Shipping a trained model (DESIGN.md "Shipping models"): the Hugging Face folder layout with a model card.

``export_model(ckpt_or_run, out_dir)`` writes::

    out_dir/
      model.safetensors   the weights (safetensors: loading never unpickles)
      config.json         {"reportsup": {task, labels, threshold, preprocessing, label_manifest,
                          encoder_config, tokenizer_files, weights_layout, reportsup_version, source}}
                          (+ a transformers config where the weights have a stock transformers layout)
      tokenizer files     tokenizer.json, tokenizer_config.json, ... (text models)
      README.md           the model card: what it predicts, paper, training data, test metrics with
                          95% CIs, intended use, limitations

and ``from_pretrained(out_dir)`` of the matching API class loads it offline. The export dispatches on
the label manifest's task through :data:`reportsup.api.API_CLASSES`: every API class implements
``from_pretrained(path, trust_checkpoint=...)`` and ``save_pretrained(out_dir, run_dir=None)``, and
builds its card with :func:`write_model_card` / :func:`model_card`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lightning_modules.common.report_model import ReportModel
from reportsup.api import API_CLASSES
from reportsup.api.loading import (
    MODEL_CARD,
    ModelSourceError,
    is_exported,
    load_checkpoint,
    resolve,
    save_exported,
)
from reportsup.api.report_models import (
    LAYOUT_BERT_SEQUENCE_CLASSIFIER,
    ModelSource,
    exported_config,
    exported_state,
    tokenizer_files,
)
from reportsup.contracts import run_dir as rd
from reportsup.version import __version__

#: the paper behind each task (full texts in ../shared/papers/)
PAPERS: dict[str, str] = {
    "alarm_report_classifier": (
        "Wood DA, Kafiabadi S, Al Busaidi A, et al. Deep learning to automate the labelling of head MRI "
        "datasets for computer vision applications. European Radiology, published online 20 July 2021. "
        "https://doi.org/10.1007/s00330-021-08132-0"
    ),
    "crossdl_discretizer": (
        "Liu A, Guo Y, Lyu J, et al. Automatic intracranial abnormality detection and localization in head "
        "CT scans by learning from free-text reports. Cell Reports Medicine, 101164 (2023). "
        "https://doi.org/10.1016/j.xcrm.2023.101164"
    ),
    "damil": (
        "Liu A, Guo Y, Lyu J, et al. Automatic intracranial abnormality detection and localization in head "
        "CT scans by learning from free-text reports. Cell Reports Medicine, 101164 (2023). "
        "https://doi.org/10.1016/j.xcrm.2023.101164"
    ),
    "spine_report_classifier": (
        "The lumbar-spine study: NLP (BERT per finding) labels lumbar X-ray reports to train ResNet-18 image "
        'models; section "Extracting Structured Information From Radiological Reports" '
        "(full text: spine_lumbar_xray_nlp_resnet18.txt in the reportsup papers folder)."
    ),
    "spine_resnet18": (
        "The lumbar-spine study: ResNet-18 on fused lumbar X-ray views trained on NLP labels "
        "(full text: spine_lumbar_xray_nlp_resnet18.txt in the reportsup papers folder)."
    ),
}

#: what each task's model is for, and where it stops (the model card's last two sections)
INTENDED_USE: dict[str, str] = {
    "alarm_report_classifier": (
        "Labelling archives of head MRI radiology reports (English, neuroradiology) to create training labels "
        "for computer-vision models, as in Wood et al.; research use."
    ),
    "spine_report_classifier": (
        "Extracting radiological findings from lumbar-spine X-ray reports to create training labels for "
        "image models, as in the spine study; research use."
    ),
    "crossdl_discretizer": (
        "Turning head-CT report Findings sentences into region x abnormality-type labels (pseudo labels for "
        "the DaMIL image analyzer), as in Liu et al.; research use."
    ),
}
LIMITATIONS = (
    "- Not a medical device and not for clinical decision-making: it reads reports, it does not look at images.\n"
    "- Report labels are not image labels: a report can miss or over-call what the images show (Wood et al. "
    "measure both, and image-label accuracy is lower).\n"
    "- Trained on one institution's reports and templates: other hospitals, languages, report styles or "
    "time periods may lower the accuracy; check it on a labelled sample of your own reports first.\n"
    "- The metrics below hold for the listed test sets only; the threshold is the one stored in config.json."
)


def export_model(
    ckpt_or_run: str | Path,
    out_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    trust_checkpoint: bool = False,
) -> Path:
    """Export a run folder's best checkpoint (or a given ``.ckpt``) into ``out_dir`` (which must not exist
    or be empty) in the Hugging Face layout with a model card; returns ``out_dir``.

    ``run_dir``: where the card's training-data summary and test metrics come from (default: the run
    the checkpoint belongs to). The checkpoint is read with ``torch.load(weights_only=True)``;
    ``trust_checkpoint=True`` allows unpickling a trusted file that needs it."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not empty; export into a new folder (nothing is overwritten)."
        )
    source = resolve(ckpt_or_run)
    if is_exported(source):
        raise ModelSourceError(f"{source} is already an exported model; copy the folder instead.")
    task = (load_checkpoint(source, trust_checkpoint=trust_checkpoint).get("label_manifest") or {}).get(
        "task"
    )
    if task not in API_CLASSES:
        raise ModelSourceError(
            f"{source}: no exportable label manifest (task {task!r}; known tasks: {sorted(API_CLASSES)})."
        )
    module, name = API_CLASSES[task].split(":")
    api_class = getattr(importlib.import_module(module), name)
    kwargs = {"trust_checkpoint": True} if trust_checkpoint else {}
    model = api_class.from_pretrained(source, **kwargs)
    return model.save_pretrained(out, run_dir=run_dir)


def export_report_model(
    model: ReportModel,
    out_dir: str | Path,
    source: ModelSource | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """Export a text model (ALARM, spine report NLP, discretizer): weights, config, tokenizer, card."""
    state, layout = exported_state(model)
    config = exported_config(model, layout, source)
    files: dict[str, str | bytes] = dict(tokenizer_files(model))
    if source is not None and source.exported and run_dir is None and (source.path / MODEL_CARD).is_file():
        files[MODEL_CARD] = (source.path / MODEL_CARD).read_bytes()  # re-saved: keep the original card
    else:
        run = run_dir if run_dir is not None else default_run_dir(source)
        usage = report_model_usage(config["reportsup"]["task"], layout)
        files[MODEL_CARD] = model_card(config["reportsup"]["label_manifest"], run, source=source, usage=usage)
    return save_exported(out_dir, config, state, files)


def default_run_dir(source: ModelSource | None) -> Path | None:
    """The run a checkpoint belongs to (``<run>/checkpoints/x.ckpt``) when it holds run files."""
    if source is None or source.exported:
        return None
    run = rd.run_dir_of_checkpoint(source.path)
    has_run_files = any((run / name).is_file() for name in (rd.METRICS_JSON, rd.SPLITS_CSV, rd.DATA_SUMMARY))
    return run if has_run_files else None


def report_model_usage(task: str, layout: str) -> str:
    """The card's "How to use" code for a text model."""
    api = "SentenceDiscretizer" if task == "crossdl_discretizer" else "ReportLabeller"
    text = (
        "```python\n"
        f"from reportsup import {api}\n"
        f'model = {api}.from_pretrained("path/to/this/folder")  # offline, nothing is unpickled\n'
        'table = model.predict(["report text ...", "another report ..."])  # or a DataFrame / CSV path\n'
        "```\n"
    )
    if layout == LAYOUT_BERT_SEQUENCE_CLASSIFIER:
        text += (
            "\nThe weights are a stock `BertForSequenceClassification` (one sigmoid logit per finding):\n\n"
            "```python\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            'model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")\n'
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n'
            "```\n\n"
            "Apply the preprocessing in `config.json` (`reportsup.preprocessing`: lower case, line breaks to "
            "spaces, max_length) before tokenizing, as reportsup does.\n"
        )
    return text


# -- the model card ---------------------------------------------------------------------------


def model_card(
    manifest: Mapping[str, Any],
    run_dir: str | Path | None = None,
    *,
    source: ModelSource | None = None,
    usage: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
) -> str:
    """The model card (``README.md``) of an exported model, as Markdown with Hugging Face front matter.

    ``manifest``: the label manifest (``task``, ``labels``, ``threshold``, ``encoder`` ...);
    ``run_dir``: the training run, for the data summary (``data_summary.json``, ``splits.csv``) and the
    test metrics with CIs (``metrics.json``); ``usage``: Markdown on how to load it."""
    task = str(manifest.get("task"))
    labels = list(manifest.get("labels", []))
    run = Path(run_dir) if run_dir is not None else None
    config = rd.read_config(run) if run is not None else {}
    demo = bool(config.get("demo"))
    lines = [
        "---",
        "library_name: reportsup",
        "tags:",
        "- radiology",
        "- report-supervised",
        f"- {task}",
        "---",
        "",
        f"# {task}: {', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}",
        "",
    ]
    if demo:
        lines += [
            "> **Demo model.** Trained with `demo=true` on synthetic reports made on the fly: it shows the "
            "pipeline, its outputs mean nothing clinically.",
            "",
        ]
    lines += ["## What it predicts", "", predicts_text(manifest), ""]
    lines += ["## Paper", "", PAPERS.get(task, "(no paper recorded for this task)"), ""]
    if usage:
        lines += ["## How to use", "", usage.rstrip(), ""]
    lines += ["## Training data", "", training_data_text(run), ""]
    lines += ["## Test metrics", "", metrics_text(run), ""]
    lines += ["## Intended use", "", intended_use or INTENDED_USE.get(task, "Research use."), ""]
    lines += ["## Limitations", "", limitations or LIMITATIONS, ""]
    lines += ["## Provenance", "", provenance_text(manifest, run, source), ""]
    return "\n".join(lines)


def write_model_card(
    folder: str | Path, manifest: Mapping[str, Any], run_dir: str | Path | None = None, **kwargs: Any
) -> Path:
    """Write :func:`model_card` as ``folder/README.md`` (refusing to overwrite one); returns its path."""
    path = Path(folder) / MODEL_CARD
    if path.exists():
        raise FileExistsError(f"{path} exists; nothing is overwritten.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(manifest, run_dir, **kwargs), encoding="utf-8")
    return path


def predicts_text(manifest: Mapping[str, Any]) -> str:
    labels = list(manifest.get("labels", []))
    threshold = manifest.get("threshold")
    encoder = manifest.get("encoder") or {}
    text = [
        f"One probability per label ({len(labels)}), in this order: "
        + ", ".join(f"`{x}`" for x in labels)
        + ".",
        f"A label is 1 when its probability is above the threshold {threshold}.",
    ]
    if manifest.get("task") == "crossdl_discretizer":
        text.append(
            "Per Findings sentence: region probabilities then abnormality-type probabilities; reports become "
            "region x type matrices (`SentenceDiscretizer.predict`, `reportsup-discretize`)."
        )
    if encoder.get("name"):
        pre = manifest.get("text_preprocessing") or {}
        text.append(
            f"Encoder: `{encoder.get('name')}` (from {encoder.get('source')}); preprocessing: lower case "
            f"{pre.get('lowercase')}, line breaks to spaces {pre.get('line_breaks_to_spaces')}, at most "
            f"{pre.get('max_length')} tokens."
        )
    return " ".join(text)


def training_data_text(run: Path | None) -> str:
    if run is None:
        return "No training run was given at export, so no data summary is recorded here."
    parts = []
    splits_path = run / rd.SPLITS_CSV
    if splits_path.is_file():
        splits = pd.read_csv(splits_path, dtype=str)
        counts = splits.groupby("split").agg(n=("id", "size"), patients=("patient_id", "nunique"))
        rows = [f"| {name} | {n} | {patients} |" for name, n, patients in counts.itertuples()]
        parts.append(
            f"Split by patient (`{rd.SPLITS_CSV}` of the run):\n\n| split | items | patients |\n|---|---:|---:|\n"
            + "\n".join(rows)
        )
    summary_path = run / rd.DATA_SUMMARY
    if summary_path.is_file():
        summary = rd.read_json(summary_path)
        parts.append(f"`{rd.DATA_SUMMARY}` of the run:\n\n```json\n{json.dumps(summary, indent=2)}\n```")
    return "\n\n".join(parts) or f"The run folder {run.name} holds no {rd.SPLITS_CSV} or {rd.DATA_SUMMARY}."


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def metrics_text(run: Path | None) -> str:
    """``metrics.json`` (``{test_set: {label: {metric: {value, ci_low, ci_high}}}}``) as a table."""
    if run is None or not (run / rd.METRICS_JSON).is_file():
        return "No test metrics recorded (no `metrics.json` in the training run)."
    metrics = rd.read_metrics(run)
    rows = []
    for test_set, per_label in metrics.items():
        for label, per_metric in per_label.items():
            for metric, fields in per_metric.items():
                if not isinstance(fields, Mapping) or "value" not in fields:
                    continue
                ci = (
                    f"{_fmt(fields['ci_low'])} - {_fmt(fields['ci_high'])}"
                    if fields.get("ci_low") is not None
                    else ""
                )
                rows.append(f"| {test_set} | {label} | {metric} | {_fmt(fields['value'])} | {ci} |")
    header = "| test set | label | metric | value | 95% CI (patient bootstrap) |\n|---|---|---|---:|---|"
    return header + "\n" + "\n".join(rows)


def provenance_text(manifest: Mapping[str, Any], run: Path | None, source: ModelSource | None) -> str:
    items = [
        f"- exported with reportsup {__version__}; trained with reportsup {manifest.get('framework_version')}"
    ]
    if source is not None:
        items.append(f"- from `{source.path.name}` (SHA-256 `{source.sha256}`)")
    if run is not None and (run / rd.PROVENANCE_JSON).is_file():
        prov = rd.read_json(run / rd.PROVENANCE_JSON)
        git = prov.get("git") if isinstance(prov, Mapping) else None
        if isinstance(git, Mapping) and git.get("commit"):
            items.append(
                f"- training code: git commit `{git['commit']}`{' (dirty tree)' if git.get('dirty') else ''}"
            )
    return "\n".join(items)


__all__: Sequence[str] = ("PAPERS", "export_model", "export_report_model", "model_card", "write_model_card")

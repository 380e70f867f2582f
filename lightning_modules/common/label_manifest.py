"""The label manifest every checkpoint carries: what the outputs mean and how inputs must be prepared.

Someone who applies a checkpoint years later (bulk labelling an archive, Wood et al. 2021 labelled
121,556 reports) must know the label names and their order, the encoder and the exact tokenizer, the
text preprocessing and the decision threshold. With ``model.threshold=validation`` (issue 22 item 3)
the manifest also carries ``thresholds``, one per label chosen on the validation set, and
``threshold_choice`` (rule, target, and per label the cut-off with its validation sensitivity and
specificity); :func:`label_thresholds` is what the labelling tools apply. Loading a checkpoint checks the manifest against the
model it is loaded into and refuses a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reportsup.version import __version__

FRAMEWORK = "reportsup"


class CheckpointManifestError(ValueError):
    """A checkpoint without a manifest, or whose manifest does not match the model it is loaded into."""


def build_manifest(
    task: str,
    labels: Sequence[str],
    encoder_manifest: Mapping[str, Any],
    threshold: float,
    extra: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest of a model; ``thresholds``: ``{label: choose_threshold(...) result}`` when the
    thresholds were chosen on validation (:mod:`reportsup.analysis.youden`), stored as ``thresholds``
    (``prob > threshold`` is positive) and ``threshold_choice`` (how they were chosen)."""
    chosen = (
        {
            "thresholds": {label: float(c["threshold"]) for label, c in thresholds.items()},
            "threshold_choice": {
                "set": "validation",
                "per_label": {k: dict(v) for k, v in thresholds.items()},
            },
        }
        if thresholds
        else {}
    )
    return {
        "framework": FRAMEWORK,
        "framework_version": __version__,
        "task": task,
        "labels": list(labels),
        "threshold": float(threshold),
        "encoder": dict(encoder_manifest),
        "text_preprocessing": {
            "lowercase": encoder_manifest.get("lowercase"),
            "line_breaks_to_spaces": encoder_manifest.get("line_breaks_to_spaces", False),
            "max_length": encoder_manifest.get("max_length"),
            "tokenizer_sha256": encoder_manifest.get("tokenizer_sha256"),
        },
        **chosen,
        **dict(extra or {}),
    }


def label_thresholds(manifest: Mapping[str, Any]) -> dict[str, float]:
    """``{label: threshold}`` a labelling tool applies (``prob > threshold`` is 1): the threshold chosen
    on validation where the manifest has one, the manifest's single ``threshold`` for the other labels
    (and for every label of a checkpoint trained with a fixed threshold, or before issue 22)."""
    chosen = manifest.get("thresholds") or {}
    return {label: float(chosen.get(label, manifest["threshold"])) for label in manifest["labels"]}


def chosen_thresholds(manifest: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The per-label choices (``threshold_choice.per_label``) a manifest carries, ``{}`` when none: what a
    model restores from its checkpoint so that testing reports the metrics at them."""
    return {
        k: dict(v) for k, v in ((manifest or {}).get("threshold_choice") or {}).get("per_label", {}).items()
    }


def check_manifest(
    found: Mapping[str, Any] | None, expected: Mapping[str, Any], where: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointManifestError` unless ``found`` describes the same task, labels and tokenizer."""
    if not found:
        raise CheckpointManifestError(
            f"{where} has no label manifest: it was not written by {FRAMEWORK} "
            "(or by a version before manifests); its outputs cannot be interpreted safely."
        )
    if found.get("framework") != FRAMEWORK:
        raise CheckpointManifestError(f"{where} was written by {found.get('framework')!r}, not {FRAMEWORK}.")
    if str(found.get("framework_version", "0")).split(".")[0] != __version__.split(".")[0]:
        raise CheckpointManifestError(
            f"{where} comes from {FRAMEWORK} {found.get('framework_version')}; this is "
            f"{__version__} (different major version). Use a matching {FRAMEWORK} release."
        )
    for key in ("task", "labels"):
        if found.get(key) != expected.get(key):
            raise CheckpointManifestError(
                f"{where}: {key} {found.get(key)!r} in the checkpoint, but the model "
                f"being loaded expects {expected.get(key)!r}. Set data.labels (and the "
                "experiment) to match the checkpoint, in the same order."
            )
    f_tok = found.get("text_preprocessing", {}).get("tokenizer_sha256")
    e_tok = expected.get("text_preprocessing", {}).get("tokenizer_sha256")
    if f_tok != e_tok:
        raise CheckpointManifestError(
            f"{where}: tokenizer {f_tok} differs from the current encoder's {e_tok} "
            f"(encoder {found.get('encoder', {}).get('name')!r}); token ids would mean "
            "different words. Load the checkpoint with its own encoder."
        )

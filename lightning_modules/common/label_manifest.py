"""The label manifest every checkpoint carries: what the outputs mean and how inputs must be prepared.

Someone who applies a checkpoint years later (bulk labelling an archive, Wood et al. 2021 labelled
121,556 reports) must know the label names and their order, the encoder and the exact tokenizer, the
text preprocessing and the decision threshold. Loading a checkpoint checks the manifest against the
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
) -> dict[str, Any]:
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
        **dict(extra or {}),
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

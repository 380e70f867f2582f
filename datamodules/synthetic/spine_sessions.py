"""Sessions of the synthetic lumbar-spine data set: the two truths per finding, and where findings sit.

The spine counterpart of :mod:`datamodules.synthetic.lesion_spec`: what one session *is*, shared by the
report text (:mod:`datamodules.synthetic.text.spine_reports`), the radiographs
(:mod:`datamodules.synthetic.images.spine_radiographs`) and the data-set writer
(:mod:`datamodules.synthetic.datasets.spine`). Modelled on the spine paper's "Data, Images and Outputs":

* A **session** is one standing coronal (AP) and one sagittal (lateral) radiograph of the lumbar spine
  plus the radiologist's report. Patients have one to three sessions, so patient-level splitting is
  exercised.
* Every session has two truths per finding (:data:`~reportsup.contracts.labels.spine.FINDINGS`): what the
  radiographs show (``<finding>_image``, the label a human gives reading images and report: the
  paper's 204-couple test set and 481-couple refinement set) and what the report states
  (``<finding>_report``, the label a human gives reading the report: the NLP development set). They
  disagree at ``report_noise`` per finding, the label noise of the paper's Discussion: findings left
  out of the report as clinically irrelevant (osteophytes, post-operative reports), or olistheses
  reported from flexion-extension views that are not among the two standing images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from reportsup.contracts.labels.spine import FINDINGS, check_findings

#: marginal prevalence of each finding in the image truth (the defaults of :func:`sample_sessions`)
DEFAULT_PREVALENCE: dict[str, float] = {
    "instrumentation": 0.12,
    "loss_of_lordosis": 0.35,
    "facet_sclerosis": 0.35,
    "sij_degeneration": 0.25,
    "osteophytosis": 0.40,
    "osteoporosis": 0.20,
    "diffuse_degeneration": 0.30,
    "scoliosis": 0.30,
    "fractures": 0.12,
    "disc_narrowing": 0.45,
    "anterolisthesis": 0.18,
    "retrolisthesis": 0.12,
}

# Log-odds per standard deviation of age: degenerative findings and osteoporosis rise with age.
AGE_EFFECT: dict[str, float] = {
    "instrumentation": 0.2,
    "loss_of_lordosis": 0.5,
    "facet_sclerosis": 0.8,
    "sij_degeneration": 0.6,
    "osteophytosis": 0.9,
    "osteoporosis": 0.9,
    "diffuse_degeneration": 0.8,
    "scoliosis": 0.3,
    "fractures": 0.6,
    "disc_narrowing": 0.7,
    "anterolisthesis": 0.5,
    "retrolisthesis": 0.4,
}

# Log-odds per unit of a patient's latent "degenerative spine" score: these findings co-occur beyond
# age (the paper's occlusion maps were confounded by "frequent simultaneous presence").
DEGENERATION_EFFECT: dict[str, float] = {
    "facet_sclerosis": 0.5,
    "sij_degeneration": 0.4,
    "osteophytosis": 0.5,
    "diffuse_degeneration": 0.6,
    "disc_narrowing": 0.5,
    "anterolisthesis": 0.3,
    "retrolisthesis": 0.3,
}

#: probability that a finding of a patient's earlier session is seen again at the next one
PERSISTENCE = 0.8
#: how many sessions a patient has, and how often
SESSIONS_PER_PATIENT = ((1, 2, 3), (0.6, 0.3, 0.1))

#: the levels reports name, top to bottom
VERTEBRAE = ("L1", "L2", "L3", "L4", "L5", "S1")

# Where each finding tends to sit (index into VERTEBRAE: the vertebra, or the disc below it). One table
# for the report wording and the radiographs' anatomy, so both put findings at the paper's usual levels.
LEVEL_WEIGHTS: dict[str, tuple[float, ...]] = {
    "fractures": (0.4, 0.3, 0.15, 0.1, 0.05),
    "anterolisthesis": (0.0, 0.0, 0.15, 0.65, 0.2),
    "retrolisthesis": (0.25, 0.4, 0.3, 0.05, 0.0),
    "disc": (0.05, 0.1, 0.2, 0.35, 0.3),
}


def _check_prevalence(prevalence: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(DEFAULT_PREVALENCE)
    if prevalence:
        check_findings(list(prevalence), "prevalence")
        out.update({k: float(v) for k, v in prevalence.items()})
    bad = {k: v for k, v in out.items() if not 0.0 < v < 1.0}
    if bad:
        raise ValueError(f"prevalence: values must lie strictly between 0 and 1; got {bad}.")
    return out


def _intercepts(prevalence: Mapping[str, float]) -> dict[str, float]:
    """Log-odds intercepts so that each finding's marginal prevalence is about ``prevalence`` once age and
    the latent degeneration score (both standard normal) are added: the probit approximation
    ``E[sigmoid(b + s Z)] ~ sigmoid(b / sqrt(1 + pi s^2 / 8))`` solved for ``b``."""
    out = {}
    for f, p in prevalence.items():
        spread = AGE_EFFECT[f] ** 2 + DEGENERATION_EFFECT.get(f, 0.0) ** 2
        out[f] = math.log(p / (1 - p)) * math.sqrt(1 + math.pi * spread / 8)
    return out


def _draw_image_findings(
    age_z: float, degeneration: float, intercepts: Mapping[str, float], rng: np.random.Generator
) -> dict[str, int]:
    logits = np.array(
        [
            intercepts[f] + AGE_EFFECT[f] * age_z + DEGENERATION_EFFECT.get(f, 0.0) * degeneration
            for f in FINDINGS
        ]
    )
    draws = rng.random(len(FINDINGS)) < 1 / (1 + np.exp(-logits))
    return dict(zip(FINDINGS, draws.astype(int).tolist(), strict=True))


def sample_sessions(
    n_sessions: int,
    seed: int,
    report_noise: float = 0.08,
    prevalence: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """``n_sessions`` sessions with the image truth and the report truth of every finding.

    Columns: ``session_id`` (S00001...), ``patient_id`` (P00001...; 1-3 sessions each), ``report_id``
    (R00001...), ``age``, ``anatomy_seed`` (one per patient: the same bones in every session of a
    patient), ``<finding>_image`` (0/1: visible in the radiographs) and ``<finding>_report`` (0/1: stated
    in the report). Findings rise with age and share a latent degeneration score, like real degenerative
    spines, but each one is drawn separately. A later session of a patient keeps each finding of the
    earlier one with probability :data:`PERSISTENCE`, else draws it anew. The report flips each finding of
    the image truth with probability ``report_noise`` (the label noise of the paper's Discussion).
    """
    if n_sessions < 1:
        raise ValueError(f"n_sessions={n_sessions}: need at least one session.")
    if not 0.0 <= report_noise <= 1.0:
        raise ValueError(f"report_noise={report_noise}: a probability in [0, 1].")
    intercepts = _intercepts(_check_prevalence(prevalence))
    rng = np.random.default_rng([seed, 0x5E55])
    rows: list[dict[str, Any]] = []
    patient = 0
    while len(rows) < n_sessions:
        patient += 1
        age = float(np.clip(rng.normal(58, 16), 18, 95))
        degeneration = float(rng.normal())
        anatomy_seed = int(rng.integers(2**31))
        n_here = int(rng.choice(SESSIONS_PER_PATIENT[0], p=SESSIONS_PER_PATIENT[1]))
        image: dict[str, int] | None = None
        for _ in range(min(n_here, n_sessions - len(rows))):
            age_z = (age - 58) / 16
            fresh = _draw_image_findings(age_z, degeneration, intercepts, rng)
            keep = rng.random(len(FINDINGS)) < PERSISTENCE
            if image is not None:
                fresh = {f: image[f] if k else fresh[f] for f, k in zip(FINDINGS, keep, strict=True)}
            image = fresh
            flips = rng.random(len(FINDINGS)) < report_noise
            n = len(rows) + 1
            row: dict[str, Any] = {
                "session_id": f"S{n:05d}",
                "patient_id": f"P{patient:05d}",
                "report_id": f"R{n:05d}",
                "age": int(round(age)),
                "anatomy_seed": anatomy_seed,
            }
            row.update({f"{f}_image": image[f] for f in FINDINGS})
            row.update({f"{f}_report": int(image[f] ^ flip) for f, flip in zip(FINDINGS, flips, strict=True)})
            rows.append(row)
            age += float(rng.uniform(0.3, 2.0))  # follow-up sessions come months to years later
    return pd.DataFrame(rows)

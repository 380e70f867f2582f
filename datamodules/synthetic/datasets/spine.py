"""A seeded synthetic lumbar-spine data set: Italian X-ray reports, coronal + sagittal radiograph
phantoms and the human / report labels of the spine study (NLP-labelled ResNet-18 training).

Modelled on the paper's "Data, Images and Outputs" and Figure 1:

* A **session** is one standing coronal (AP) and one sagittal (lateral) radiograph of the lumbar spine
  plus the radiologist's report, written in Italian and unstructured. Patients have one to three
  sessions, so patient-level splitting is exercised.
* Every session has two truths per finding (:data:`~reportsup.contracts.labels.spine.FINDINGS`): what the
  radiographs show (``<finding>_image``, the label a human gives reading images and report: the
  paper's 204-couple test set and 481-couple refinement set) and what the report states
  (``<finding>_report``, the label a human gives reading the report: the NLP development set). They
  disagree at ``report_noise`` per finding, the label noise of the paper's Discussion: findings left
  out of the report as clinically irrelevant (osteophytes, post-operative reports), or olistheses
  reported from flexion-extension views that are not among the two standing images.
* The phantoms draw each finding from the image truth, never from the report.

Written by :func:`write_spine_dataset` (roles by patient, as Figure 1)::

    reports_annotated.csv   report_id, patient_id, text, <finding>...  NLP development reports (report truth)
    reports.csv             report_id, patient_id, text                the whole archive, to machine-label
    views.csv               session_id, patient_id, report_id, view, image (absolute path): every image
    images/<session_id>_<view>.png|.dcm   16-bit PNG, or DICOM (CR, 12 bits; half MONOCHROME1)
    test_labels.csv         session_id, <finding>...                   image truth of the test patients
    refinement_labels.csv   session_id, <finding>...                   image truth of the refinement set
    sessions.csv            everything: both truths, age, anatomy_seed, role (nlp | test | train),
                            refinement (0/1), image_format (png | dicom_monochrome1 | dicom_monochrome2)

Everything is drawn from seeded generators: the same arguments give the same text and pixels.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from datamodules.synthetic.writing import write_once
from reportsup.contracts.labels.spine import FINDINGS, VIEWS, check_findings

#: stored range of the radiographs: 12 bits (DICOM BitsStored 12)
MAX_VALUE = 4095

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

# Where each finding shows in the phantoms (the findings' "expected views"; tests check this).
FINDING_VIEWS: dict[str, tuple[str, ...]] = {
    "instrumentation": ("coronal", "sagittal"),
    "loss_of_lordosis": ("sagittal",),
    "facet_sclerosis": ("coronal", "sagittal"),
    "sij_degeneration": ("coronal",),
    "osteophytosis": ("coronal", "sagittal"),
    "osteoporosis": ("coronal", "sagittal"),
    "diffuse_degeneration": ("coronal", "sagittal"),
    "scoliosis": ("coronal",),
    "fractures": ("coronal", "sagittal"),
    "disc_narrowing": ("coronal", "sagittal"),
    "anterolisthesis": ("sagittal",),
    "retrolisthesis": ("sagittal",),
}


# ---------------------------------------------------------------------------------------------------
# Sessions: the two truths per finding
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# Italian reports
# ---------------------------------------------------------------------------------------------------
VERTEBRAE = ("L1", "L2", "L3", "L4", "L5", "S1")

HEADERS = (
    "RX RACHIDE LOMBOSACRALE IN DUE PROIEZIONI IN ORTOSTATISMO",
    "RX RACHIDE LOMBARE AP E LL IN ORTOSTATISMO",
    "RX COLONNA LOMBOSACRALE IN ORTOSTATISMO (AP + LATERALE)",
    "Rx rachide lombosacrale in due proiezioni in ortostatismo",
    # The paper's reports "often covered also flexion-extension radiographs acquired in the same session".
    "RX RACHIDE LOMBOSACRALE IN DUE PROIEZIONI IN ORTOSTATISMO E PROVE DINAMICHE IN FLESSO-ESTENSIONE",
)
QUESTIONS = (
    "Quesito clinico: lombalgia.",
    "Q.C.: lombosciatalgia {lato}.",
    "Quesito: dolore lombare cronico.",
    "Indicazione: lombalgia da carico.",
    "Quesito clinico: trauma recente.",
    "Motivo dell'esame: controllo.",
)
COMPARISONS = ("Confronto con precedente esame del {anno}.", "Rispetto al precedente controllo del {anno}:")
# Sentences that name none of the 12 findings (incidental or normal-anatomy remarks).
FILLERS = (
    "Regolare la trasparenza delle parti molli paravertebrali.",
    "Calcificazioni ateromasiche della parete aortica addominale.",
    "Meteorismo intestinale.",
    "Vertebra di transizione lombosacrale.",
    "Spina bifida occulta di S1.",
    "Esame eseguito in ortostatismo.",
    "Nei limiti i processi spinosi.",
)
CLOSINGS = ("Si consiglia correlazione clinica.", "A disposizione per eventuali chiarimenti.")
NORMAL_CONCLUSIONS = (
    "Reperto radiografico nei limiti della norma.",
    "Non alterazioni ossee di rilievo.",
    "Quadro radiografico nella norma.",
)
# Verbs that may introduce a positive noun phrase ("" = the phrase alone).
FRAMES = ("", "", "Si apprezza ", "Si segnala ", "Si rileva ", "Presenza di ")
# The verb agrees with a plural noun phrase ("si rilevano esiti di ...").
PLURAL_FRAMES = {
    "Si apprezza ": "Si apprezzano ",
    "Si segnala ": "Si segnalano ",
    "Si rileva ": "Si rilevano ",
}
PLURAL_STARTS = ("esiti", "mezzi", "diffuse", "osteofiti", "becchi", "segni", "iniziali")

# Positive statements as noun phrases, graded and hedged ones included. Placeholders: {v} a vertebra,
# {vn} the one below it, {disco} / {disco2} disc levels, {tratto} an instrumented segment,
# {lato} right/left, {conv} convexity.
POSITIVE: dict[str, tuple[str, ...]] = {
    "instrumentation": (
        "esiti di stabilizzazione con viti peduncolari e barre {tratto}",
        "esiti di artrodesi posteriore {tratto} con mezzi di sintesi in sede",
        "mezzi di sintesi metallici: viti transpeduncolari e barre di connessione {tratto}",
        "esiti di intervento di stabilizzazione {tratto} con cage intersomatica",
    ),
    "loss_of_lordosis": (
        "riduzione della fisiologica lordosi lombare",
        "rettilineizzazione del rachide lombare",
        "lieve riduzione della lordosi lombare",
        "inversione della fisiologica lordosi lombare",
        "lordosi lombare ridotta",
    ),
    "facet_sclerosis": (
        "sclerosi delle faccette articolari {disco} e {disco2}",
        "sclerosi delle faccette articolari",
        "artrosi interapofisaria posteriore ai livelli lombari inferiori",
        "ipertrofia artrosica delle articolazioni interapofisarie {disco}",
        "iniziale sclerosi delle articolazioni zigoapofisarie",
    ),
    "sij_degeneration": (
        "sclerosi delle articolazioni sacroiliache",
        "sclerosi della rima articolare sacroiliaca {lato}",
        "segni di artrosi sacroiliaca bilaterale",
        "iniziali alterazioni degenerative delle sacroiliache",
    ),
    "osteophytosis": (
        "osteofitosi marginale somatica",
        "osteofiti marginali anteriori ai metameri {disco} e {disco2}",
        "iniziale osteofitosi dei margini somatici",
        "becchi osteofitosici marginali somatici",
        "lieve osteofitosi marginale anteriore",
    ),
    "osteoporosis": (
        "demineralizzazione ossea diffusa",
        "osteopenia diffusa",
        "rarefazione della trama ossea come per osteoporosi",
        "ridotta densità minerale ossea",
    ),
    "diffuse_degeneration": (
        "spondiloartrosi diffusa",
        "diffuse alterazioni degenerative spondiloartrosiche",
        "segni di spondilosi diffusa del rachide lombare",
        "quadro di spondiloartrosi lombare multilivello",
    ),
    "scoliosis": (
        "atteggiamento scoliotico {conv}",
        "scoliosi lombare {conv}",
        "lieve atteggiamento scoliotico a convessità {lato}",
        "modesta scoliosi dorso-lombare",
    ),
    "fractures": (
        "frattura/cedimento somatico di {v}",
        "cedimento somatico di {v}",
        "frattura a cuneo del soma di {v} di verosimile natura osteoporotica",
        "esiti di frattura del corpo vertebrale di {v}",
        "modesto cedimento della limitante somatica superiore di {v}",
    ),
    "disc_narrowing": (
        "lieve riduzione dello spazio discale {disco}",
        "riduzione in altezza degli spazi intersomatici {disco} e {disco2}",
        "discopatia {disco} con riduzione dello spazio intersomatico",
        "marcata riduzione dello spazio intersomatico {disco}",
    ),
    "anterolisthesis": (
        "iniziale anterolistesi di {v} su {vn}",
        "anterolistesi di I grado di {v} su {vn}",
        "spondilolistesi di {v} su {vn}",
        "lieve scivolamento anteriore di {v} rispetto a {vn}",
    ),
    "retrolisthesis": (
        "retrolistesi di {v}",
        "lieve retrolistesi di {v} su {vn}",
        "minima retrolistesi di {v}",
        "scivolamento posteriore di {v} rispetto a {vn}",
    ),
}

# Where each finding tends to sit (index into VERTEBRAE: the vertebra, or the disc below it).
LEVEL_WEIGHTS: dict[str, tuple[float, ...]] = {
    "fractures": (0.4, 0.3, 0.15, 0.1, 0.05),
    "anterolisthesis": (0.0, 0.0, 0.15, 0.65, 0.2),
    "retrolisthesis": (0.25, 0.4, 0.3, 0.05, 0.0),
    "disc": (0.05, 0.1, 0.2, 0.35, 0.3),
}

# Explicit negations. A phrase may cover several findings ("non segni di listesi" negates both
# olistheses): it is used only when every finding it covers is negative.
NEGATIONS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("anterolisthesis", "retrolisthesis"),
        ("Non segni di listesi.", "Non listesi.", "Non evidenti listesi."),
    ),
    (
        ("anterolisthesis", "retrolisthesis", "scoliosis"),
        ("Non alterazioni dell'allineamento.", "Conservato l'allineamento dei somi vertebrali."),
    ),
    (("anterolisthesis", "retrolisthesis", "fractures"), ("Non listesi né fratture.",)),
    (
        ("osteophytosis", "diffuse_degeneration", "facet_sclerosis", "disc_narrowing", "sij_degeneration"),
        ("Non significative alterazioni degenerative.",),
    ),
    (("anterolisthesis",), ("Non anterolistesi.",)),
    (("retrolisthesis",), ("Non retrolistesi.",)),
    (
        ("fractures",),
        (
            "Non evidenti fratture.",
            "Non segni di cedimenti somatici.",
            "Conservata l'altezza dei corpi vertebrali.",
        ),
    ),
    (
        ("loss_of_lordosis",),
        ("Conservata la lordosi lombare.", "Fisiologica lordosi lombare.", "Lordosi lombare nei limiti."),
    ),
    (
        ("scoliosis",),
        ("Non alterazioni dell'allineamento sul piano frontale.", "Non atteggiamento scoliotico."),
    ),
    (
        ("disc_narrowing",),
        ("Conservata l'altezza degli spazi intersomatici.", "Spazi discali di altezza regolare."),
    ),
    (("osteoporosis",), ("Normale la mineralizzazione ossea.", "Regolare la densità ossea.")),
    (("osteophytosis",), ("Non osteofitosi marginale.", "Non osteofiti somatici.")),
    (("diffuse_degeneration",), ("Non segni di spondiloartrosi diffusa.",)),
    (
        ("facet_sclerosis",),
        ("Regolari le articolazioni interapofisarie.", "Non segni di artrosi interapofisaria."),
    ),
    (("sij_degeneration",), ("Regolari le articolazioni sacroiliache.", "Sacroiliache nei limiti.")),
    (("instrumentation",), ("Non mezzi di sintesi.",)),
)


def _fill(template: str, finding: str, rng: random.Random) -> str:
    """Fill a phrase's placeholders with plausible levels: olistheses and fractures at their typical
    vertebrae, discs mostly lower lumbar, instrumentation over two or three vertebrae."""
    weights = LEVEL_WEIGHTS.get(finding, LEVEL_WEIGHTS["fractures"])
    v = rng.choices(range(5), weights=weights)[0]
    disc = rng.choices(range(5), weights=LEVEL_WEIGHTS["disc"])[0]
    disc2 = min(disc + 1, 4) if disc < 4 else 3
    top = rng.choice((2, 3, 3, 4))
    bottom = min(top + rng.choice((1, 2)), 5)
    return template.format(
        v=VERTEBRAE[v],
        vn=VERTEBRAE[v + 1],
        disco=f"{VERTEBRAE[disc]}-{VERTEBRAE[disc + 1]}",
        disco2=f"{VERTEBRAE[disc2]}-{VERTEBRAE[disc2 + 1]}",
        tratto=f"{VERTEBRAE[top]}-{VERTEBRAE[bottom]}",
        lato=rng.choice(("destra", "sinistra")),
        conv=rng.choice(("sinistro-convesso", "destro-convesso")),
    )


def _sentence(noun_phrase: str, rng: random.Random) -> str:
    frame = rng.choice(FRAMES)
    if noun_phrase.startswith(PLURAL_STARTS):
        frame = PLURAL_FRAMES.get(frame, frame)
    text = frame + noun_phrase if frame else noun_phrase[0].upper() + noun_phrase[1:]
    return text + "."


def _positive_sentences(positives: Sequence[str], rng: random.Random) -> list[str]:
    """One phrase per positive finding; now and then two chained in one sentence ("... con ..."),
    the "long sentences" and "clause chaining" the paper found hardest for the NLP."""
    phrases = [_fill(rng.choice(POSITIVE[f]), f, rng) for f in positives]
    rng.shuffle(phrases)
    sentences = []
    while phrases:
        first = phrases.pop()
        if phrases and rng.random() < 0.25:
            first = f"{first}{rng.choice((' con ', ', ', ' e ', '; '))}{phrases.pop()}"
        sentences.append(_sentence(first, rng))
    return sentences


def _negation_sentences(negatives: set[str], rng: random.Random) -> list[str]:
    """Explicit negations for some of the negative findings (the rest are simply not mentioned). How
    many a radiologist lists varies from report to report."""
    options = list(NEGATIONS)
    rng.shuffle(options)
    rate = rng.uniform(0.1, 0.7)
    covered: set[str] = set()
    out = []
    for group, phrases in options:
        if set(group) <= negatives and not covered & set(group) and rng.random() < rate:
            out.append(rng.choice(phrases))
            covered |= set(group)
    return out


def _typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters in one longer word: the typing and speech-recognition slips the paper
    names among the NLP's error sources."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 6 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _layout_lines(sentences: Sequence[str], rng: random.Random) -> str:
    """Sentences on their own lines or run together, with an occasional line break mid-sentence (the
    NLP replaces line terminators with spaces, so the text must not rely on them)."""
    lines: list[str] = []
    for s in sentences:
        if rng.random() < 0.08 and " " in s:
            words = s.split(" ")
            cut = rng.randrange(1, len(words))
            s = " ".join(words[:cut]) + "\n" + " ".join(words[cut:])
        if lines and rng.random() < 0.35:
            lines[-1] += " " + s
        else:
            lines.append(s)
    return "\n".join(lines)


def write_report(findings: Mapping[str, int], rng: random.Random) -> str:
    """A multi-line Italian lumbar-spine X-ray report stating ``findings`` (finding -> 0/1; missing = 0).

    Each positive finding gets one phrasing (graded or hedged ones included, levels L1-S1 varying);
    a negative one is either omitted or explicitly negated, a negation covering several findings only
    when all of them are negative. A report with no positive finding may close with a normal
    conclusion. Header in capitals, body in sentence case or (one report in five) all capitals, as
    dictated reports are; the paper's NLP lower-cases and joins lines before classifying.
    """
    check_findings(list(findings), "write_report findings")
    positives = [f for f in FINDINGS if int(findings.get(f, 0)) == 1]
    negatives = set(FINDINGS) - set(positives)
    head = [rng.choice(HEADERS)]
    if rng.random() < 0.6:
        head.append(rng.choice(QUESTIONS).format(lato=rng.choice(("destra", "sinistra"))))
    if rng.random() < 0.2:
        head.append(rng.choice(COMPARISONS).format(anno=rng.randint(2008, 2016)))
    body = _positive_sentences(positives, rng) + _negation_sentences(negatives, rng)
    rng.shuffle(body)
    body += rng.sample(FILLERS, k=rng.choice((0, 0, 1, 2)))
    if not positives and (rng.random() < 0.7 or not body):
        body.append(rng.choice(NORMAL_CONCLUSIONS))
    elif positives and rng.random() < 0.2:
        body.append(rng.choice(CLOSINGS))
    text = _layout_lines(body, rng)
    if rng.random() < 0.2:
        text = text.upper()
    if rng.random() < 0.1:
        text = _typo(text, rng)
    return "\n".join(head) + ("\n\n" if rng.random() < 0.5 else "\n") + text


# ---------------------------------------------------------------------------------------------------
# Radiograph phantoms
# ---------------------------------------------------------------------------------------------------
#: horizontal centre of the column and top of L1, as fractions of the image
X0, COLUMN_TOP = 0.5, 0.1
#: attenuation of steel and titanium: saturates the detector
METAL = 3.0


class _Canvas:
    """An attenuation map in normalised coordinates (0..1 across the image, y downwards). Shapes add
    their attenuation, as overlapping structures do along an X-ray beam; each is evaluated only in its
    bounding box, which keeps rendering fast."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.image = np.zeros((size, size), np.float32)
        self.grid = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
        self.soft = 0.8 / size  # antialiasing: about one pixel of edge blur

    def _window(self, lo: np.ndarray, hi: np.ndarray):
        s = self.size
        x0, y0 = (max(int(math.floor(v * s)), 0) for v in lo)
        x1, y1 = (min(int(math.ceil(v * s)) + 1, s) for v in hi)
        if x0 >= x1 or y0 >= y1:
            return None
        return (slice(y0, y1), slice(x0, x1)), self.grid[x0:x1][None, :], self.grid[y0:y1][:, None]

    def _paint(self, sdf: Callable, lo, hi, fill: float, edge: float, edge_width: float, blur: float) -> None:
        """Add ``fill`` inside the signed-distance field ``sdf(x, y)`` and a cortex-like ring of
        ``edge`` just inside its border."""
        win = self._window(np.asarray(lo), np.asarray(hi))
        if win is None:
            return
        where, x, y = win
        d = sdf(x, y)
        blur = max(blur, self.soft)
        value = fill / (1 + np.exp(np.clip(d / blur, -30, 30)))
        if edge:
            value = value + edge * np.exp(-(((d + edge_width) / edge_width) ** 2))
        self.image[where] += value.astype(np.float32)

    def polygon(
        self,
        corners: np.ndarray,
        fill: float,
        edge: float = 0.0,
        edge_width: float = 0.004,
        rounding: float = 0.006,
        blur: float = 0.0,
    ) -> None:
        """A convex polygon with rounded corners (a soft maximum of the edges' half-plane distances)."""
        pts = np.asarray(corners, np.float32)
        centre = pts.mean(axis=0)
        starts, ends = pts, np.roll(pts, -1, axis=0)
        normals = np.stack([ends[:, 1] - starts[:, 1], starts[:, 0] - ends[:, 0]], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        flip = np.einsum("ij,ij->i", centre - starts, normals) > 0
        normals[flip] *= -1
        offsets = np.einsum("ij,ij->i", starts, normals)
        k = max(rounding, 1e-4)

        def sdf(x, y):
            d = (
                normals[:, 0, None, None] * x[None]
                + normals[:, 1, None, None] * y[None]
                - offsets[:, None, None]
            )
            top = d.max(axis=0)
            return top + k * np.log(np.exp((d - top) / k).sum(axis=0))

        margin = 4 * max(blur, self.soft) + 2 * edge_width + k
        self._paint(sdf, pts.min(0) - margin, pts.max(0) + margin, fill, edge, edge_width, blur)

    def ellipse(
        self,
        centre: Sequence[float],
        radii: Sequence[float],
        fill: float,
        angle: float = 0.0,
        edge: float = 0.0,
        edge_width: float = 0.004,
        blur: float = 0.0,
    ) -> None:
        cx, cy = centre
        rx, ry = radii
        c, s = math.cos(angle), math.sin(angle)

        def sdf(x, y):
            u = (x - cx) * c + (y - cy) * s
            v = -(x - cx) * s + (y - cy) * c
            return (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1) * min(rx, ry)

        r = max(rx, ry) + 4 * max(blur, self.soft) + 2 * edge_width
        self._paint(sdf, (cx - r, cy - r), (cx + r, cy + r), fill, edge, edge_width, blur)

    def polyline(
        self, points: np.ndarray, radii: Sequence[float] | float, fill: float, blur: float = 0.0
    ) -> None:
        """A chain of capsules (radius per segment): rods, screws, joint lines, irregular sclerotic bands."""
        pts = np.asarray(points, np.float32)
        a, b = pts[:-1], pts[1:]
        r = np.broadcast_to(np.asarray(radii, np.float32), (len(a),))
        ab = b - a
        length2 = np.maximum((ab**2).sum(axis=1), 1e-12)

        def sdf(x, y):
            px = x[None] - a[:, 0, None, None]
            py = y[None] - a[:, 1, None, None]
            t = np.clip(
                (px * ab[:, 0, None, None] + py * ab[:, 1, None, None]) / length2[:, None, None], 0, 1
            )
            dx = px - t * ab[:, 0, None, None]
            dy = py - t * ab[:, 1, None, None]
            return (np.sqrt(dx**2 + dy**2) - r[:, None, None]).min(axis=0)

        margin = float(r.max()) + 4 * max(blur, self.soft)
        self._paint(sdf, pts.min(0) - margin, pts.max(0) + margin, fill, 0.0, 1.0, blur)


@dataclass(frozen=True)
class _Anatomy:
    """A patient's bones and the shape each finding takes in them; drawn whether or not the finding is
    present, so that toggling one finding changes nothing else in the image."""

    scale: float
    body_h: np.ndarray  # (5,) L1-L5 body heights
    body_w: np.ndarray  # (5,) coronal widths
    body_d: np.ndarray  # (5,) sagittal depths
    disc_h: np.ndarray  # (5,) L1-L2 ... L5-S1
    bone: float  # bone density of this patient
    tissue: float  # soft-tissue attenuation (body habitus)
    tissue_w: float
    lordosis: float  # sagittal curve amplitude when lordosis is preserved
    lost_lordosis: float  # ... when lost (straight or kyphotic)
    sacral_tilt: float
    lateral_dev: float  # normal coronal deviation
    scoliosis_amp: float  # signed
    scoliosis_waves: int  # 1: C curve, 2: S curve
    fracture_level: int
    fracture_sag: float  # anterior height ratio of the wedge
    fracture_cor: float  # coronal height ratio
    narrow_levels: tuple[int, ...]
    narrow_ratio: float
    osteophytes: tuple[tuple[int, int, float], ...]  # (vertebra, corner, length)
    endplates: tuple[tuple[int, int, float, float], ...]  # (vertebra, top/bottom, phase, frequency)
    antero_level: int
    antero_shift: float  # fraction of body depth
    retro_level: int
    retro_shift: float
    facet_levels: tuple[int, ...]
    facet_gain: float
    facet_size: float  # this patient's normal facet size
    sij_sides: tuple[int, ...]  # degenerated joints: -1 image left, +1 image right
    sij_phase: float
    sij_cortex: float  # brightness of normal subchondral bone
    instrumented: tuple[int, ...]  # vertebrae with screws (5 = S1)
    cage: bool
    porosis: float  # bone density factor when osteoporotic
    pelvis_w: float


def _choose(rng: np.random.Generator, weights: Sequence[float]) -> int:
    w = np.asarray(weights, float)
    return int(rng.choice(len(w), p=w / w.sum()))


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient's anatomy (every draw is made, in a fixed order, for every patient)."""
    s = float(rng.uniform(0.9, 1.08))
    body_h = 0.074 * s * np.array([1.0, 1.02, 1.04, 1.05, 1.03]) * rng.normal(1, 0.03, 5)
    body_w = 0.165 * s * np.array([1.0, 1.04, 1.08, 1.12, 1.16]) * rng.normal(1, 0.03, 5)
    body_d = 0.12 * s * np.array([1.0, 1.03, 1.06, 1.08, 1.08]) * rng.normal(1, 0.03, 5)
    disc_h = 0.032 * s * np.array([0.95, 1.0, 1.05, 1.05, 0.9]) * rng.uniform(0.88, 1.12, 5)
    n_narrow = 1 + int(rng.random() < 0.5)
    narrow = tuple(sorted(rng.choice(5, size=n_narrow, replace=False, p=np.array(LEVEL_WEIGHTS["disc"]))))
    n_osteo = int(rng.integers(2, 5))
    osteophytes = tuple(
        (int(v), int(c), float(rng.uniform(0.015, 0.028) * s))
        for v in rng.choice(5, size=n_osteo, replace=False)
        for c in rng.choice(4, size=int(rng.integers(2, 5)), replace=False)
    )
    endplates = tuple(
        (int(v), int(side), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(2.5, 4.5)))
        for v in rng.choice(5, size=int(rng.integers(3, 6)), replace=False)
        for side in (0, 1)
    )
    top = int(rng.choice((2, 3, 3, 4)))
    bottom = min(top + int(rng.choice((1, 2))), 5)
    sides = ((-1, 1), (-1,), (1,))[_choose(rng, (0.7, 0.15, 0.15))]
    return _Anatomy(
        scale=s,
        body_h=body_h,
        body_w=body_w,
        body_d=body_d,
        disc_h=disc_h,
        bone=float(rng.normal(1.0, 0.1)),
        tissue=float(rng.uniform(0.2, 0.34)),
        tissue_w=float(rng.uniform(0.75, 1.0)),
        lordosis=float(rng.uniform(0.045, 0.07) * s),
        lost_lordosis=float(rng.uniform(-0.025, 0.005) * s),
        sacral_tilt=float(rng.uniform(0.3, 0.5)),
        lateral_dev=float(rng.uniform(-0.01, 0.01)),
        scoliosis_amp=float(rng.uniform(0.03, 0.06) * s * rng.choice((-1, 1))),
        scoliosis_waves=1 + int(rng.random() < 0.3),
        fracture_level=_choose(rng, LEVEL_WEIGHTS["fractures"]),
        fracture_sag=float(rng.uniform(0.4, 0.55)),
        fracture_cor=float(rng.uniform(0.5, 0.65)),
        narrow_levels=tuple(int(n) for n in narrow),
        narrow_ratio=float(rng.uniform(0.12, 0.28)),
        osteophytes=osteophytes,
        endplates=endplates,
        antero_level=_choose(rng, LEVEL_WEIGHTS["anterolisthesis"]),
        antero_shift=float(rng.uniform(0.3, 0.42)),
        retro_level=_choose(rng, LEVEL_WEIGHTS["retrolisthesis"][:3]),
        retro_shift=float(rng.uniform(0.25, 0.35)),
        facet_levels=tuple(
            int(v) for v in sorted(rng.choice(np.arange(1, 5), size=int(rng.integers(2, 4)), replace=False))
        ),
        facet_gain=float(rng.uniform(1.25, 1.55)),
        facet_size=float(rng.uniform(0.85, 1.2)),
        sij_sides=sides,
        sij_phase=float(rng.uniform(0, 2 * math.pi)),
        sij_cortex=float(rng.uniform(0.08, 0.2)),
        instrumented=tuple(range(top, bottom + 1)),
        cage=bool(rng.random() < 0.5),
        porosis=float(rng.uniform(0.5, 0.68)),
        pelvis_w=float(rng.uniform(0.95, 1.1) * s),
    )


@dataclass(frozen=True)
class _Body:
    """One vertebral body: centre, tilt ``theta`` (radians, of its long axis from vertical), half
    width, and its height on the local -u side (left / anterior) and +u side (right / posterior)."""

    centre: np.ndarray
    theta: float
    half_w: float
    h_neg: float
    h_pos: float

    def point(self, u: float, v: float) -> np.ndarray:
        """Image coordinates of local ``(u, v)``: u across the body, v down along the column."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.centre + np.array([u * c + v * s, -u * s + v * c], np.float32)

    def corners(self) -> np.ndarray:
        """Top -u, top +u, bottom +u, bottom -u."""
        a = self.half_w
        return np.stack(
            [
                self.point(-a, -self.h_neg / 2),
                self.point(a, -self.h_pos / 2),
                self.point(a, self.h_pos / 2),
                self.point(-a, self.h_neg / 2),
            ]
        )


def _stack(
    h_neg: np.ndarray,
    h_pos: np.ndarray,
    half_w: np.ndarray,
    discs: np.ndarray,
    curve: Callable[[float], tuple[float, float]],
    shifts: np.ndarray,
    top: float = COLUMN_TOP,
) -> tuple[list[_Body], float]:
    """Stack five bodies and their discs down a centre line ``curve(t) -> (x, dx/dt)`` (t = 0 at the top
    of L1, 1 at the top of S1), each tilted along the curve and moved by ``shifts`` across it; return the
    bodies and the y of the S1 endplate."""
    h_mean = (h_neg + h_pos) / 2
    total = float(h_mean.sum() + discs.sum())
    y, bodies = top, []
    for i in range(5):
        yc = y + h_mean[i] / 2
        x, slope = curve((yc - top) / total)
        theta = math.atan(slope / total)
        body = _Body(np.array([x, yc], np.float32), theta, float(half_w[i]), float(h_neg[i]), float(h_pos[i]))
        bodies.append(_Body(body.point(float(shifts[i]), 0.0), theta, body.half_w, body.h_neg, body.h_pos))
        y += h_mean[i] + discs[i]
    return bodies, y


def _disc_heights(anat: _Anatomy, f: Mapping[str, int]) -> np.ndarray:
    discs = anat.disc_h.copy()
    if f["disc_narrowing"]:
        discs[list(anat.narrow_levels)] *= anat.narrow_ratio
    return discs


class _Density(NamedTuple):
    """Attenuation of trabecular bone (``fill``) and of the cortex (``cortex``, ``width`` thick)."""

    fill: float
    cortex: float
    width: float


def _bone_density(anat: _Anatomy, f: Mapping[str, int]) -> _Density:
    """Osteoporosis lowers the density and thins the cortex, so bone stands out less from the soft
    tissue (the paper's "osteopenia or osteoporosis", seen as a global loss of bone contrast)."""
    if f["osteoporosis"]:
        return _Density(0.3 * anat.bone * anat.porosis, 0.32 * anat.bone * 0.7, 0.0035)
    return _Density(0.3 * anat.bone, 0.32 * anat.bone, 0.0055)


def _draw_bodies(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density) -> None:
    for body in bodies:
        canvas.polygon(
            body.corners(), bone.fill, edge=bone.cortex, edge_width=bone.width, rounding=0.005 * anat.scale
        )


def _with_t12(bodies: list[_Body], anat: _Anatomy) -> list[_Body]:
    """T12 above L1, partly cut by the image border as on real lumbar films (no findings drawn on it)."""
    l1 = bodies[0]
    h = float(anat.body_h[0])
    t12 = _Body(l1.point(0, -(h + anat.disc_h[0])), l1.theta, l1.half_w * 0.96, h, h)
    return [t12, *bodies]


def _draw_osteophytes(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, sides: Sequence[int]) -> None:
    """Bright spurs (beaks) growing outwards and towards the disc from the body corners ``sides`` of
    the corner list (coronal: both sides; sagittal: the anterior corners)."""
    for v, corner, length in anat.osteophytes:
        body = bodies[v]
        side = (-1, 1, 1, -1)[corner]
        if side not in sides:
            continue
        up = -1 if corner in (0, 1) else 1
        h = body.h_neg if side < 0 else body.h_pos
        base = body.corners()[corner]
        tip = body.point(side * (body.half_w + 0.6 * length), up * (h / 2 + 0.5 * length))
        mid = (base + tip) / 2
        canvas.polyline(
            np.stack([base, mid, tip]), [0.006 * anat.scale, 0.0035 * anat.scale], 0.45 * anat.bone
        )


def _draw_endplate_sclerosis(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy) -> None:
    """Irregular sclerotic bands along the endplates of several levels (diffuse degeneration)."""
    u = np.linspace(-1, 1, 9)
    for v, side, phase, freq in anat.endplates:
        body = bodies[v]
        sign = -1 if side == 0 else 1
        wobble = 0.004 * anat.scale * np.sin(freq * u * math.pi + phase)
        pts = []
        for x, w in zip(u, wobble, strict=True):
            h = body.h_neg + (x + 1) / 2 * (body.h_pos - body.h_neg)  # the height varies across a wedge
            pts.append(body.point(x * body.half_w * 0.92, sign * (h / 2 - 0.006 * anat.scale) + w))
        pts = np.stack(pts)
        radii = 0.0032 * anat.scale * (1.3 + 0.7 * np.sin(2 * freq * u[:-1] + phase))
        canvas.polyline(pts, radii, 0.38 * anat.bone)


def _draw_facet(
    canvas: _Canvas,
    centre: np.ndarray,
    radii: tuple[float, float],
    angle: float,
    anat: _Anatomy,
    bone: _Density,
    sclerotic: bool,
) -> None:
    """A facet joint (the overlapping articular processes); sclerotic: larger, dense, thick-rimmed."""
    size = anat.facet_size * (anat.facet_gain if sclerotic else 1.0)
    r = (radii[0] * size, radii[1] * size)
    if sclerotic:
        canvas.ellipse(centre, r, 0.4 * anat.bone, angle=angle, edge=0.25 * anat.bone)
    else:
        canvas.ellipse(centre, r, bone.fill * 0.5, angle=angle, edge=bone.cortex * 0.3)


def _soft_tissue(canvas: _Canvas, centre_x: float, half_width: float, anat: _Anatomy) -> None:
    """The trunk's soft tissue: a broad, soft-edged ellipse whose density is the patient's habitus."""
    canvas.ellipse((centre_x, 0.55), (half_width, 0.8), anat.tissue, blur=0.03)


def _gas(canvas: _Canvas, x_range: tuple[float, float], gas: np.ndarray) -> None:
    """Bowel gas: dark blobs over the abdomen, positioned per session (distractors)."""
    for gx, gy, rx, ry, depth in gas:
        canvas.ellipse(
            (x_range[0] + gx * (x_range[1] - x_range[0]), 0.15 + 0.7 * gy), (rx, ry), -depth, blur=0.006
        )


def _coronal_curve(anat: _Anatomy, f: Mapping[str, int]) -> Callable[[float], tuple[float, float]]:
    """The column's centre line in the AP view: nearly straight, or a C / S scoliotic curve."""
    waves = anat.scoliosis_waves if f["scoliosis"] else 1
    # An S curve has two apices: a smaller sideways shift gives the same end-vertebra tilt as a C curve.
    amp = anat.scoliosis_amp * 0.65 ** (waves - 1) if f["scoliosis"] else anat.lateral_dev

    def curve(t: float) -> tuple[float, float]:
        return X0 + amp * math.sin(waves * math.pi * t), amp * waves * math.pi * math.cos(waves * math.pi * t)

    return curve


def _sagittal_curve(anat: _Anatomy, f: Mapping[str, int]) -> Callable[[float], tuple[float, float]]:
    """The centre line in the lateral view (anterior = image left): lordotic, or straight / kyphotic
    when lordosis is lost."""
    amp = anat.lost_lordosis if f["loss_of_lordosis"] else anat.lordosis

    def curve(t: float) -> tuple[float, float]:
        return X0 - amp * math.sin(math.pi * t), -amp * math.pi * math.cos(math.pi * t)

    return curve


def _fracture_heights(anat: _Anatomy, f: Mapping[str, int], view: str) -> tuple[np.ndarray, np.ndarray]:
    h_neg, h_pos = anat.body_h.copy(), anat.body_h.copy()
    if f["fractures"]:
        k = anat.fracture_level
        if view == "sagittal":  # wedge: the anterior wall collapses
            h_neg[k] *= anat.fracture_sag
            h_pos[k] *= 0.92
        else:
            h_neg[k] *= anat.fracture_cor
            h_pos[k] *= anat.fracture_cor
    return h_neg, h_pos


def _draw_fracture_line(canvas: _Canvas, body: _Body, anat: _Anatomy) -> None:
    """The bright band of trabecular impaction inside the collapsed body."""
    pts = np.stack(
        [body.point(-0.8 * body.half_w, -0.1 * body.h_neg), body.point(0.8 * body.half_w, -0.1 * body.h_pos)]
    )
    canvas.polyline(pts, 0.004 * anat.scale, 0.45 * anat.bone)


def _render_coronal(anat: _Anatomy, f: Mapping[str, int], size: int, gas: np.ndarray) -> np.ndarray:
    """AP view: L1-L5 with pedicles, transverse and spinous processes, facets, sacrum, iliac wings with
    the sacroiliac joints, femoral heads, soft tissue and bowel gas."""
    canvas = _Canvas(size)
    s = anat.scale
    _soft_tissue(canvas, X0, 0.5 * anat.tissue_w, anat)
    _gas(canvas, (0.12, 0.88), gas)
    for side in (-1, 1):  # psoas shadows
        psoas = np.array([[X0 + side * 0.07 * s, 0.12], [X0 + side * 0.16 * s, 0.7]])
        canvas.polyline(psoas, 0.04 * s, 0.05, blur=0.01)
    h_neg, h_pos = _fracture_heights(anat, f, "coronal")
    curve = _coronal_curve(anat, f)
    bodies, y_s1 = _stack(h_neg, h_pos, anat.body_w / 2, _disc_heights(anat, f), curve, np.zeros(5))
    bone = _bone_density(anat, f)
    all_bodies = _with_t12(bodies, anat)
    _draw_bodies(canvas, all_bodies, anat, bone)
    _draw_posterior_coronal(canvas, all_bodies, anat, bone)
    _draw_facets_coronal(canvas, bodies, anat, bone, bool(f["facet_sclerosis"]))
    if f["osteophytosis"]:
        _draw_osteophytes(canvas, bodies, anat, (-1, 1))
    if f["diffuse_degeneration"]:
        _draw_endplate_sclerosis(canvas, bodies, anat)
    if f["fractures"]:
        _draw_fracture_line(canvas, bodies[anat.fracture_level], anat)
    _draw_pelvis_coronal(canvas, anat, f, y_s1, bone)
    if f["instrumentation"]:
        _draw_instrumentation_coronal(canvas, bodies, anat, y_s1)
    return canvas.image


def _draw_posterior_coronal(canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density) -> None:
    """Pedicles (cortical rings), transverse processes (L3's the longest) and spinous processes."""
    s = anat.scale
    for i, body in enumerate(bodies):
        h = (body.h_neg + body.h_pos) / 2
        # Vertebral rotation towards the convexity moves the pedicles off centre in a scoliosis.
        rot = (body.centre[0] - X0) * 0.25
        for side in (-1, 1):
            canvas.ellipse(
                body.point(side * 0.62 * body.half_w + rot, -0.2 * h),
                (0.016 * s, 0.024 * s),
                0.2 * bone.fill,
                angle=-body.theta,
                edge=bone.cortex * 0.9,
                edge_width=bone.width * 0.8,
            )
            length = (0.07 if i == 3 else 0.05) * s  # bodies[0] is T12
            canvas.ellipse(
                body.point(side * (body.half_w + length * 0.7), -0.05 * h),
                (length, 0.009 * s),
                bone.fill * 0.6,
                angle=-body.theta,
                edge=bone.cortex * 0.3,
            )
        canvas.ellipse(
            body.point(rot, 0.2 * h),
            (0.011 * s, 0.028 * s),
            bone.fill * 0.5,
            angle=-body.theta,
            edge=bone.cortex * 0.4,
        )


def _draw_facets_coronal(
    canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density, sclerosis: bool
) -> None:
    """Facet joints beside the pedicles at each disc level (L1-L2 ... L5-S1)."""
    s = anat.scale
    for k, body in enumerate(bodies):
        h = (body.h_neg + body.h_pos) / 2
        for side in (-1, 1):
            centre = body.point(side * 0.55 * body.half_w, h / 2 + 0.3 * anat.disc_h[k])
            sclerotic = sclerosis and k in anat.facet_levels
            _draw_facet(canvas, centre, (0.013 * s, 0.021 * s), -body.theta, anat, bone, sclerotic)


def _draw_pelvis_coronal(
    canvas: _Canvas, anat: _Anatomy, f: Mapping[str, int], y_s1: float, bone: _Density
) -> None:
    """Sacrum with foramina, iliac wings, the sacroiliac joints between them, femoral heads."""
    s, pw, x0 = anat.scale, anat.pelvis_w, X0
    fill, cortex, width = bone
    tw = 1.05 * float(anat.body_w[4])  # half the distance between the sacroiliac joints
    sij_top = [(x0 + side * tw, y_s1 + 0.012) for side in (-1, 1)]
    sij_bottom = [(x0 + side * tw * 0.72, y_s1 + 0.15 * s) for side in (-1, 1)]
    sacrum = [
        (x0 - tw, y_s1),
        (x0 + tw, y_s1),
        sij_bottom[1],
        (x0 + 0.2 * tw, y_s1 + 0.25 * s),
        (x0 - 0.2 * tw, y_s1 + 0.25 * s),
        sij_bottom[0],
    ]
    canvas.polygon(np.array(sacrum), fill * 0.8, edge=cortex * 0.6, edge_width=width, rounding=0.01)
    for row in range(3):
        for side in (-1, 1):
            canvas.ellipse(
                (x0 + side * tw * (0.42 - 0.08 * row), y_s1 + (0.045 + 0.05 * row) * s),
                (0.011 * s, 0.009 * s),
                -0.06,
            )
    for j, side in enumerate((-1, 1)):
        gap = 0.007 * side
        top, bottom = np.array(sij_top[j]), np.array(sij_bottom[j])
        ilium = [
            (top[0] + gap, top[1] - 0.01),
            (x0 + side * (tw + 0.14 * pw), y_s1 - 0.09 * s),
            (x0 + side * (tw + 0.19 * pw), y_s1 + 0.02 * s),
            (x0 + side * (tw + 0.1 * pw), y_s1 + 0.16 * s),
            (bottom[0] + gap, bottom[1] + 0.02),
        ]
        canvas.polygon(np.array(ilium), fill * 0.65, edge=cortex * 0.8, edge_width=width * 1.2, rounding=0.02)
        canvas.ellipse(
            (x0 + side * (tw + 0.13 * pw), y_s1 + 0.3 * s),
            (0.065 * s, 0.065 * s),
            fill * 0.9,
            edge=cortex * 0.6,
        )
        _draw_sij(
            canvas,
            top + np.array([gap / 2, 0]),
            bottom + np.array([gap / 2, 0]),
            anat,
            bool(f["sij_degeneration"] and side in anat.sij_sides),
        )


def _draw_sij(
    canvas: _Canvas, top: np.ndarray, bottom: np.ndarray, anat: _Anatomy, degenerated: bool
) -> None:
    """A sacroiliac joint: a dark joint line between two thin subchondral cortices; degenerated, the
    line is irregular and flanked by thick, bright, uneven sclerosis."""
    t = np.linspace(0, 1, 10)[:, None]
    line = top + t * (bottom - top)
    normal = np.array([bottom[1] - top[1], top[0] - bottom[0]])
    normal /= np.linalg.norm(normal)
    s = anat.scale
    if degenerated:
        wave = 0.004 * s * np.sin(9 * t + anat.sij_phase)
        line = line + wave * normal
        radii = 0.0055 * s * (1.3 + 0.6 * np.sin(7 * t[:-1, 0] + anat.sij_phase))
        for side in (-1, 1):
            canvas.polyline(line + side * 0.01 * s * normal, radii, 0.42 * anat.bone)
        canvas.polyline(line, 0.002 * s, -0.12)
    else:
        for side in (-1, 1):
            canvas.polyline(line + side * 0.007 * s * normal, 0.0025 * s, anat.sij_cortex * anat.bone)
        canvas.polyline(line, 0.0035 * s, -0.12)


def _draw_instrumentation_coronal(
    canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, y_s1: float
) -> None:
    """Pedicle screws converging medially from each pedicle and two vertical rods through their heads."""
    s, x0 = anat.scale, X0
    heads = {-1: [], 1: []}
    for v in anat.instrumented:
        if v < 5:
            body = bodies[v]
            h = (body.h_neg + body.h_pos) / 2
            points = {
                side: (
                    body.point(side * 0.85 * body.half_w, -0.15 * h),
                    body.point(side * 0.35 * body.half_w, -0.05 * h),
                )
                for side in (-1, 1)
            }
        else:
            half = 0.75 * float(anat.body_w[4])  # S1 pedicles sit about under L5's
            points = {
                side: (
                    np.array([x0 + side * 0.8 * half, y_s1 + 0.04 * s]),
                    np.array([x0 + side * 0.35 * half, y_s1 + 0.06 * s]),
                )
                for side in (-1, 1)
            }
        for side, (head, tip) in points.items():
            canvas.polyline(np.stack([head, tip]), 0.008 * s, METAL)
            canvas.ellipse(head, (0.012 * s, 0.012 * s), METAL)
            heads[side].append(head)
    for side in (-1, 1):
        pts = np.stack(heads[side])
        pts = np.concatenate([pts[:1] - [0, 0.02 * s], pts, pts[-1:] + [0, 0.02 * s]])
        canvas.polyline(pts, 0.0055 * s, METAL)


def _listhesis_shifts(anat: _Anatomy, f: Mapping[str, int]) -> np.ndarray:
    """Sideways shift of L1-L5 in the lateral view (negative = anterior): in an olisthesis the slipped
    vertebra carries the column above it over the vertebra below."""
    shifts = np.zeros(5)
    if f["anterolisthesis"]:
        shifts[: anat.antero_level + 1] -= anat.antero_shift * anat.body_d[anat.antero_level]
    if f["retrolisthesis"]:
        shifts[: anat.retro_level + 1] += anat.retro_shift * anat.body_d[anat.retro_level]
    return shifts


def _render_sagittal(anat: _Anatomy, f: Mapping[str, int], size: int, gas: np.ndarray) -> np.ndarray:
    """Lateral view (anterior = image left): L1-L5 on the lordotic curve, discs, pedicles, spinous
    processes and facet joints, sacrum, ilium overlay, femoral heads, soft tissue and bowel gas."""
    canvas = _Canvas(size)
    _soft_tissue(canvas, X0 - 0.04, 0.45 * anat.tissue_w, anat)
    _gas(canvas, (0.05, X0 - 0.12), gas)
    h_neg, h_pos = _fracture_heights(anat, f, "sagittal")
    curve = _sagittal_curve(anat, f)
    discs = _disc_heights(anat, f)
    bodies, y_s1 = _stack(h_neg, h_pos, anat.body_d / 2, discs, curve, _listhesis_shifts(anat, f))
    bone = _bone_density(anat, f)
    all_bodies = _with_t12(bodies, anat)
    _draw_bodies(canvas, all_bodies, anat, bone)
    _draw_posterior_sagittal(canvas, all_bodies, anat, bone)
    s = anat.scale
    for k, body in enumerate(bodies):  # facet joints behind the pedicles, at each disc level
        centre = body.point(body.half_w + 0.055 * s, body.h_pos / 2 + 0.4 * anat.disc_h[k])
        sclerotic = bool(f["facet_sclerosis"]) and k in anat.facet_levels
        _draw_facet(canvas, centre, (0.015 * s, 0.021 * s), -body.theta - 0.4, anat, bone, sclerotic)
    if f["osteophytosis"]:
        _draw_osteophytes(canvas, bodies, anat, (-1,))
    if f["diffuse_degeneration"]:
        _draw_endplate_sclerosis(canvas, bodies, anat)
    if f["fractures"]:
        _draw_fracture_line(canvas, bodies[anat.fracture_level], anat)
    s1 = _draw_pelvis_sagittal(canvas, anat, f, curve, y_s1, bone)
    if f["instrumentation"]:
        _draw_instrumentation_sagittal(canvas, bodies, s1, anat)
    return canvas.image


def _draw_posterior_sagittal(
    canvas: _Canvas, bodies: Sequence[_Body], anat: _Anatomy, bone: _Density
) -> None:
    """Pedicles and laminae running back from each body into a spinous process pointing down and back."""
    s = anat.scale
    for body in bodies:
        h, a = body.h_pos, body.half_w
        pedicle = np.stack([body.point(a, -0.2 * h), body.point(a + 0.05 * s, -0.15 * h)])
        canvas.polyline(pedicle, 0.012 * s, bone.fill * 0.6)
        spinous = np.stack(
            [
                body.point(a + 0.06 * s, -0.05 * h),
                body.point(a + 0.1 * s, 0.15 * h),
                body.point(a + 0.15 * s, 0.3 * h),
            ]
        )
        canvas.polyline(spinous, [0.02 * s, 0.014 * s], bone.fill * 0.55)


def _draw_pelvis_sagittal(
    canvas: _Canvas, anat: _Anatomy, f: Mapping[str, int], curve: Callable, y_s1: float, bone: _Density
) -> _Body:
    """The sacrum, tilted along the end of the lumbar curve plus the sacral slope (less tilted when the
    lordosis is lost), with the ilium overlay and a femoral head; returns S1 as a body (for screws)."""
    s = anat.scale
    fill, cortex, width = bone
    x, slope = curve(1.0)
    total = float(anat.body_h.sum() + anat.disc_h.sum())
    tilt = math.atan(slope / total) + (anat.sacral_tilt * (0.3 if f["loss_of_lordosis"] else 1.0))
    depth = float(anat.body_d[4])
    s1 = _Body(np.array([x, y_s1], np.float32), tilt, depth / 2, 0.0, 0.0)
    length = 0.24 * s
    corners = np.stack(
        [
            s1.point(-depth / 2, 0),
            s1.point(depth / 2, 0),
            s1.point(0.25 * depth, length),
            s1.point(-0.05 * depth, length),
        ]
    )
    canvas.polygon(corners, fill * 0.8, edge=cortex * 0.8, edge_width=width, rounding=0.008)
    canvas.ellipse(
        s1.point(0.25 * depth, 0.1 * s),
        (0.17 * s, 0.12 * s),
        fill * 0.3,
        angle=-tilt,
        edge=cortex * 0.2,
        blur=0.004,
    )
    canvas.ellipse(s1.point(-0.9 * depth, 0.28 * s), (0.065 * s, 0.065 * s), fill * 0.8, edge=cortex * 0.5)
    return s1


def _draw_instrumentation_sagittal(
    canvas: _Canvas, bodies: Sequence[_Body], s1: _Body, anat: _Anatomy
) -> None:
    """Screws from the posterior elements through the pedicles into the bodies, a rod through their
    heads, and an interbody cage in the instrumented disc (``anat.cage``)."""
    s = anat.scale
    heads = []
    for v in anat.instrumented:
        body = bodies[v] if v < 5 else _Body(s1.point(0, 0.05 * s), s1.theta, s1.half_w, 0.06 * s, 0.06 * s)
        head, tip = (
            body.point(body.half_w + 0.045 * s, -0.1 * body.h_pos),
            body.point(-0.4 * body.half_w, 0.0),
        )
        canvas.polyline(np.stack([head, tip]), 0.0075 * s, METAL)
        canvas.ellipse(head, (0.013 * s, 0.013 * s), METAL)
        heads.append(head)
    canvas.polyline(np.stack(heads), 0.006 * s, METAL)
    first = anat.instrumented[0]
    if anat.cage and first < 4:
        upper, lower = bodies[first], bodies[first + 1]
        mid = (upper.point(0, upper.h_pos / 2) + lower.point(0, -lower.h_pos / 2)) / 2
        box = _Body(mid, (upper.theta + lower.theta) / 2, 0.5 * upper.half_w, 0.02 * s, 0.02 * s)
        canvas.polygon(box.corners(), 1.2, edge=1.0, edge_width=0.003)


@dataclass(frozen=True)
class _Exposure:
    """How one radiograph was taken: patient position, detector response, noise, side marker."""

    shift: tuple[float, float]
    angle: float
    zoom: float
    gain: float  # exposure: attenuation -> brightness
    floor: float
    ceiling: float
    noise: float
    heel: float
    marker: tuple[float, float]


def _sample_exposure(rng: np.random.Generator) -> _Exposure:
    return _Exposure(
        shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03))),
        angle=float(rng.uniform(-0.07, 0.07)),
        zoom=float(rng.uniform(0.95, 1.05)),
        gain=float(rng.uniform(1.0, 1.5)),
        floor=float(rng.uniform(0.03, 0.08)),
        ceiling=float(rng.uniform(0.88, 0.97)),
        noise=float(rng.uniform(0.006, 0.016)),
        heel=float(rng.uniform(-0.08, 0.08)),
        marker=(float(rng.choice((0.08, 0.86))), float(rng.uniform(0.05, 0.2))),
    )


def _sample_gas(rng: np.random.Generator) -> np.ndarray:
    """(n, 5): x and y in [0, 1] of the abdomen, radii, darkness."""
    n = 6
    gas = np.column_stack(
        [
            rng.random(n),
            rng.random(n),
            rng.uniform(0.015, 0.045, n),
            rng.uniform(0.012, 0.035, n),
            rng.uniform(0.03, 0.1, n),
        ]
    )
    return gas[: int(rng.integers(2, n + 1))]


def _expose(atten: np.ndarray, exp: _Exposure, noise: np.ndarray) -> np.ndarray:
    """Attenuation map -> 12-bit radiograph (bone bright): patient placement (shift, small rotation,
    zoom), detector blur, the lead side marker, a saturating detector response, heel effect, noise."""
    size = atten.shape[0]
    c, s = math.cos(exp.angle), math.sin(exp.angle)
    matrix = np.array([[c, -s], [s, c]]) / exp.zoom
    centre = np.array([size / 2, size / 2])
    offset = centre - matrix @ centre - np.array([exp.shift[1], exp.shift[0]]) * size
    placed = ndimage.affine_transform(atten, matrix, offset=offset, order=1, mode="mirror")
    placed = ndimage.gaussian_filter(placed, sigma=0.5 * size / 256)
    mx, my = (int(v * size) for v in exp.marker)
    placed[my : my + max(size // 28, 2), mx : mx + max(size // 40, 2)] += METAL
    response = 1 - np.exp(-exp.gain * np.clip(placed, 0, None))
    rows = (np.arange(size) / size - 0.5)[:, None]
    grey = (exp.floor + (exp.ceiling - exp.floor) * response) * (1 + exp.heel * rows)
    grey = grey + exp.noise * (0.5 + grey) * noise
    return np.clip(np.rint(grey * MAX_VALUE), 0, MAX_VALUE).astype(np.uint16)


def _session_findings(session: Mapping[str, Any]) -> dict[str, int]:
    missing = [f"{f}_image" for f in FINDINGS if f"{f}_image" not in session]
    if missing:
        raise KeyError(f"render_views: the session has no image truth {missing}.")
    return {f: int(session[f"{f}_image"]) for f in FINDINGS}


def render_views(
    session: Mapping[str, Any], rng: np.random.Generator, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The (coronal, sagittal) radiographs of a session: 2-D uint16 arrays, 12-bit, bone bright.

    Coronal = AP view, sagittal = lateral view of the standing lumbar spine (the paper's "couples of
    planar radiographic images", Figure 2 fuses them as R and B). Findings are drawn from the image
    truth ``<finding>_image`` (see :data:`FINDING_VIEWS` for which view shows what). The bones come from
    ``session["anatomy_seed"]`` when given (the same patient looks the same in every session), else
    from ``rng``; placement, exposure, bowel gas and noise come from ``rng``. All random draws are made
    whatever the findings, so toggling one finding changes only what that finding draws.
    """
    findings = _session_findings(session)
    seed = session.get("anatomy_seed")
    anatomy_rng = np.random.default_rng(int(seed)) if seed is not None and not pd.isna(seed) else rng
    anat = _sample_anatomy(anatomy_rng)
    exposures = [_sample_exposure(rng) for _ in VIEWS]
    gas = [_sample_gas(rng) for _ in VIEWS]
    noise = [rng.standard_normal((size, size)).astype(np.float32) for _ in VIEWS]
    coronal = _render_coronal(anat, findings, size, gas[0])
    sagittal = _render_sagittal(anat, findings, size, gas[1])
    return _expose(coronal, exposures[0], noise[0]), _expose(sagittal, exposures[1], noise[1])


def session_rng(seed: int, session_id: str) -> np.random.Generator:
    """The image generator of one session in :func:`write_spine_dataset` (to re-render it)."""
    return np.random.default_rng([seed, int(str(session_id).lstrip("S")), 0x1A6E])


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------
def assign_roles(
    sessions: pd.DataFrame,
    seed: int,
    nlp_fraction: float = 0.3,
    test_fraction: float = 0.1,
    refinement_fraction: float = 0.1,
) -> pd.DataFrame:
    """Add ``role`` (nlp | test | train, by patient) and ``refinement`` (0/1) as in Figure 1: the NLP
    development reports and the image test set are whole patients; the refinement set (the paper's 481
    couples) is a random ``refinement_fraction`` of the training-pool sessions."""
    for name, value in (
        ("nlp_fraction", nlp_fraction),
        ("test_fraction", test_fraction),
        ("refinement_fraction", refinement_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value}: a fraction in [0, 1].")
    if nlp_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"nlp_fraction + test_fraction = {nlp_fraction + test_fraction}: nothing is left to train on."
        )
    rng = np.random.default_rng([seed, 0x201E])
    patients = sessions["patient_id"].unique()
    order = patients[rng.permutation(len(patients))]

    def count(fraction: float) -> int:
        return max(1, int(round(fraction * len(patients)))) if fraction > 0 else 0

    n_nlp, n_test = count(nlp_fraction), count(test_fraction)
    if n_nlp + n_test >= len(patients):
        raise ValueError(
            f"{len(patients)} patients are too few for nlp_fraction={nlp_fraction} and test_fraction={test_fraction}."
        )
    role = {p: "nlp" for p in order[:n_nlp]} | {p: "test" for p in order[n_nlp : n_nlp + n_test]}
    out = sessions.copy()
    out["role"] = out["patient_id"].map(role).fillna("train")
    train = np.flatnonzero(out["role"].to_numpy() == "train")
    chosen = rng.choice(train, size=int(round(refinement_fraction * len(train))), replace=False)
    out["refinement"] = 0
    out.loc[out.index[chosen], "refinement"] = 1
    return out


def _assign_formats(sessions: pd.DataFrame, seed: int, dicom_fraction: float) -> pd.Series:
    """png for most sessions; DICOM for ``dicom_fraction`` of them, half of those MONOCHROME1."""
    if not 0.0 <= dicom_fraction <= 1.0:
        raise ValueError(f"dicom_fraction={dicom_fraction}: a fraction in [0, 1].")
    rng = np.random.default_rng([seed, 0xD1C0])
    dicom = rng.random(len(sessions)) < dicom_fraction
    inverted = rng.random(len(sessions)) < 0.5
    formats = np.where(dicom, np.where(inverted, "dicom_monochrome1", "dicom_monochrome2"), "png")
    return pd.Series(formats, index=sessions.index)


def write_png(pixels: np.ndarray, path: Path) -> Path:
    """A 16-bit grayscale PNG (the 12-bit values as stored)."""
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint16)).save(path, compress_level=3)
    return path


def write_dicom(
    pixels: np.ndarray,
    path: Path,
    session: Mapping[str, Any],
    view: str,
    seed: int,
    monochrome1: bool,
) -> Path:
    """One Computed Radiography Image Storage file: 16-bit unsigned, 12 bits stored, ViewPosition AP
    (coronal) or LL (sagittal), a window covering the image's range (so a reader that applies it sees
    what a reader stretching the PNG sees). MONOCHROME1 stores ``4095 - value`` (bone dark)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    stored = (MAX_VALUE - pixels if monochrome1 else pixels).astype(np.uint16)
    sid = str(session["session_id"])
    entropy = ["reportsup-synthetic-spine", str(seed), sid]
    sop = generate_uid(entropy_srcs=[*entropy, view])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = generate_uid(entropy_srcs=entropy)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, view, "series"])
    ds.Modality = "CR"
    ds.PatientID = str(session["patient_id"])
    ds.PatientName = f"Anonymous^{session['patient_id']}"
    ds.StudyID = sid
    ds.AccessionNumber = str(session.get("report_id", ""))
    ds.StudyDate = ds.SeriesDate = "20170101"
    ds.SeriesNumber = VIEWS.index(view) + 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "AP" if view == "coronal" else "LL"
    ds.PatientOrientation = ["R", "F"] if view == "coronal" else ["A", "F"]
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    spacing = f"{400.0 / pixels.shape[0]:.4f}"  # a 40 cm field of view
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    lo, hi = int(stored.min()), int(stored.max())
    # DICOM linear VOI: values <= c - 0.5 - (w - 1) / 2 are black, > c - 0.5 + (w - 1) / 2 white.
    ds.WindowCenter = f"{(lo + hi) / 2 + 0.5:.1f}"
    ds.WindowWidth = str(max(hi - lo + 1, 2))
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_images(out: Path, row: Mapping[str, Any], seed: int, image_size: int) -> list[dict[str, str]]:
    coronal, sagittal = render_views(row, session_rng(seed, row["session_id"]), image_size)
    records = []
    for view, pixels in zip(VIEWS, (coronal, sagittal), strict=True):
        stem = out / "images" / f"{row['session_id']}_{view}"
        if row["image_format"] == "png":
            path = write_png(pixels, stem.with_suffix(".png"))
        else:
            mono1 = row["image_format"] == "dicom_monochrome1"
            path = write_dicom(pixels, stem.with_suffix(".dcm"), row, view, seed, mono1)
        records.append(
            {
                "session_id": row["session_id"],
                "patient_id": row["patient_id"],
                "report_id": row["report_id"],
                "view": view,
                "image": str(path.resolve()),
            }
        )
    return records


def _report_texts(sessions: pd.DataFrame, seed: int) -> list[str]:
    texts = []
    for row in sessions.itertuples(index=False):
        truth = {f: int(getattr(row, f"{f}_report")) for f in FINDINGS}
        texts.append(write_report(truth, random.Random(f"reportsup-spine-{seed}-{row.session_id}")))
    return texts


def generate_spine_dataset(
    out_dir: str | Path,
    n_sessions: int = 600,
    seed: int = 0,
    image_size: int = 256,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.3,
    test_fraction: float = 0.1,
    refinement_fraction: float = 0.1,
    dicom_fraction: float = 0.2,
) -> None:
    """Write the files of the module docstring into ``out_dir`` (no caching: see :func:`write_spine_dataset`)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sessions = sample_sessions(n_sessions, seed, report_noise)
    sessions = assign_roles(sessions, seed, nlp_fraction, test_fraction, refinement_fraction)
    sessions["image_format"] = _assign_formats(sessions, seed, dicom_fraction)
    sessions["text"] = _report_texts(sessions, seed)
    views = [rec for row in sessions.to_dict("records") for rec in _write_images(out, row, seed, image_size)]
    pd.DataFrame(views).to_csv(out / "views.csv", index=False)
    reports = sessions[["report_id", "patient_id", "text"]]
    reports.to_csv(out / "reports.csv", index=False)
    nlp = sessions.loc[sessions["role"] == "nlp"]
    annotated = nlp[["report_id", "patient_id", "text"]].join(
        nlp[[f"{f}_report" for f in FINDINGS]].rename(columns=lambda c: c.removesuffix("_report"))
    )
    annotated.to_csv(out / "reports_annotated.csv", index=False)
    image_truth = {f"{f}_image": f for f in FINDINGS}
    for name, mask in (
        ("test_labels", sessions["role"] == "test"),
        ("refinement_labels", sessions["refinement"] == 1),
    ):
        sessions.loc[mask, ["session_id", *image_truth]].rename(columns=image_truth).to_csv(
            out / f"{name}.csv", index=False
        )
    sessions.drop(columns="text").to_csv(out / "sessions.csv", index=False)


def write_spine_dataset(
    out_dir: str | Path,
    n_sessions: int = 600,
    seed: int = 0,
    image_size: int = 256,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.3,
    test_fraction: float = 0.1,
    refinement_fraction: float = 0.1,
    dicom_fraction: float = 0.2,
) -> Path:
    """:func:`generate_spine_dataset` once: a folder written with the same arguments is reused, a folder
    the generator did not write is refused (:func:`datamodules.synthetic.writing.write_once`). Returns
    ``out_dir``."""
    args = {
        "n_sessions": int(n_sessions),
        "seed": int(seed),
        "image_size": int(image_size),
        "report_noise": float(report_noise),
        "nlp_fraction": float(nlp_fraction),
        "test_fraction": float(test_fraction),
        "refinement_fraction": float(refinement_fraction),
        "dicom_fraction": float(dicom_fraction),
    }
    signature = f"reportsup synthetic_spine v1 {sorted(args.items())}\n"
    write_once(out_dir, signature, lambda folder: generate_spine_dataset(folder, **args))
    return Path(out_dir)


def demo_data_config(
    data_dir: str,
    n_sessions: int = 600,
    seed: int = 0,
    image_size: int = 256,
    report_noise: float = 0.08,
    nlp_fraction: float = 0.3,
) -> dict[str, str]:
    """Write (or reuse) the synthetic data set under ``data_dir`` and return the paths the spine
    DataModules take: ``views``, ``reports``, ``reports_annotated``, ``test_labels``,
    ``refinement_labels``."""
    name = f"synthetic_spine_n{n_sessions}_s{seed}_px{image_size}_noise{report_noise:g}_nlp{nlp_fraction:g}"
    root = write_spine_dataset(
        Path(data_dir) / name,
        n_sessions=n_sessions,
        seed=seed,
        image_size=image_size,
        report_noise=report_noise,
        nlp_fraction=nlp_fraction,
    )
    files = ("views", "reports", "reports_annotated", "test_labels", "refinement_labels")
    return {key: str((root / f"{key}.csv").resolve()) for key in files}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a synthetic lumbar-spine data set: Italian reports, coronal + sagittal radiographs, labels."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--n-sessions", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--report-noise", type=float, default=0.08)
    parser.add_argument("--nlp-fraction", type=float, default=0.3)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--refinement-fraction", type=float, default=0.1)
    parser.add_argument("--dicom-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    out = write_spine_dataset(
        args.out_dir,
        n_sessions=args.n_sessions,
        seed=args.seed,
        image_size=args.image_size,
        report_noise=args.report_noise,
        nlp_fraction=args.nlp_fraction,
        test_fraction=args.test_fraction,
        refinement_fraction=args.refinement_fraction,
        dicom_fraction=args.dicom_fraction,
    )
    for path in sorted(out.glob("*.csv")):
        print(path)


if __name__ == "__main__":
    main()

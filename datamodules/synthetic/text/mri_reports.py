"""Synthetic head-MRI reports for demos and tests, labelled the way ALARM's readers labelled.

Modelled on Wood et al. 2021 ("Data", "Reference-standard report annotation", Fig. 5 examples):
unstructured reports of 5-10 sentences, several reporting styles, clinical details that name the
abnormality being searched for, distant negation, hedging, comparison with prior studies.

How labels follow from the text (the rules a reader would apply):

* A category is **positive** when the report asserts a finding of that category, including a
  hedged assertion ("may represent a low-grade glioma": the paper's framework errs towards the
  sensitive label, Fig. 5d) and a stable known finding ("unchanged since the prior study").
* A category is **negative** when the finding is negated ("no evidence of acute infarction"),
  only asked about in the clinical details ("Question: ?acute stroke"), or not mentioned.
* Age-appropriate changes (mild involutional volume loss, a few white-matter foci within normal
  limits for age in patients over 60) are **normal**, as in the paper's definitions; only
  moderate/severe small vessel disease and atrophy in excess of age are abnormal.
* ``abnormal`` = any of the 7 categories, or another abnormality (Chiari malformation,
  hydrocephalus, ...) that belongs to no category.

Data sets written by :func:`write_synthetic_dataset` (mirroring Fig. 1):

* ``reports.csv``: the development table. As in the paper the binary and granular data sets are
  different reports: binary-set rows have ``abnormal`` and empty granular labels, granular-set rows
  the 7 categories and an empty ``abnormal`` (empty = unknown, masked out of the loss).
* ``image_labels_<label>.csv``: image-label hold-outs (250 for ``abnormal``, 100 per category at
  the paper's scale, each category balanced ~50/50) whose labels disagree with the report text at
  ``image_label_disagreement`` (mostly findings the report did not mention, as the paper's
  discussion describes); their patients also have exams in ``reports.csv``, so patient exclusion
  matters.
* ``external_site.csv``: another hospital's style (American spelling, FINDINGS/IMPRESSION
  headings, terse sentences), ``abnormal`` only, as the GSTT test set.

Everything is drawn from one seeded ``random.Random``: the same arguments give the same files.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from datamodules.synthetic.writing import write_once
from reportsup.contracts.labels.alarm import BINARY_LABEL, GRANULAR_CATEGORIES

SIDES = ("left", "right")
LOBES = ("frontal", "parietal", "temporal", "occipital")
TERRITORIES = ("middle cerebral artery", "posterior cerebral artery", "anterior cerebral artery")
DEEP = ("thalamus", "internal capsule", "corona radiata", "basal ganglia", "pons", "cerebellar hemisphere")
ARTERIES = (
    "anterior communicating artery",
    "left middle cerebral artery bifurcation",
    "right posterior communicating artery",
    "basilar tip",
)
YEARS = tuple(str(y) for y in range(2008, 2019))

# Positive assertions per category. Placeholders: {side} {lobe} {territory} {deep} {artery} {size}
POSITIVE: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "There is restricted diffusion in the {side} {territory} territory consistent with an acute infarct.",
        "A focus of restricted diffusion within the {side} {deep} is in keeping with acute ischaemia.",
        "Acute infarction is present in the {side} {deep}.",
        "There are several small acute infarcts in the {side} {lobe} lobe, likely embolic.",
    ),
    "mass": (
        "There is a {size} enhancing mass in the {side} {lobe} lobe with surrounding vasogenic oedema.",
        "A well-circumscribed extra-axial lesion arising from the {side} convexity is in keeping with a meningioma.",
        "Multiple ring-enhancing lesions are consistent with metastases.",
        "An intra-axial tumour centred on the {side} {deep} causes local mass effect.",
    ),
    "atrophy": (
        "There is generalised cerebral volume loss in excess of that expected for the patient's age.",
        "Disproportionate bilateral hippocampal atrophy is noted.",
        "There is marked {lobe} lobe predominant atrophy.",
        "Cerebellar atrophy is more than expected for age.",
    ),
    "vascular": (
        "There is a {size} aneurysm arising from the {artery}.",
        "Multiple foci of susceptibility artefact are consistent with cerebral micro-haemorrhages.",
        "An arteriovenous malformation is seen in the {side} {lobe} lobe.",
        "There is a cavernoma in the {side} {deep} with a rim of haemosiderin.",
    ),
    "small_vessel_disease": (
        "There is moderate small vessel disease, Fazekas grade 2.",
        "Extensive confluent periventricular white matter hyperintensities are in keeping with severe small vessel ischaemic change.",
        "Moderate chronic small vessel ischaemic changes are seen in both cerebral hemispheres.",
    ),
    "white_matter_inflammation": (
        "Multiple periventricular and juxtacortical ovoid lesions are in keeping with demyelination.",
        "Appearances are consistent with multiple sclerosis, with a new enhancing lesion in the {side} corona radiata.",
        "There are callosal and infratentorial white matter lesions typical of demyelinating disease.",
    ),
    "encephalomalacia": (
        "There is an area of encephalomalacia in the {side} {lobe} lobe in keeping with an old infarct.",
        "Post-surgical changes of a {side} {lobe} craniotomy are noted with underlying gliosis.",
        "Gliosis and chronic blood products in the {side} {lobe} lobe relate to a previous haemorrhage.",
    ),
}

# Noun phrases for hedged and comparison sentences.
NOUN_PHRASE: dict[str, tuple[str, ...]] = {
    "acute_stroke": ("a small acute infarct", "early acute ischaemia"),
    "mass": ("a low-grade glioma", "a small meningioma"),
    "atrophy": (
        "volume loss in excess of age",
        "an early neurodegenerative process with temporal lobe atrophy",
    ),
    "vascular": ("a small aneurysm", "a dural arteriovenous fistula"),
    "small_vessel_disease": ("moderate small vessel disease",),
    "white_matter_inflammation": ("demyelination", "an inflammatory white matter process"),
    "encephalomalacia": ("an old infarct with encephalomalacia", "post-operative gliosis"),
}

NEGATION: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "No evidence of acute infarction.",
        "There is no restricted diffusion to suggest acute ischaemia.",
        "No acute stroke is identified.",
    ),
    "mass": (
        "No mass lesion.",
        "No space-occupying lesion or abnormal enhancement.",
        "There is no evidence of an intracranial mass.",
    ),
    "atrophy": ("No atrophy in excess of age.", "Brain volume is within normal limits for age."),
    "vascular": ("No aneurysm or vascular malformation is seen.", "No micro-haemorrhages are identified."),
    "small_vessel_disease": ("No significant small vessel disease.",),
    "white_matter_inflammation": (
        "No demyelinating lesions are seen.",
        "No features to suggest demyelination.",
    ),
    "encephalomalacia": ("No established infarcts or areas of encephalomalacia.",),
}

OTHER_ABNORMAL = (
    "There is a Chiari I malformation with cerebellar tonsillar descent of 8 mm.",
    "There is communicating hydrocephalus with dilatation of the lateral and third ventricles.",
    "An arachnoid cyst in the {side} middle cranial fossa causes scalloping of the adjacent bone.",
    "There is a large pituitary cyst displacing the optic chiasm.",
)

NORMAL = (
    "The ventricles and extra-axial CSF spaces are of normal size and configuration.",
    "Normal intracranial flow voids are noted.",
    "The cerebellar tonsils are normally positioned.",
    "The pituitary gland is unremarkable.",
    "The visualised paranasal sinuses and mastoid air cells are clear.",
    "Grey-white matter differentiation is preserved.",
    "The craniocervical junction is within normal limits.",
    "The orbits are unremarkable.",
)

AGE_APPROPRIATE = (
    "A few scattered punctate white matter hyperintensities are within normal limits for the patient's age.",
    "Mild generalised volume loss is appropriate for age.",
    "Mild involutional change only.",
)

COMPLAINTS = (
    "headache",
    "seizure",
    "dizziness",
    "left sided weakness",
    "memory loss",
    "visual disturbance",
    "slurred speech",
    "numbness",
)
QUESTIONS = (
    "acute stroke",
    "space occupying lesion",
    "demyelination",
    "aneurysm",
    "structural abnormality",
    "atrophy",
    "mass",
)
TECHNIQUE = (
    "MRI head: axial T2, FLAIR, DWI and SWI, sagittal T1.",
    "MRI brain with and without contrast.",
    "Standard departmental protocol.",
)
NORMAL_CONCLUSION = (
    "Conclusion: Normal intracranial appearances.",
    "Conclusion: No intracranial abnormality.",
    "Normal MRI head.",
)

# Another hospital's reporting style: American spelling and FINDINGS/IMPRESSION headings.
US_SPELLING = (
    ("haemorrhage", "hemorrhage"),
    ("oedema", "edema"),
    ("ischaemi", "ischemi"),
    ("tumour", "tumor"),
    ("generalised", "generalized"),
    ("haemosiderin", "hemosiderin"),
    ("artefact", "artifact"),
)
EXTERNAL_NORMAL_IMPRESSION = (
    "IMPRESSION: Unremarkable MRI of the brain.",
    "IMPRESSION: No acute intracranial process.",
    "IMPRESSION: Normal study.",
)


@dataclass
class SyntheticReport:
    """One generated report and the labels its text implies."""

    text: str
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class _Patient:
    patient_id: str
    age: int
    conditions: set[str]
    other_abnormal: bool


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        side=rng.choice(SIDES),
        lobe=rng.choice(LOBES),
        territory=rng.choice(TERRITORIES),
        deep=rng.choice(DEEP),
        artery=rng.choice(ARTERIES),
        size=f"{rng.randint(3, 45)} mm",
    )


def _typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters in one longer word: the voice-recognition/typing slips of real reports."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _finding_sentence(category: str, rng: random.Random, follow_up: bool) -> str:
    style = rng.random()
    if follow_up and style < 0.3:
        return f"Stable appearance of {rng.choice(NOUN_PHRASE[category])}, unchanged since the prior study of {rng.choice(YEARS)}."
    if style < 0.45:
        return f"There is a subtle abnormality which may represent {rng.choice(NOUN_PHRASE[category])}."
    return _fill(rng.choice(POSITIVE[category]), rng)


def compose_report(
    conditions: Sequence[str],
    other_abnormal: bool,
    age: int,
    rng: random.Random,
    follow_up: bool = False,
    external: bool = False,
    typo_rate: float = 0.3,
) -> SyntheticReport:
    """Write one report for a patient with ``conditions`` and return it with the labels it implies."""
    sentences: list[str] = []
    if rng.random() < 0.6:
        sentences.append(f"Clinical details: {rng.choice(COMPLAINTS)}. Question: ?{rng.choice(QUESTIONS)}.")
    if rng.random() < 0.4:
        sentences.append(rng.choice(TECHNIQUE))
    if follow_up and rng.random() < 0.7:
        sentences.append(f"Comparison is made with the previous MRI of {rng.choice(YEARS)}.")
    body: list[str] = [_finding_sentence(c, rng, follow_up) for c in conditions]
    if other_abnormal:
        body.append(_fill(rng.choice(OTHER_ABNORMAL), rng))
    absent = [c for c in GRANULAR_CATEGORIES if c not in conditions]
    for c in rng.sample(absent, k=min(len(absent), rng.randint(0, 3))):
        body.append(rng.choice(NEGATION[c]))
    if age >= 60 and rng.random() < 0.6:
        body.append(rng.choice(AGE_APPROPRIATE))
    body.extend(rng.sample(NORMAL, k=rng.randint(2, 4)))
    rng.shuffle(body)
    sentences.extend(body)
    if not conditions and not other_abnormal:
        if follow_up and rng.random() < 0.5:
            sentences.append("No interval change.")
        sentences.append(rng.choice(EXTERNAL_NORMAL_IMPRESSION if external else NORMAL_CONCLUSION))
    else:
        main = conditions[0] if conditions else None
        summary = rng.choice(NOUN_PHRASE[main]) if main else "a structural abnormality as described"
        sentences.append(
            ("IMPRESSION: " if external else "Conclusion: ") + summary[0].upper() + summary[1:] + "."
        )
    text = " ".join(sentences)
    if external:
        for uk, us in US_SPELLING:
            text = text.replace(uk, us)
        text = "EXAM: MRI BRAIN. FINDINGS: " + text.replace("Clinical details:", "HISTORY:").replace(
            "Conclusion:", "IMPRESSION:"
        )
    if rng.random() < typo_rate:
        text = _typo(text, rng)
    labels = {c: int(c in conditions) for c in GRANULAR_CATEGORIES}
    labels[BINARY_LABEL] = int(bool(conditions) or other_abnormal)
    return SyntheticReport(text=text, labels=labels)


def _draw_patient(index: int, prefix: str, rng: random.Random, abnormal_rate: float) -> _Patient:
    age = rng.randint(18, 90)
    conditions: set[str] = set()
    other = False
    if rng.random() < abnormal_rate:
        if rng.random() < 0.15:
            other = True
        else:
            # Paper: 1.56 granular labels per abnormal report on average (max 5, mode 1).
            k = rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1))[0]
            conditions = set(rng.sample(GRANULAR_CATEGORIES, k=k))
    return _Patient(f"{prefix}{index:06d}", age, conditions, other)


def _exam(patient: _Patient, exam_index: int, rng: random.Random, external: bool = False) -> SyntheticReport:
    # Later exams may show the condition resolved (acute stroke becomes encephalomalacia) or unchanged.
    conditions = set(patient.conditions)
    if exam_index > 0 and "acute_stroke" in conditions and rng.random() < 0.5:
        conditions.discard("acute_stroke")
        conditions.add("encephalomalacia")
    ordered = sorted(conditions, key=GRANULAR_CATEGORIES.index)
    rng.shuffle(ordered)
    return compose_report(
        ordered, patient.other_abnormal, patient.age, rng, follow_up=exam_index > 0, external=external
    )


def _image_labels(
    labels: dict[str, int], names: Sequence[str], disagreement: float, rng: random.Random
) -> dict[str, int]:
    """Reference-standard image labels: mostly agree with the text; findings missing from the report
    (text 0, image 1) are three times as common as over-called ones, as the paper's discussion."""
    out = {}
    for name in names:
        y = labels[name]
        flip = rng.random() < (disagreement * 1.5 if y == 0 else disagreement * 0.5)
        out[name] = 1 - y if flip else y
    return out


def generate_tables(
    n_reports: int = 5000,
    seed: int = 0,
    abnormal_rate: float = 0.38,
    granular_abnormal_rate: float = 0.75,
    granular_fraction: float = 0.4,
    image_label_disagreement: float = 0.06,
    n_external: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Generate the development table, image-label hold-outs and the external-site table.

    Sizes of hold-outs scale with ``n_reports`` from the paper's (5000 labelled reports; 250 binary
    and 100 per category image labels; 500 external reports), with a floor so that small demos
    still have both classes.
    """
    rng = random.Random(seed)
    scale = n_reports / 5000
    n_image_binary = max(40, round(250 * scale))
    n_image_cat = max(20, round(100 * scale))
    n_external = n_external if n_external is not None else max(60, round(500 * scale))

    rows: list[dict] = []
    patients: list[_Patient] = []
    pid = 0
    while len(rows) < n_reports:
        # Paper: 38 % abnormal in the binary set; the granular set is richer in findings (13-19 % per category).
        granular_set = rng.random() < granular_fraction
        patient = _draw_patient(pid, "P", rng, granular_abnormal_rate if granular_set else abnormal_rate)
        pid += 1
        patients.append(patient)
        for e in range(rng.choices((1, 2, 3, 4), weights=(0.55, 0.25, 0.12, 0.08))[0]):
            if len(rows) >= n_reports:
                break
            rep = _exam(patient, e, rng)
            row = {
                "report_id": f"R{len(rows):07d}",
                "patient_id": patient.patient_id,
                "text": rep.text,
                "site": "internal",
            }
            # The binary and granular data sets are separate report sets; the other labels are unknown.
            row[BINARY_LABEL] = pd.NA if granular_set else rep.labels[BINARY_LABEL]
            for c in GRANULAR_CATEGORIES:
                row[c] = rep.labels[c] if granular_set else pd.NA
            rows.append(row)
    dev = pd.DataFrame(rows)
    for col in (BINARY_LABEL, *GRANULAR_CATEGORIES):
        dev[col] = dev[col].astype("Int64")

    tables: dict[str, pd.DataFrame] = {"reports": dev}
    counter = [0]

    def holdout_row(patient: _Patient, rep: SyntheticReport, names: Sequence[str]) -> dict:
        counter[0] += 1
        row = {
            "report_id": f"H{counter[0]:07d}",
            "patient_id": patient.patient_id,
            "text": rep.text,
            "site": "internal",
        }
        row.update(_image_labels(rep.labels, names, image_label_disagreement, rng))
        return row

    # Binary image-label hold-out: new exams of existing patients (their other exams must leave dev).
    binary_rows = []
    for _ in range(n_image_binary):
        patient = rng.choice(patients)
        binary_rows.append(holdout_row(patient, _exam(patient, 1, rng), [BINARY_LABEL]))
    tables[f"image_labels_{BINARY_LABEL}"] = pd.DataFrame(binary_rows)

    # Category hold-outs, ~50 % positive each (paper: "approximately 50 examinations with the category").
    for cat in GRANULAR_CATEGORIES:
        with_cat = [p for p in patients if cat in p.conditions]
        without = [p for p in patients if cat not in p.conditions]
        cat_rows = []
        for i in range(n_image_cat):
            pool = with_cat if (i % 2 == 0 and with_cat) else without
            patient = rng.choice(pool)
            cat_rows.append(holdout_row(patient, _exam(patient, 0, rng), [cat]))
        tables[f"image_labels_{cat}"] = pd.DataFrame(cat_rows)

    ext_rows = []
    for i in range(n_external):
        patient = _draw_patient(i, "EXT", rng, abnormal_rate)
        rep = _exam(patient, 0, rng, external=True)
        ext_rows.append(
            {
                "report_id": f"X{i:07d}",
                "patient_id": patient.patient_id,
                "text": rep.text,
                "site": "external",
                BINARY_LABEL: rep.labels[BINARY_LABEL],
            }
        )
    tables["external_site"] = pd.DataFrame(ext_rows)
    return tables


def write_synthetic_dataset(
    out_dir: str | Path, n_reports: int = 5000, seed: int = 0, **kwargs
) -> dict[str, Path]:
    """Write the tables of :func:`generate_tables` as CSV files under ``out_dir``; return their paths.

    An existing directory is reused only if it was written with the same arguments (a marker file
    records them), so a demo never silently trains on stale data.
    """
    out = Path(out_dir)
    signature = (
        f"reportsup synthetic_mri_reports n_reports={n_reports} seed={seed} {sorted(kwargs.items())}\n"
    )

    def write(folder: Path) -> None:
        for name, table in generate_tables(n_reports=n_reports, seed=seed, **kwargs).items():
            table.to_csv(folder / f"{name}.csv", index=False)

    write_once(out, signature, write)
    return {p.stem: p for p in sorted(out.glob("*.csv"))}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic head-MRI report tables (ALARM schema).")
    parser.add_argument("out_dir")
    parser.add_argument("--n-reports", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_synthetic_dataset(args.out_dir, args.n_reports, args.seed).items():
        print(f"{name}: {path}")


def synthetic_holdout_names(labels: Sequence[str]) -> dict[str, str]:
    """``{test set name: synthetic table name}`` for the hold-outs that apply to ``labels``.

    One label: its image-label set (``image_label``) and, for ``abnormal``, the external site. Several
    labels (a multi-label model): one image-label set per label (``image_label_<label>``).
    """
    unknown = [lb for lb in labels if lb not in (BINARY_LABEL, *GRANULAR_CATEGORIES)]
    if unknown:
        raise ValueError(
            f"demo=true: the synthetic reports have no label(s) {unknown}; choose data.labels among "
            f"{[BINARY_LABEL, *GRANULAR_CATEGORIES]}."
        )
    out = {}
    for lb in labels:
        out["image_label" if len(labels) == 1 else f"image_label_{lb}"] = f"image_labels_{lb}"
    if BINARY_LABEL in labels:
        out["external_site"] = "external_site"
    return out


def demo_data_config(
    data_dir: str | Path, labels: Sequence[str], n_reports: int = 2500, seed: int = 0, n_unlabelled: int = 0
) -> dict:
    """``data.*`` values for ``demo=true``: the synthetic development table and the hold-outs of ``labels``;
    with ``n_unlabelled`` also a text-only table of that many further reports (another seed) as
    ``unlabelled_path``, the unlabelled archive of Wood et al. that the word2vec baseline trains on."""
    paths = write_synthetic_dataset(
        Path(data_dir) / f"synthetic_mri_reports_n{n_reports}_s{seed}", n_reports, seed
    )
    holdouts = {name: str(paths[table]) for name, table in synthetic_holdout_names(list(labels)).items()}
    out = {"path": str(paths["reports"]), "holdouts": holdouts}
    if n_unlabelled:
        folder = Path(data_dir) / f"synthetic_mri_unlabelled_n{n_unlabelled}_s{seed}"
        signature = f"reportsup synthetic_mri_reports unlabelled n={n_unlabelled} seed={seed}\n"

        def write(target: Path) -> None:
            table = generate_tables(n_reports=n_unlabelled, seed=seed + 1_000_003)["reports"]
            table[["text"]].to_csv(target / "unlabelled_reports.csv", index=False)

        write_once(folder, signature, write)
        out["unlabelled_path"] = str(folder / "unlabelled_reports.csv")
    return out

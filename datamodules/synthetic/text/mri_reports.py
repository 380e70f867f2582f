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

Text only: :func:`compose_report` is a pure function of the conditions and a seeded
``random.Random``; the tables and files are written by :mod:`datamodules.synthetic.datasets.mri_reports`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

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

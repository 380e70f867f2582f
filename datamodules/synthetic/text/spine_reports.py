"""Synthetic Italian lumbar-spine X-ray reports (spine paper, "Data, Images and Outputs"): text only.

:func:`write_report` turns one session's report truth (finding -> 0/1, see
:mod:`datamodules.synthetic.spine_sessions`) into an unstructured, multi-line Italian report: graded and
hedged phrasings, negations that may cover several findings, chained clauses, capitals, line breaks
mid-sentence and typing slips, the error sources the paper names for its NLP. A pure function of the
findings and a seeded ``random.Random``; it writes no files (:mod:`datamodules.synthetic.datasets.spine`
does).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from datamodules.synthetic.spine_sessions import LEVEL_WEIGHTS, VERTEBRAE
from reportsup.contracts.labels.spine import FINDINGS, check_findings

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

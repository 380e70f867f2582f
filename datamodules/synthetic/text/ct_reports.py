"""Synthetic head-CT reports written from lesion specifications (Liu et al. 2023, Tables S4, S5).

Each scan's :class:`~datamodules.synthetic.lesion_spec.ScanSpec` is turned into a report with a ``Findings:``
and an ``Impression:`` section. Findings hold one sentence per lesion in the typical wording of
Tables S4/S5 ("hematoma", "edema", "crescent-shaped high density under the left frontal cranial
plate", "mixed density", "subarachnoid", "fluid density"), several regions per sentence ("in the
left frontal and temporal lobes"), bilateral findings, other-region ("cerebral falx") and
unclear-region ("surgery area", "left hemisphere") locations, and normal template sentences that
radiologists repeat across reports, including negations ("No abnormal density in the brain
parenchyma") and look-alikes that are *not* labels by the paper's definitions (calcification).
The Impression repeats diagnoses with region words, so reading beyond Findings would mislabel.

Labels follow from the specification, never from the text: a lesion sentence gets exactly the
lesion's regions and its family's types; every other sentence gets none. The report's gold matrix
is :func:`~datamodules.synthetic.lesion_spec.abnormality_matrix` of its spec. About 1 % of reports have no
Findings section (e.g. "Report to follow."), to exercise that error path.

``language="zh"`` writes the same reports in Chinese, as the paper's were ("All reports were written in
Chinese"): ``检查所见：`` / ``影像所见：`` Findings, ``诊断意见：`` / ``印象：`` end headers, sides as 左侧 /
右侧 / 双侧, and the size phrase 约20mm左右 ("about"), whose 左右 is no side word. The English output is
unchanged by the Chinese mode (same random draws, byte-identical text).

Text only: :func:`write_report` is a pure function of a spec and a seeded ``random.Random``; the report
and sentence tables are written by :mod:`datamodules.synthetic.datasets.ct_reports`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datamodules.synthetic.lesion_spec import Lesion, ScanSpec
from reportsup.contracts.labels.crossdl import LabelSpace

REGION_WORDS: dict[str, tuple[str, ...]] = {
    "frontal_lobe": ("frontal lobe", "frontal white matter", "frontal cortex"),
    "parietal_lobe": ("parietal lobe", "parietal white matter"),
    "temporal_lobe": ("temporal lobe", "temporal cortex"),
    "occipital_lobe": ("occipital lobe",),
    "centrum_ovale": ("centrum ovale",),
    "basal_ganglia": (
        "basal ganglia region",
        "external capsule",
        "internal capsule",
        "lenticular nucleus",
        "caudate nucleus",
    ),
    "lateral_ventricle": (
        "lateral ventricle",
        "anterior horn of the lateral ventricle",
        "posterior horn of the lateral ventricle",
    ),
    "cerebellum": ("cerebellar hemisphere", "cerebellum"),
    "brain_stem": ("brain stem", "pons", "midbrain", "medulla oblongata"),
}
EXTRA_SPACE = {
    "subdural_hematoma": ("under the {side}{region} cranial plate", "in the {side}{region} subdural space"),
    "epidural_hematoma": ("in the {side}{region} epidural space", "under the {side}{region} cranial plate"),
    "subarachnoid": ("in the {side}{region} sulci", "in the {side}{region} subarachnoid space"),
    "mixed_extra": ("under the {side}{region} cranial plate",),
    "effusion": ("under the {side}{region} cranial plate", "in the {side}{region} subdural space"),
}
TEMPLATES: dict[str, tuple[str, ...]] = {
    "hematoma": (
        "There is a patchy high density shadow {loc}, about {size} mm in diameter, consistent with a hematoma.",
        "A hematoma is seen {loc}.",
        "A hyperdense focus is seen {loc}, hemorrhage considered.",
    ),
    "hematoma_with_edema": (
        "There is a hyperdensity area with clear boundary {loc}, with an irregular hypodensity area in the periphery.",
        "A hematoma is seen {loc} with surrounding edema.",
    ),
    "mixed_intra": (
        "Mixed density shadow is seen {loc}.",
        "There is a mixed density lesion {loc}, about {size} mm.",
    ),
    "edema": (
        "Patchy low density shadow is seen {loc}, edema considered.",
        "Decreased density is seen {loc}.",
    ),
    "softening": (
        "A softening lesion with fluid density is seen {loc}.",
        "There is a hypodense area {loc} with clear margins.",
    ),
    "subdural_hematoma": (
        "A crescent-shaped high density shadow is seen {loc}, consistent with a subdural hematoma.",
        "Subdural hematoma {loc}, with a maximum thickness of about {size} mm.",
    ),
    "epidural_hematoma": ("A biconvex high density is seen {loc}, epidural hematoma considered.",),
    "subarachnoid": ("Linear high density is seen {loc}, suggesting subarachnoid hemorrhage.",),
    "intraventricular": ("High density is seen {loc}, consistent with intraventricular hemorrhage.",),
    "mixed_extra": ("A crescent-shaped mixed density is seen {loc}.",),
    "effusion": ("Crescent-shaped fluid density is seen {loc}, subdural effusion considered.",),
}
IMPRESSION = {
    "hematoma": "intracerebral hematoma",
    "hematoma_with_edema": "intracerebral hemorrhage with edema",
    "mixed_intra": "mixed density lesion",
    "edema": "cerebral edema",
    "softening": "encephalomalacia",
    "subdural_hematoma": "subdural hematoma",
    "epidural_hematoma": "epidural hematoma",
    "subarachnoid": "subarachnoid hemorrhage",
    "intraventricular": "intraventricular hemorrhage",
    "mixed_extra": "chronic subdural hematoma",
    "effusion": "subdural effusion",
}
# Normal sentences, repeated across reports as radiologists reuse templates; none carries a label.
NORMAL_ALWAYS_SAFE = (
    "The ventricular system is normal in size and shape.",
    "The midline structures are centered.",
    "No abnormality of the skull is seen.",
    "The sulci and cisterns are not widened.",
    "Calcification is seen in the bilateral basal ganglia.",  # not a hyperdensity label (Table S5)
    "Physiological calcification of the pineal gland.",
)
NORMAL_IF_NO_INTRA = (
    "No abnormal density in the brain parenchyma.",
    "The gray-white matter boundary is clear.",
)
NORMAL_IF_NO_EXTRA = ("No abnormal density under the cranial plate.", "No extracerebral collection is seen.")
FINDINGS_HEADERS = ("Findings:", "FINDINGS:", "Findings:\n")
NO_FINDINGS_TEXTS = ("Report to follow.", "Impression: see previous report.", "Examination cancelled.")


# --- Chinese wording (language="zh"): the same families, regions and normal templates --------------------
REGION_WORDS_ZH: dict[str, tuple[str, ...]] = {
    "frontal_lobe": ("额叶", "额叶白质", "额叶皮层"),
    "parietal_lobe": ("顶叶", "顶叶白质"),
    "temporal_lobe": ("颞叶", "颞叶皮层"),
    "occipital_lobe": ("枕叶",),
    "centrum_ovale": ("半卵圆中心",),
    "basal_ganglia": ("基底节区", "外囊", "内囊", "豆状核", "尾状核"),
    "lateral_ventricle": ("侧脑室", "侧脑室前角", "侧脑室后角"),
    "cerebellum": ("小脑半球", "小脑"),
    "brain_stem": ("脑干", "脑桥", "中脑", "延髓"),
}
#: the convexity part of a lobe, as the extraparenchymal phrases name it ("额顶部颅板下": frontoparietal)
CONVEXITY_ZH = {"frontal_lobe": "额", "parietal_lobe": "顶", "temporal_lobe": "颞", "occipital_lobe": "枕"}
EXTRA_SPACE_ZH = {
    "subdural_hematoma": ("{side}{region}部颅板下", "{side}{region}部硬膜下"),
    "epidural_hematoma": ("{side}{region}部硬膜外", "{side}{region}部颅板下"),
    "subarachnoid": ("{side}{region}部脑沟内", "{side}{region}部蛛网膜下腔"),
    "mixed_extra": ("{side}{region}部颅板下",),
    "effusion": ("{side}{region}部颅板下", "{side}{region}部硬膜下"),
}
SIDE_ZH = {"bilateral ": "双侧", "left ": "左侧", "right ": "右侧", "": ""}
LOCATION_TEXT_ZH = {
    "cerebral falx": "大脑镰",
    "third ventricle": "第三脑室",
    "fourth ventricle": "第四脑室",
    "lateral fissure cistern": "外侧裂池",
    "left hemisphere": "左侧大脑半球",
    "right hemisphere": "右侧大脑半球",
    "surgery area": "术区",
    "operative region": "手术区域",
}
TEMPLATES_ZH: dict[str, tuple[str, ...]] = {
    "hematoma": (
        "{loc}见片状高密度影，大小约{size}mm，考虑血肿。",
        "{loc}见血肿。",
        "{loc}见高密度灶，考虑出血。",
        "{loc}见类圆形高密度影，直径约{size}mm左右。",
    ),
    "hematoma_with_edema": ("{loc}见边界清楚的高密度影，周围见不规则低密度区。", "{loc}见血肿，周围伴水肿。"),
    "mixed_intra": ("{loc}见混杂密度影。", "{loc}见混杂密度病灶，大小约{size}mm。"),
    "edema": ("{loc}见片状低密度影，考虑水肿。", "{loc}密度减低。"),
    "softening": ("{loc}见软化灶，呈液体密度。", "{loc}见边界清楚的低密度区。"),
    "subdural_hematoma": ("{loc}见新月形高密度影，考虑硬膜下血肿。", "{loc}硬膜下血肿，最大厚度约{size}mm。"),
    "epidural_hematoma": ("{loc}见双凸形高密度影，考虑硬膜外血肿。",),
    "subarachnoid": ("{loc}见线样高密度影，提示蛛网膜下腔出血。",),
    "intraventricular": ("{loc}内见高密度影，考虑脑室内出血。",),
    "mixed_extra": ("{loc}见新月形混杂密度影。",),
    "effusion": ("{loc}见新月形液体密度影，考虑硬膜下积液。",),
}
IMPRESSION_ZH = {
    "hematoma": "脑内血肿",
    "hematoma_with_edema": "脑出血伴水肿",
    "mixed_intra": "混杂密度病灶",
    "edema": "脑水肿",
    "softening": "脑软化灶",
    "subdural_hematoma": "硬膜下血肿",
    "epidural_hematoma": "硬膜外血肿",
    "subarachnoid": "蛛网膜下腔出血",
    "intraventricular": "脑室内出血",
    "mixed_extra": "慢性硬膜下血肿",
    "effusion": "硬膜下积液",
}
NORMAL_ALWAYS_SAFE_ZH = (
    "脑室系统大小、形态正常。",
    "中线结构居中。",
    "颅骨未见异常。",
    "脑沟、脑池未见增宽。",
    "双侧基底节区见钙化灶。",  # not a hyperdensity label (Table S5)
    "松果体生理性钙化。",
)
NORMAL_IF_NO_INTRA_ZH = ("脑实质内未见异常密度影。", "灰白质分界清楚。")
NORMAL_IF_NO_EXTRA_ZH = ("颅板下未见异常密度影。", "未见脑外积液。")
POST_OPERATIVE_ZH = "颅骨术后改变。"
FINDINGS_HEADERS_ZH = ("检查所见：", "影像所见：", "检查所见:\n")
END_HEADERS_ZH = ("诊断意见：", "印象：")
NO_FINDINGS_TEXTS_ZH = ("报告待发。", "诊断意见：见前次报告。", "检查取消。")
LANGUAGES = ("en", "zh")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _side_groups(regions: Sequence[str]) -> list[tuple[str, list[str]]]:
    """[(side prefix, [base region, ...])] with 'bilateral ' where both sides of a base are named."""
    bases: dict[str, set[str]] = {}
    for r in regions:
        side, _, base = r.partition("_") if r.startswith(("left_", "right_")) else ("", "", r)
        bases.setdefault(base, set()).add(side)
    groups: dict[str, list[str]] = {}
    for base, sides in bases.items():
        prefix = (
            "bilateral "
            if sides == {"left", "right"}
            else (f"{next(iter(sides))} " if "" not in sides else "")
        )
        groups.setdefault(prefix, []).append(base)
    return list(groups.items())


def location_phrase(lesion: Lesion, rng: random.Random) -> str:
    """Where the lesion is, in report words: 'in the left frontal and temporal lobes', 'under the
    bilateral frontal cranial plate', 'in the cerebral falx'."""
    if lesion.location_text:
        return f"in the {lesion.location_text}"
    parts = []
    for prefix, bases in _side_groups(lesion.regions):
        if lesion.family in EXTRA_SPACE:
            names = [b.replace("_lobe", "") for b in bases]
            template = rng.choice(EXTRA_SPACE[lesion.family])
            parts.append(template.format(side=prefix, region=_join(names)))
        else:
            words = [rng.choice(REGION_WORDS[b]) for b in bases]
            plural = "s" if prefix == "bilateral " or len(words) > 1 else ""
            if len(words) > 1 and all(w.endswith(" lobe") for w in words):
                phrase = _join([w.removesuffix(" lobe") for w in words]) + " lobe" + ("s" if plural else "")
            else:
                phrase = _join(words) + (plural if len(words) == 1 and prefix == "bilateral " else "")
            parts.append(f"in the {prefix}{phrase}")
    return _join(parts)


def location_phrase_zh(lesion: Lesion, rng: random.Random) -> str:
    """Where the lesion is, in Chinese report words: 左侧额叶、颞叶 / 双侧额顶部颅板下 / 大脑镰."""
    if lesion.location_text:
        return LOCATION_TEXT_ZH[lesion.location_text]
    parts = []
    for prefix, bases in _side_groups(lesion.regions):
        side = SIDE_ZH[prefix]
        if lesion.family in EXTRA_SPACE_ZH:
            region = "".join(CONVEXITY_ZH[b] for b in bases)
            parts.append(rng.choice(EXTRA_SPACE_ZH[lesion.family]).format(side=side, region=region))
        else:
            words = [rng.choice(REGION_WORDS_ZH[b]) for b in bases]
            parts.append(side + ("、".join(words[:-1]) + "及" + words[-1] if len(words) > 1 else words[0]))
    return "、".join(parts[:-1]) + "及" + parts[-1] if len(parts) > 1 else parts[0]


def lesion_sentence(lesion: Lesion, rng: random.Random, language: str = "en") -> str:
    if language == "zh":
        return rng.choice(TEMPLATES_ZH[lesion.family]).format(
            loc=location_phrase_zh(lesion, rng), size=int(lesion.size_mm)
        )
    text = rng.choice(TEMPLATES[lesion.family]).format(
        loc=location_phrase(lesion, rng), size=int(lesion.size_mm)
    )
    return text[0].upper() + text[1:]


def write_report(
    spec: ScanSpec, rng: random.Random, space: LabelSpace, language: str = "en"
) -> tuple[str, list[dict]]:
    """The report text and its Findings sentences with their labels (region and type vectors), in
    English or (``language="zh"``) Chinese."""
    if language not in LANGUAGES:
        raise ValueError(f"synthetic CT reports: language {language!r} is not one of {LANGUAGES}.")
    zh = language == "zh"
    if rng.random() < 0.01:
        return rng.choice(NO_FINDINGS_TEXTS_ZH if zh else NO_FINDINGS_TEXTS), []
    sentences: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for lesion in spec.lesions:
        sentences.append((lesion_sentence(lesion, rng, language), lesion.regions, lesion.types))
    has_intra = any(t.startswith("intra") for les in spec.lesions for t in les.types)
    has_extra = any(t.startswith("extra") for les in spec.lesions for t in les.types)
    normals = list(NORMAL_ALWAYS_SAFE_ZH if zh else NORMAL_ALWAYS_SAFE)
    normals += [] if has_intra else list(NORMAL_IF_NO_INTRA_ZH if zh else NORMAL_IF_NO_INTRA)
    normals += [] if has_extra else list(NORMAL_IF_NO_EXTRA_ZH if zh else NORMAL_IF_NO_EXTRA)
    for text in rng.sample(normals, k=min(len(normals), rng.randint(2, 5))):
        sentences.append((text, (), ()))
    if spec.post_operative:
        sentences.append(
            (POST_OPERATIVE_ZH if zh else "Postoperative changes of the skull are seen.", (), ())
        )
    rng.shuffle(sentences)
    if zh:
        text = _chinese_report_text(spec, [s for s, _, _ in sentences], rng)
    else:
        findings = " ".join(s for s, _, _ in sentences)
        impression = (
            "; ".join(sorted({IMPRESSION[les.family] for les in spec.lesions})) or "no obvious abnormality"
        )
        if spec.lesions and not spec.lesions[0].location_text:
            impression = f"{location_phrase(spec.lesions[0], rng).removeprefix('in the ')} {impression}"
        text = f"{rng.choice(FINDINGS_HEADERS)} {findings}\nImpression: {impression[0].upper() + impression[1:]}."
    rows = [
        {
            "text": s,
            **{r: int(r in regions) for r in space.regions},
            **{t: int(t in types) for t in space.types},
        }
        for s, regions, types in sentences
    ]
    return text, rows


def _chinese_report_text(spec: ScanSpec, sentences: list[str], rng: random.Random) -> str:
    """检查所见：<sentences, no spaces> / 诊断意见：<diagnoses, the first with its location>。"""
    impression = "；".join(sorted({IMPRESSION_ZH[les.family] for les in spec.lesions})) or "未见明显异常"
    if spec.lesions and not spec.lesions[0].location_text:
        impression = location_phrase_zh(spec.lesions[0], rng) + impression
    return (
        f"{rng.choice(FINDINGS_HEADERS_ZH)}{''.join(sentences)}\n{rng.choice(END_HEADERS_ZH)}{impression}。"
    )

"""The 12 radiological findings of the lumbar-spine study ("Data, Images and Outputs", items 1-12).

Declared once: configs, synthetic data, the report NLP, the image DataModule and the models refer to
these names (a finding is a label column of the reports table and of the image label tables).
"""

from __future__ import annotations

#: name -> the paper's definition
FINDING_DEFINITIONS: dict[str, str] = {
    "instrumentation": "spinal implants: pedicle screws, posterior rods, cages, artificial discs",
    "loss_of_lordosis": "reduced, absent or inverted lumbar lordosis",
    "facet_sclerosis": "sclerosis, hypertrophy or degeneration of the facet joints",
    "sij_degeneration": "sclerosis or degeneration of the sacroiliac joints",
    "osteophytosis": "osteophytes on the thoracolumbar vertebral bodies",
    "osteoporosis": "osteopenia or osteoporosis",
    "diffuse_degeneration": "diffuse spondyloarthritis and degeneration",
    "scoliosis": "scoliosis or scoliotic attitude",
    "fractures": "osteoporotic or traumatic vertebral fractures",
    "disc_narrowing": "narrowing of the intervertebral space in at least one lumbar level",
    "anterolisthesis": "anterolisthesis of at least one vertebra",
    "retrolisthesis": "retrolisthesis of at least one vertebra",
}

FINDINGS: tuple[str, ...] = tuple(FINDING_DEFINITIONS)

#: the two standing projections of one session, fused as R = coronal, B = sagittal (Figure 2)
VIEWS: tuple[str, ...] = ("coronal", "sagittal")


def check_findings(names: list[str] | tuple[str, ...], where: str) -> None:
    """Raise ``ValueError`` naming ``where`` if a name is not one of :data:`FINDINGS`."""
    unknown = [n for n in names if n not in FINDING_DEFINITIONS]
    if unknown:
        raise ValueError(f"{where}: unknown finding(s) {unknown}; the spine findings are {list(FINDINGS)}.")

"""Synthetic head-MRI report data sets for demos and tests (ALARM schema, Wood et al. 2021, Fig. 1).

Patients with conditions, their exams over time, the development table, the image-label hold-outs
and the external site; each report's text and labels come from
:func:`datamodules.synthetic.text.mri_reports.compose_report` (which states the labelling rules).

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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from datamodules.synthetic.text.mri_reports import SyntheticReport, compose_report
from datamodules.synthetic.writing import write_once
from reportsup.contracts.labels.alarm import BINARY_LABEL, GRANULAR_CATEGORIES


@dataclass
class _Patient:
    """One patient, drawn once: every exam of theirs is written from the same age and conditions."""

    patient_id: str
    age: int
    conditions: set[str]
    other_abnormal: bool


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic head-MRI report tables (ALARM schema).")
    parser.add_argument("out_dir")
    parser.add_argument("--n-reports", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_synthetic_dataset(args.out_dir, args.n_reports, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()

"""Synthetic head-CT report tables for the Cross-DL discretizer demo and tests (Liu et al. 2023).

Patients with one to three scans; each scan's :class:`~datamodules.synthetic.lesion_spec.ScanSpec` is
drawn by :func:`~datamodules.synthetic.lesion_spec.sample_scan_spec`, its report written by
:func:`datamodules.synthetic.text.ct_reports.write_report`, and its gold matrix is
:func:`~datamodules.synthetic.lesion_spec.abnormality_matrix` of the spec. Written by
:func:`write_ct_dataset`::

    ct_reports.csv      report_id, scan_id, patient_id, text, gold matrix <region>__<type>
    ct_sentences.csv    sentence_id, report_id, patient_id, text, <region>..., <type>...  (annotated patients)
    lesion_specs.jsonl  the specs everything was generated from

``language="zh"`` writes Chinese reports (the paper's language); the English tables are what they were
before the Chinese mode existed (same folder name, same bytes).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from datamodules.synthetic.lesion_spec import abnormality_matrix, sample_scan_spec
from datamodules.synthetic.text.ct_reports import write_report
from datamodules.synthetic.writing import write_once
from reportsup.contracts.labels.crossdl import LabelSpace


def generate_ct_tables(
    n_reports: int = 2000,
    seed: int = 0,
    annotated_fraction: float = 0.5,
    abnormal_rate: float = 0.6,
    space: LabelSpace | None = None,
    language: str = "en",
) -> dict[str, pd.DataFrame | list]:
    """Reports (with gold matrices), the sentence-annotation table of a subset of patients, and the specs.

    ``annotated_fraction`` of patients have their report sentences annotated (the paper annotated a
    small portion of its reports: 4,807 sentences); the rest are the unlabelled reports to discretize.
    """
    space = space or LabelSpace()
    rng = random.Random(seed)
    reports, sentences, specs = [], [], []
    patient = 0
    while len(reports) < n_reports:
        pid = f"CTP{patient:06d}"
        annotated = rng.random() < annotated_fraction
        for _ in range(rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1))[0]):
            if len(reports) >= n_reports:
                break
            rid = f"CT{len(reports):07d}"
            spec = sample_scan_spec(f"S{len(reports):07d}", pid, rng, abnormal_rate)
            text, rows = write_report(spec, rng, space, language)
            matrix = abnormality_matrix(spec, space).reshape(-1)
            reports.append(
                {
                    "report_id": rid,
                    "scan_id": spec.scan_id,
                    "patient_id": pid,
                    "text": text,
                    **dict(zip(space.matrix_columns(), matrix.tolist(), strict=True)),
                }
            )
            specs.append({"report_id": rid, **asdict(spec)})
            if annotated:
                for k, row in enumerate(rows):
                    sentences.append(
                        {"sentence_id": f"{rid}_s{k:02d}", "report_id": rid, "patient_id": pid, **row}
                    )
        patient += 1
    return {
        "ct_reports": pd.DataFrame(reports),
        "ct_sentences": pd.DataFrame(sentences),
        "lesion_specs": specs,
    }


def write_ct_dataset(out_dir: str | Path, n_reports: int = 2000, seed: int = 0, **kwargs) -> dict[str, Path]:
    """Write ``ct_reports.csv``, ``ct_sentences.csv`` and ``lesion_specs.jsonl``; reuse an identical earlier write."""
    out = Path(out_dir)
    signature = f"reportsup synthetic_ct_reports n_reports={n_reports} seed={seed} {sorted(kwargs.items())}\n"
    names = {
        "ct_reports": out / "ct_reports.csv",
        "ct_sentences": out / "ct_sentences.csv",
        "lesion_specs": out / "lesion_specs.jsonl",
    }

    def write(folder: Path) -> None:
        tables = generate_ct_tables(n_reports=n_reports, seed=seed, **kwargs)
        tables["ct_reports"].to_csv(names["ct_reports"], index=False)
        tables["ct_sentences"].to_csv(names["ct_sentences"], index=False)
        names["lesion_specs"].write_text("".join(json.dumps(s) + "\n" for s in tables["lesion_specs"]))

    write_once(out, signature, write)
    return names


def demo_data_config(
    data_dir: str | Path, n_reports: int = 1500, seed: int = 0, language: str = "en"
) -> dict:
    """``data.*`` values for ``demo=true``: synthetic sentence annotations and reports with gold matrices,
    in ``language`` (``data.language``: the demo's default is English, ``data.language=zh`` Chinese)."""
    # English keeps its folder and signature from before the Chinese mode, so earlier demo data is reused.
    extra = {} if language == "en" else {"language": language}
    folder = f"synthetic_ct_reports_n{n_reports}_s{seed}" + ("" if language == "en" else f"_{language}")
    paths = write_ct_dataset(Path(data_dir) / folder, n_reports, seed, **extra)
    return {"sentences_path": str(paths["ct_sentences"]), "reports_path": str(paths["ct_reports"])}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic head-CT report tables (Cross-DL schema).")
    parser.add_argument("out_dir")
    parser.add_argument("--n-reports", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--language", choices=("en", "zh"), default="en", help="report language (paper: zh)")
    args = parser.parse_args(argv)
    extra = {} if args.language == "en" else {"language": args.language}
    for name, path in write_ct_dataset(args.out_dir, args.n_reports, args.seed, **extra).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()

"""One page per run: ``report.html``, everything a finished run wrote, readable offline (issue 22 item 5).

The page is a pure function of the run directory (DESIGN.md "Run directory contract"), read through
:mod:`reportsup.contracts.run_dir`: the config that ran (``config_resolved.yaml``), the data summary
(``data_summary.json``, ``splits.csv``), per test set the metric table of every label with its patient
bootstrap CI (``metrics.json``, whatever metrics it holds), the figures under ``plots/`` (ROC, PR,
reliability, confusion), confusion matrices at the threshold the metrics used (from
``predictions_<set>.csv`` when ``metrics.json`` has no counts), for report models the ten most confident
errors per test set and label (with their attention highlights when the run holds
:data:`REPORT_ATTENTION_JSON`, written by :mod:`reportsup.runner.run_report_attention` at the end of
training), and for DaMIL a few ``overlays/`` PNGs. Images are embedded as base64 ``data:`` URIs, so the
page is one self-contained file; every piece of user text (report texts, ids, labels, the config) is
HTML-escaped (Jinja2 autoescape); the page needs no JavaScript.

    python -m reportsup.analysis.run_report outputs/alarm_binary/<run>      # (re)write <run>/report.html
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup

from reportsup.analysis.interpretability import attention_html
from reportsup.analysis.metrics import confusion_counts
from reportsup.contracts.run_dir import (
    CONFIG_RESOLVED,
    DATA_SUMMARY,
    HOLDOUTS,
    LABEL_MANIFEST,
    OVERLAYS,
    PLOTS,
    PROVENANCE_JSON,
    REPORT_ATTENTION_JSON,
    REPORT_HTML,
    SPLITS_CSV,
    VAL_THRESHOLD_SUFFIX,
    predictions_csv,
    read_config,
    read_json,
    read_metrics,
    read_overrides,
    write_text,
)

N_ERRORS = 10  # issue 22 item 5: "the ten most confident errors"
N_OVERLAYS = 6  # DaMIL: "a few overlay images" per test set
# Figure kinds by file-name prefix, in the order the page shows them (evaluation callbacks' names).
FIGURE_KINDS = (
    ("roc_", "ROC curves"),
    ("pr_", "Precision-recall curves"),
    ("calibration_", "Reliability diagrams (calibration)"),
    ("confusion_", "Confusion matrices"),
)
CI_FIELDS = ("value", "ci_low", "ci_high")


@dataclass(frozen=True)
class Figure:
    """One embedded PNG: its caption (the file name, relative to the run) and its ``data:`` URI."""

    caption: str
    uri: str


def embed_png(path: Path, run_dir: Path) -> Figure:
    """A PNG as a base64 ``data:`` URI: the page stays one file, readable offline and when mailed."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return Figure(str(path.relative_to(run_dir)), f"data:image/png;base64,{data}")


def format_metric(fields: Any) -> str:
    """``0.912 [0.871, 0.945]``, ``0.912`` without a CI, ``37`` for counts, ``n/a`` for NaN."""
    if not isinstance(fields, Mapping) or "value" not in fields:
        return html.escape(str(fields)) if fields is not None else ""
    value = fields["value"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) > 1):
        return str(int(value))
    text = f"{float(value):.3f}"
    low, high = fields.get("ci_low"), fields.get("ci_high")
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def metric_table(per_label: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Columns (every metric any label of the set has, first-seen order) and one row of formatted cells
    per label. Generic over the keys of ``metrics.json``: new metrics appear without a change here."""
    columns: list[str] = []
    for per_metric in per_label.values():
        columns += [m for m in per_metric if m not in columns]
    rows = [
        (label, [format_metric(per_metric.get(m)) for m in columns])
        for label, per_metric in per_label.items()
    ]
    return columns, rows


def decision_threshold(config: Mapping[str, Any], label_metrics: Mapping[str, Any] | None = None) -> float:
    """The threshold the metrics of one set and label were computed at: the label's own (a
    ``<set>@val_threshold`` entry, issue 22 item 3), else the evaluator's (``callbacks.evaluator.threshold``,
    which follows ``model.threshold``), else 0.5 (the papers' threshold; also ``model.threshold=validation``'s
    base scoring)."""
    own = (label_metrics or {}).get("threshold")
    if isinstance(own, Mapping) and own.get("value") is not None:
        return float(own["value"])
    for section in ("callbacks", "model"):
        block = config.get(section) or {}
        value = (
            (block.get("evaluator") or {}).get("threshold")
            if section == "callbacks"
            else block.get("threshold")
        )
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.5


def set_predictions(run_dir: Path, test_set: str) -> pd.DataFrame | None:
    """``predictions_<set>.csv`` with string ids, or None without it. DaMIL's tables name the id column
    ``scan_id`` instead of the contract's ``id`` (lightning_modules/crossdl/damil/evaluation.py), so it is
    read here rather than by ``run_dir.read_predictions``, which insists on ``id``."""
    path = run_dir / predictions_csv(test_set)
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"id": str, "scan_id": str, "patient_id": str})
    if "id" not in table.columns and "scan_id" in table.columns:
        table = table.rename(columns={"scan_id": "id"})
    if "id" not in table.columns:
        raise ValueError(f"{path}: no 'id' (or 'scan_id') column (columns: {list(table.columns)[:8]} ...).")
    return table


def prediction_columns(pred: pd.DataFrame, label: str) -> list[str] | None:
    """``[<label>_true, <label>_prob]`` of a metrics label in a predictions table: as named, or with
    ``:`` written ``__`` (DaMIL's ``scan:<type>`` metrics are the ``scan__<type>`` columns); None if absent."""
    for name in dict.fromkeys((label, label.replace(":", "__"))):
        cols = [f"{name}_true", f"{name}_prob"]
        if set(cols) <= set(pred.columns):
            return cols
    return None


def labelled(pred: pd.DataFrame, label: str) -> pd.DataFrame:
    """``id, patient_id, y, prob`` of the rows with a known ``label`` (empty truths are masked, as in the
    metrics); a table without the label's columns gives an empty frame."""
    cols = prediction_columns(pred, label)
    if cols is None:
        return pd.DataFrame(columns=["id", "patient_id", "y", "prob"])
    keep = ["id", *(["patient_id"] if "patient_id" in pred.columns else []), *cols]
    out = pred[keep].dropna(subset=cols).rename(columns={cols[0]: "y", cols[1]: "prob"})
    return out.astype({"y": int, "prob": float})


def confusion_at(pred: pd.DataFrame, label: str, threshold: float) -> dict[str, int] | None:
    """TP/TN/FP/FN of ``label`` with ``prob > threshold`` positive (the metrics' rule), or None
    when no row has a known truth."""
    rows = labelled(pred, label)
    if rows.empty:
        return None
    # copies: torch warns on the read-only arrays pandas hands out
    return confusion_counts(rows["y"].to_numpy().copy(), rows["prob"].to_numpy().copy(), threshold)


def confident_errors(pred: pd.DataFrame, label: str, threshold: float, limit: int = N_ERRORS) -> pd.DataFrame:
    """The ``limit`` false positives and false negatives farthest from the threshold (most confident
    first, ties by id for a stable page): the errors a reader most needs to see (issue 22 item 5;
    the same rule as ``reportsup-attention --select errors``)."""
    rows = labelled(pred, label)
    rows = rows.assign(pred=(rows["prob"] > threshold).astype(int))
    errors = rows[rows["y"] != rows["pred"]]
    errors = errors.assign(
        kind=np.where(errors["pred"] == 1, "false positive", "false negative"),
        confidence=(errors["prob"] - threshold).abs(),
    )
    return (
        errors.sort_values(["confidence", "id"], ascending=[False, True]).head(limit).reset_index(drop=True)
    )


def figures_in(folder: Path, run_dir: Path) -> list[tuple[str, list[Figure]]]:
    """The PNGs of ``plots/`` grouped by kind (ROC, PR, reliability, confusion, then any other)."""
    if not folder.is_dir():
        return []
    pngs = sorted(folder.glob("*.png"))
    groups: list[tuple[str, list[Figure]]] = []
    for prefix, title in FIGURE_KINDS:
        chosen = [p for p in pngs if p.name.startswith(prefix)]
        if chosen:
            groups.append((title, [embed_png(p, run_dir) for p in chosen]))
    known = tuple(prefix for prefix, _ in FIGURE_KINDS)
    other = [p for p in pngs if not p.name.startswith(known)]
    if other:
        groups.append(("Other figures", [embed_png(p, run_dir) for p in other]))
    return groups


def overlay_figures(run_dir: Path, limit: int = N_OVERLAYS) -> list[tuple[str, int, list[Figure]]]:
    """DaMIL overlays: per test set (``overlays/`` for the internal one, ``holdouts/<set>/overlays/``)
    the first ``limit`` PNGs by name, with the number written."""
    folders = [("test", run_dir / OVERLAYS)] + [
        (p.parent.name, p) for p in sorted((run_dir / HOLDOUTS).glob(f"*/{OVERLAYS}"))
    ]
    out = []
    for name, folder in folders:
        pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
        if pngs:
            out.append((name, len(pngs), [embed_png(p, run_dir) for p in pngs[:limit]]))
    return out


def data_summary(run_dir: Path) -> tuple[Any, dict[str, int]]:
    """``data_summary.json`` (as written, or None) and the patient-level split sizes from ``splits.csv``
    (rows per split; the summary's own counts may be by patient or by report)."""
    path = run_dir / DATA_SUMMARY
    summary = read_json(path) if path.is_file() else None
    sizes: dict[str, int] = {}
    splits = run_dir / SPLITS_CSV
    if splits.is_file():
        table = pd.read_csv(splits, dtype=str)
        if "split" in table.columns:
            sizes = {str(k): int(v) for k, v in table["split"].value_counts(sort=False).items()}
    return summary, sizes


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested summary as ``(dotted key, value)`` rows; lists shown as written."""
    if isinstance(data, Mapping):
        rows: list[tuple[str, str]] = []
        for key, value in data.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, str(data))]


def attention_entries(run_dir: Path) -> dict[str, dict[str, dict[str, str]]]:
    """``{set: {label: {id: highlighted html}}}`` from :data:`REPORT_ATTENTION_JSON` (``{}`` without it).
    The html is built here from the stored text and word weights by
    :func:`~reportsup.analysis.interpretability.attention_html`, which escapes the text."""
    path = run_dir / REPORT_ATTENTION_JSON
    if not path.is_file():
        return {}
    stored = read_json(path)
    out: dict[str, dict[str, dict[str, str]]] = {}
    for test_set, per_label in stored.items():
        for label, entries in per_label.items():
            for e in entries:
                words = [(int(s), int(t), float(w)) for s, t, w in e.get("words", [])]
                out.setdefault(test_set, {}).setdefault(label, {})[str(e["id"])] = attention_html(
                    str(e["text"]), words
                )
    return out


def test_set_sections(
    run_dir: Path, metrics: Mapping[str, Any], config: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per test set of ``metrics.json``: its metric table, confusion matrices and (report models) errors."""
    report_model = (run_dir / LABEL_MANIFEST).is_file()
    highlights = attention_entries(run_dir)
    sections = []
    for test_set, per_label in metrics.items():
        if not isinstance(per_label, Mapping):
            continue
        base = test_set.removesuffix(VAL_THRESHOLD_SUFFIX)
        pred = set_predictions(run_dir, base)
        columns, rows = metric_table(per_label)
        confusions, errors = [], []
        for label, label_metrics in per_label.items():
            threshold = decision_threshold(config, label_metrics)
            if all(k in label_metrics for k in ("tp", "tn", "fp", "fn")):
                counts = {k: int(label_metrics[k]["value"]) for k in ("tp", "tn", "fp", "fn")}
            else:
                counts = confusion_at(pred, label, threshold) if pred is not None else None
            if counts is not None:
                confusions.append({"label": label, "threshold": threshold, **counts})
            if report_model and pred is not None and test_set == base:
                chosen = confident_errors(pred, label, threshold)
                shown = highlights.get(test_set, {}).get(label, {})
                errors.append(
                    {
                        "label": label,
                        "threshold": threshold,
                        "rows": [
                            {**r, "html": Markup(shown[r["id"]]) if r["id"] in shown else None}
                            for r in chosen.to_dict("records")
                        ],
                        "highlighted": bool(shown),
                    }
                )
        sections.append(
            {
                "name": test_set,
                "columns": columns,
                "rows": rows,
                "confusions": confusions,
                "errors": errors,
                "predictions": pred is not None,
            }
        )
    return sections


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:90%}
pre{background:#f6f6f6;padding:.7em;overflow-x:auto;font-size:85%}
figure{display:inline-block;margin:.4em;vertical-align:top}figure img{max-width:30em}
figcaption{font-size:80%;color:#555}.text{line-height:1.7;white-space:pre-wrap}
.confusion td{min-width:3.5em}section.set{border-top:2px solid #ddd;margin-top:1.5em}
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">Written by reportsup (issue 22 item 5) from the files of this run folder; regenerate with
<code>python -m reportsup.analysis.run_report {{ run_dir }}</code>.</p>
<table>
<tr><th>run folder</th><td>{{ run_dir }}</td></tr>
<tr><th>experiment</th><td>{{ experiment }}</td></tr>
{% if overrides %}<tr><th>overrides</th><td>{{ overrides|join(" ") }}</td></tr>{% endif %}
{% if commit %}<tr><th>git commit</th><td>{{ commit }}</td></tr>{% endif %}
</table>

<h2>Config</h2>
{% if config_text %}<details><summary>{{ config_name }} ({{ config_text.count("\\n") }} lines)</summary>
<pre>{{ config_text }}</pre></details>
{% else %}<p class="note">No {{ config_name }} in this run folder.</p>{% endif %}

<h2>Data</h2>
{% if split_sizes %}<table><tr><th>split (splits.csv)</th><th>rows</th></tr>
{% for name, n in split_sizes.items() %}<tr><td>{{ name }}</td><td>{{ n }}</td></tr>{% endfor %}</table>{% endif %}
{% if summary_rows %}<details open><summary>data_summary.json</summary><table>
{% for key, value in summary_rows %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>{% endfor %}</table></details>
{% endif %}
{% if not split_sizes and not summary_rows %}<p class="note">No splits.csv or data_summary.json in this run folder.</p>{% endif %}

<h2>Metrics per test set</h2>
<p class="note">Value [95 % CI] from a patient-level bootstrap (metrics.json); counts without CI.</p>
{% for s in sections %}<section class="set">
<h3 id="set-{{ loop.index }}">{{ s.name }}</h3>
<table><tr><th>label</th>{% for c in s.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for label, cells in s.rows %}<tr><td>{{ label }}</td>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% if s.confusions %}<details{% if s.confusions|length <= 4 %} open{% endif %}><summary>Confusion matrices ({{ s.confusions|length }} labels)</summary>
{% for c in s.confusions %}<table class="confusion"><tr><th>{{ c.label }} at {{ "%.3g"|format(c.threshold) }}</th><th>predicted 1</th><th>predicted 0</th></tr>
<tr><th>true 1</th><td>{{ c.tp }}</td><td>{{ c.fn }}</td></tr><tr><th>true 0</th><td>{{ c.fp }}</td><td>{{ c.tn }}</td></tr></table>
{% endfor %}</details>{% endif %}
{% for e in s.errors %}<h4>{{ s.name }}, {{ e.label }}: the {{ e.rows|length }} most confident errors at threshold {{ "%.3g"|format(e.threshold) }}</h4>
{% if not e.rows %}<p class="note">No errors at this threshold.</p>{% else %}
{% if not e.highlighted %}<p class="note">No attention highlights for these reports in this run folder
({{ attention_file }} is written at the end of training for models with attention pooling, e.g. ALARM);
<code>reportsup-attention {{ run_dir }} --test-set {{ s.name }} --label {{ e.label }} --select errors</code> shows them.</p>{% endif %}
<table><tr><th>report id</th><th>patient</th><th>truth</th><th>probability</th><th>error</th></tr>
{% for r in e.rows %}<tr><td>{{ r.id }}</td><td>{{ r.patient_id }}</td><td>{{ r.y }}</td><td>{{ "%.3f"|format(r.prob) }}</td><td>{{ r.kind }}</td></tr>
{% if r.html %}<tr><td colspan="5" class="text">{{ r.html }}</td></tr>{% endif %}{% endfor %}
</table>{% endif %}{% endfor %}
</section>{% endfor %}
{% if not sections %}<p class="note">metrics.json holds no test set.</p>{% endif %}

<h2>Figures</h2>
{% for title, figures in figure_groups %}<h3>{{ title }}</h3>
{% for f in figures %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}
{% else %}<p class="note">No PNG under plots/.</p>{% endfor %}

{% if overlays %}<h2>Abnormality overlays</h2>
{% for name, total, figures in overlays %}<h3>{{ name }}: {{ figures|length }} of {{ total }}</h3>
{% for f in figures %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}
{% endfor %}{% endif %}
</body></html>
"""


def render_run_report(run_dir: str | Path) -> str:
    """The HTML of ``report.html`` for a finished run (``metrics.json`` present)."""
    run = Path(run_dir)
    metrics = read_metrics(run)  # a clear FileNotFoundError for a failed or unfinished run
    config = read_config(run)
    resolved = run / CONFIG_RESOLVED
    provenance = read_json(run / PROVENANCE_JSON) if (run / PROVENANCE_JSON).is_file() else {}
    summary, split_sizes = data_summary(run)
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(TEMPLATE).render(
        title=f"Run report: {config.get('name') or run.parent.name} / {run.name}",
        run_dir=str(run),
        experiment=config.get("name") or run.parent.name,
        overrides=read_overrides(run),
        commit=(provenance.get("git") or {}).get("commit")
        if isinstance(provenance.get("git"), Mapping)
        else None,
        config_name=CONFIG_RESOLVED,
        config_text=resolved.read_text(encoding="utf-8") if resolved.is_file() else "",
        split_sizes=split_sizes,
        summary_rows=flatten(summary) if summary is not None else [],
        sections=test_set_sections(run, metrics, config),
        attention_file=REPORT_ATTENTION_JSON,
        figure_groups=figures_in(run / PLOTS, run),
        overlays=overlay_figures(run),
    )


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``<run>/report.html`` (issue 22 item 5) and return its path; rewritten on every call."""
    return write_text(Path(run_dir) / REPORT_HTML, render_run_report(run_dir))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="(Re)write report.html of finished runs (issue 22 item 5).")
    parser.add_argument("run_dirs", nargs="+", help="run folders (with metrics.json)")
    args = parser.parse_args(argv)
    for run in args.run_dirs:
        try:
            print(f"wrote {write_run_report(run)}")
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"run_report: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])

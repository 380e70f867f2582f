"""What issue 22's done-when asks of a demo's ``report.html``, checked on the real demos' run folders
(tests/test_train_e2e.py for ALARM, tests/lightning_modules/crossdl/damil/test_damil_e2e.py for DaMIL):
every metric of ``metrics.json`` with its CI, the config, the figures embedded, and the ten most
confident errors with attention highlights (report models) or the overlays (DaMIL)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd

from reportsup.analysis.run_report import format_metric
from reportsup.contracts.run_dir import CONFIG_RESOLVED, METRICS_JSON, REPORT_ATTENTION_JSON, REPORT_HTML

CELL = re.compile(r"<td>([^<]*)</td>")
N_OVERLAYS = 6  # overlays shown per test set


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def check_metrics_config_and_figures(run: Path) -> tuple[str, dict]:
    """Every set's metric cells, the resolved config and every plot embedded; returns the page and metrics."""
    page = (run / REPORT_HTML).read_text()
    cells = CELL.findall(page)
    metrics = json.loads((run / METRICS_JSON).read_text())
    for test_set, per_label in metrics.items():
        assert f">{test_set}" in page, test_set
        for label, per_metric in per_label.items():
            for metric, fields in per_metric.items():
                assert format_metric(fields) in cells, (test_set, label, metric)
    pngs = sorted((run / "plots").glob("*.png"))
    assert {p.name[: p.name.index("_")] for p in pngs} >= {"roc", "pr", "calibration"}
    embedded = embedded_pngs(page)
    assert all(p.read_bytes() in embedded for p in pngs)
    assert (run / CONFIG_RESOLVED).read_text().splitlines()[0] in page
    assert "Confusion matrices (" in page and "predicted 1" in page
    assert "<h2>Data</h2>" in page
    return page, metrics


def check_report_model_page(run: Path, label: str = "abnormal") -> None:
    """A report model's page: the above, and per test set the ten most confident errors, highlighted."""
    page, metrics = check_metrics_config_and_figures(run)
    attention = json.loads((run / REPORT_ATTENTION_JSON).read_text())
    for test_set in metrics:
        if "@" in test_set:  # a set scored at other thresholds: same predictions
            continue
        pred = pd.read_csv(run / f"predictions_{test_set}.csv", dtype={"id": str})
        n_errors = int(((pred[f"{label}_prob"] > 0.5).astype(int) != pred[f"{label}_true"]).sum())
        shown = attention.get(test_set, {}).get(label, [])
        assert len(shown) == min(10, n_errors) and all(e["words"] for e in shown), test_set
        for e in shown:  # each error's highlighted text is on the page
            assert f"<tr><td>{e['id']}</td>" in page
    assert page.count('<td colspan="5" class="text">') == sum(
        len(v.get(label, [])) for v in attention.values()
    )
    assert "rgba(220, 38, 38" in page and "No attention highlights" not in page


def check_damil_page(run: Path) -> None:
    """DaMIL's page: the above, overlays of the test scans embedded, no report errors (an image model)."""
    page, _ = check_metrics_config_and_figures(run)
    overlays = sorted((run / "overlays").glob("*.png"))
    assert overlays
    embedded = embedded_pngs(page)
    assert all(p.read_bytes() in embedded for p in overlays[:N_OVERLAYS])
    assert f"<h3>test: {min(N_OVERLAYS, len(overlays))} of {len(overlays)}</h3>" in page
    assert "most confident errors" not in page

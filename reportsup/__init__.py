"""reportsup: report-supervised radiology AI (ALARM, Cross-DL, Spine) as a library.

The Python API loads a trained model (a run's checkpoint or an exported folder) and predicts::

    from reportsup import ReportLabeller
    labeller = ReportLabeller.from_pretrained("outputs/alarm_binary/<run>")
    labeller.predict(["No acute intracranial abnormality.", "Large left frontal mass."])

The names below are imported on first use (PEP 562), so ``import reportsup.contracts`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from reportsup.version import __version__

_API = {
    "ReportLabeller": "reportsup.api.reports",
    "SentenceDiscretizer": "reportsup.api.discretizer",
    "ScanAnalyzer": "reportsup.api.scans",
    "SpineImageClassifier": "reportsup.api.spine_images",
    "export_model": "reportsup.export",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'reportsup' has no attribute {name!r}")

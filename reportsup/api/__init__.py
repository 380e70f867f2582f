"""The Python API: one class per trained component, each with ``from_pretrained(path)`` (a run folder, a
Lightning checkpoint, or a folder written by ``reportsup-export``) and ``predict(...)`` returning a pandas
DataFrame with the columns the matching console script writes.

``API_CLASSES`` maps a label manifest's ``task`` to the class that loads it (``reportsup-export`` and
``from_pretrained`` dispatch on it).
"""

from __future__ import annotations

API_CLASSES: dict[str, str] = {
    "alarm_report_classifier": "reportsup.api.reports:ReportLabeller",
    "spine_report_classifier": "reportsup.api.reports:ReportLabeller",
    "crossdl_discretizer": "reportsup.api.discretizer:SentenceDiscretizer",
    "damil": "reportsup.api.scans:ScanAnalyzer",
    "spine_resnet18": "reportsup.api.spine_images:SpineImageClassifier",
}

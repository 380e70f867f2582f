"""The reportsup version, in one place (recorded in every label manifest, model card and provenance.json)."""

__version__ = "0.2.0"

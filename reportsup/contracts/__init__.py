"""The contracts every layer shares: label spaces, the patient-level split protocol and the run-directory
file names. This package is the bottom layer: it imports nothing else of reportsup, lightning_modules or
datamodules (``tests/test_layering.py`` checks), so anything may import it."""

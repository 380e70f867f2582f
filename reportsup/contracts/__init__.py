"""The contracts every layer shares: label spaces, the patient-level split protocol, the run-directory
file names and the labelling-folder layout (:mod:`reportsup.contracts.label_folder`). This package is the
bottom layer: it imports nothing else of reportsup, lightning_modules or datamodules
(``tests/test_layering.py`` checks), so anything may import it."""

"""Synthetic data for the demos and tests only, split by job: :mod:`.text` writes report text,
:mod:`.images` renders images, :mod:`.datasets` writes whole data sets to disk. Imported by nothing but
demo mode, tests, benchmarks and the ``reportsup-synthetic-*`` commands."""

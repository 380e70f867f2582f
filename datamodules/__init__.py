"""DataModules and readers, one sub-package per paper component (never imports lightning_modules).

- :mod:`datamodules.common`: report tables, the report DataModule ALARM and the spine NLP share, sections.
- :mod:`datamodules.crossdl.sentences`: report sentences for the Cross-DL discretizer.
- :mod:`datamodules.crossdl.head_ct`: head-CT manifests, scan checks, transforms, atlas registration.
- :mod:`datamodules.spine`: paired coronal + sagittal lumbar radiographs.
- :mod:`datamodules.synthetic`: demo and test data only (report text, image rendering, data sets).

The split protocol and the label spaces are contracts in :mod:`reportsup.contracts`.
"""

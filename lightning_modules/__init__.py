"""LightningModules of reportsup, one sub-package per paper component.

- :mod:`lightning_modules.common`: what two or more components share (text encoders, attention pooling,
  losses, the label manifest, the report-model base class, the test-set evaluator, loggers).
- :mod:`lightning_modules.alarm`: ALARM report classifier (Wood et al. 2021) and its word2vec baseline.
- :mod:`lightning_modules.crossdl.discretizer`: the Cross-DL sentence discretizer (Liu et al. 2023).
- :mod:`lightning_modules.crossdl.damil`: the DaMIL analyzer (Liu et al. 2023).
- :mod:`lightning_modules.spine`: the spine report classifier and ResNet-18 image classifier.
"""

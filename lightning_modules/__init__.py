"""LightningModules of reportsup and their shared layers (pooling, encoders, label manifest)."""

__version__ = "0.1.0"

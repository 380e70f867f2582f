"""DataModules, readers, patient-level splitting and synthetic data (never imports lightning_modules)."""

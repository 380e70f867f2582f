"""Statistics, metrics, plots and run summaries: pure functions of arrays, tables and files (no Lightning,
no DataModule)."""

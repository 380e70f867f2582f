"""The Hydra runtime ``train.py`` needs: config registration, demo mode, run directories, the Optuna sweep
driver, the multirun summary callback, SLURM scripts."""

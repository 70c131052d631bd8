"""Sweeps: each job's outcome, the summary across jobs, and the Optuna search."""

"""Experiments: a YAML spec of a base config and a grid of overrides, run locally, per array task or on SLURM."""

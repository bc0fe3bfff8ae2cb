"""Hyperparameter search over runs (`hyperrestart tune`): a tune spec, Ray Tune's searchers and schedulers, one
run folder per trial."""

"""Training: Lightning modules, cached features for the linear strategy, the `train` entry point."""

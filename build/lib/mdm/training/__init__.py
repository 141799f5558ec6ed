"""Training: the loop, checkpoints, data preparation for the built-in datasets, data parallelism."""

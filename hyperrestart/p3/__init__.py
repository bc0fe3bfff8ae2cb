"""P3 instruction tuning (the paper's Section 4): task list and caps, prepare-p3, tiny P3 data, the runner's metric."""

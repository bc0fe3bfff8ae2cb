"""P3 instruction tuning (the paper's Section 4): task list and caps (tasks), prepare-p3 (readers, split, claim,
prepare), tiny P3 data (synthetic), the overlay runner's loader, options and launch (runner, options, launch), and
its metric (metrics)."""

"""Results: run folders read back into the paper's tables (mean ± std over seeds, deltas) and curve figures."""

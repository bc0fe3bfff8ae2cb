"""The paper's mechanism, measured on a run: loss landscapes (Fig. 3) and Hessian spectra of the hypernetwork, main
and backbone parameter spaces (Sec. 3.2, Appendix A), at any checkpoint and across restarts.

Pure torch (run in the tool's env and inside each upstream's env): spaces (what is perturbed), directions (Li et al.
filter normalisation), landscape (the grid, chunked and cached), hessian (HVP operators, spectra, the R term), worker
(one job inside an upstream env). Tool side: loading (a run folder), launch (the job in the upstream env), plots,
track."""

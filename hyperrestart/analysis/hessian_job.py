"""The `hessian` job spread over processes. Per checkpoint the work splits into independent units: one per space (its
Lanczos extremes, Hutchinson trace and SLQ density) and one for the R term (||R v|| / ||H_phi v||). Each unit is
seeded on its own, so its result does not depend on which process computes it or on what ran before: rank r of W
computes units r, r + W, ... into part files, and rank 0 assembles hessian-<checkpoint>.json from them, identical to
one process. What does not spread: the estimators inside one unit (Lanczos, and each SLQ run, are sequential chains of
Hessian-vector products), so W beyond the number of units gains nothing."""
import time
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write_json
from . import hessian
from .objective import Objective, no_parameter_grads

R_TERM = "r_term"
PARTS_DIR = "hessian-parts"  # RUN/analysis/hessian-parts: the units' results until rank 0 has assembled them


def units(job):
    """[(checkpoint index, unit)] in a fixed order: every space of the job, then the R term when the hypernetwork
    space is asked for."""
    per = list(job["spaces"]) + ([R_TERM] if "hypernetwork" in job["spaces"] else [])
    return [(i, unit) for i in range(len(job["checkpoints"])) for unit in per]


def part_path(job, index, unit):
    return Path(job["out"]) / PARTS_DIR / f"{job['checkpoints'][index]['label']}-{unit}.json"


def run(job, model, loss_fn, batches, load, progress, rank=0, world=1, poll_s=0.5):
    """Compute this rank's units (load(checkpoint) puts a checkpoint's weights into `model`); rank 0 then waits for
    every part and writes hessian-<checkpoint>.json per checkpoint (the parts are removed once assembled)."""
    everything = units(job)
    mine = [u for n, u in enumerate(everything) if n % world == rank]
    Path(job["out"], PARTS_DIR).mkdir(parents=True, exist_ok=True)  # the tool empties it before the job starts
    for index, checkpoint in enumerate(job["checkpoints"]):
        todo = [unit for i, unit in mine if i == index]
        if not todo:
            continue
        load(checkpoint)
        objective = Objective(model, loss_fn, batches)
        try:
            for unit in todo:
                value = _unit(job, objective, unit)
                atomic_write_json(part_path(job, index, unit), {"loss": objective.loss(), "value": value}, indent=1)
                if rank != 0:
                    progress.add(1, f"{checkpoint['label']} {unit}", force=True)
        finally:
            objective.close()
    if rank == 0:
        _assemble(job, everything, progress, poll_s)


def _unit(job, objective, unit):
    if unit == R_TERM:
        if "hypernetwork" in objective.available and "main" in objective.available:
            return r_term(objective, job)
        return None
    if unit not in objective.available:
        return None
    with no_parameter_grads(objective.model):
        return hessian.spectrum(objective.function(unit), k=job["k"], lanczos_steps=job["lanczos_steps"],
                                density_runs=job["density_runs"], trace_samples=job["trace_samples"],
                                seed=job["seed"])


def _assemble(job, everything, progress, poll_s):
    import json
    seen = set()
    while len(seen) < len(everything):
        for index, unit in everything:
            if (index, unit) not in seen and part_path(job, index, unit).is_file():
                seen.add((index, unit))
                progress.add(1, f"{job['checkpoints'][index]['label']} {unit}", force=True)
        if len(seen) < len(everything):
            time.sleep(poll_s)
    for index, checkpoint in enumerate(job["checkpoints"]):
        parts = {unit: json.loads(part_path(job, index, unit).read_text(encoding="utf-8"))
                 for i, unit in everything if i == index}
        result = {"checkpoint": checkpoint["label"], "step": checkpoint["step"],
                  "loss": next(iter(parts.values()))["loss"], "batches": job["batches"], "seed": job["seed"],
                  "spaces": {space: parts[space]["value"] for space in job["spaces"]}}
        spectra = result["spaces"]
        if spectra.get("hypernetwork") and spectra.get("main"):
            result["inertia_agrees"] = hessian.inertia_agreement(spectra["hypernetwork"], spectra["main"])
        if parts.get(R_TERM, {}).get("value") is not None:
            result["r_term"] = parts[R_TERM]["value"]
        atomic_write_json(Path(job["out"]) / f"hessian-{checkpoint['label']}.json", result, indent=1)
    for index, unit in everything:
        part_path(job, index, unit).unlink()
    parts = Path(job["out"], PARTS_DIR)
    if not any(parts.iterdir()):  # anything else in it is not ours to remove
        parts.rmdir()


def r_term(objective, job):
    """||R v|| / ||H_phi v|| for `ratio_vectors` Gaussian v in the hypernetwork space (seeded)."""
    generator = torch.Generator().manual_seed(int(job["seed"]) + 101)
    reference = objective.space("hypernetwork").reference()
    rows = []
    for _ in range(int(job.get("ratio_vectors", 3))):
        vs = [torch.randn(tuple(r.shape), generator=generator, dtype=r.dtype).to(r.device) for r in reference]
        h_v, gn_v, r_v = objective.decomposition(vs)
        rows.append({"ratio": hessian.residual_ratio(h_v, r_v), "norm_h_phi_v": float(hessian.flatten(h_v).norm()),
                     "norm_gauss_newton_v": float(hessian.flatten(gn_v).norm()),
                     "norm_r_v": float(hessian.flatten(r_v).norm())})
    ratios = [row["ratio"] for row in rows]
    return {"vectors": rows, "ratio_mean": float(np.mean(ratios)), "ratio_max": float(np.max(ratios))}

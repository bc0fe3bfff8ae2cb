"""One analysis job, run inside an upstream's environment by overlay/common/hyperrestart_analyse.py once that has
built the run's model, its training loss and its first training batches the upstream's own way.

A job (JSON, written by hyperrestart.analysis.launch) names the checkpoints and the work:
- "landscape": per checkpoint and space, the filter-normalised 2-D surface and 1-D slices, chunked and cached
  (ranks share the chunks); rank 0 writes landscape-<checkpoint>-<space>.npz and .csv.
- "hessian": per checkpoint, each space's spectrum and, with both hypernetwork and main spaces, the
  ||R v|| / ||H_phi v|| ratios, as units that ranks share (hessian_job); rank 0 writes hessian-<checkpoint>.json.
Progress goes to <out>/progress-rank<r>.json (the tool draws the bar).
"""
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write_json
from . import directions, hessian, hessian_job, landscape
from .objective import BATCH_POINTS, Objective, no_parameter_grads

TIED_SUFFIXES = ("embed_tokens.weight", "lm_head.weight")  # tied to shared.weight: stored once in a checkpoint


def load_job(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Progress:
    """Points (landscape) or estimator steps (hessian) done out of the job's total, in a small JSON file."""

    def __init__(self, out, rank, total):
        self.path = Path(out) / f"progress-rank{rank}.json"
        self.total, self.done, self.last = total, 0, 0.0
        self.label = ""

    def add(self, n, label=None, force=False):
        self.done += n
        self.label = label or self.label
        now = time.monotonic()
        if force or now - self.last > 0.3 or self.done >= self.total:
            self.last = now
            atomic_write_json(self.path, {"done": self.done, "total": self.total, "label": self.label})


def checkpoint_state(path):
    """The model weights saved in a checkpoint folder (model.safetensors or pytorch_model.bin)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file
        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path} holds no model.safetensors or pytorch_model.bin")


def load_weights(model, state):
    """Copy `state` into the model in place; every weight but the tied embeddings must be there."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(TIED_SUFFIXES)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected "
                           f"{result.unexpected_keys[:5]}")


def run(job, model, loss_fn, batches, rank=0, world=1):
    """Run `job` on `model` (built at the run's initial weights), loss_fn(model, batch) and the batches."""
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def load(checkpoint):
        load_weights(model, init if checkpoint["path"] is None else checkpoint_state(checkpoint["path"]))

    if job["task"] == "hessian":
        progress = Progress(out, rank, len(hessian_job.units(job)))
        hessian_job.run(job, model, loss_fn, batches, load, progress, rank, world)
        progress.add(0, force=True)
        return
    todo = [(c, s) for c in job["checkpoints"] for s in job["spaces"]]
    if job["task"] == "landscape":
        per = len(landscape.points(job["range"], job["resolution"]))
        progress = Progress(out, rank, per * len(todo))
    else:
        progress = Progress(out, rank, len(todo))
    for checkpoint in job["checkpoints"]:
        load(checkpoint)
        objective = Objective(model, loss_fn, batches)
        try:
            if job["task"] == "landscape":
                for space in job["spaces"]:
                    if space in objective.available:
                        _landscape(job, objective, checkpoint, space, rank, world, progress)
                    else:
                        progress.add(per, force=True)
            elif job["task"] == "benchmark" and rank == 0:
                _benchmark(job, objective, checkpoint, progress)
        finally:
            objective.close()
    progress.add(0, force=True)


def _landscape(job, objective, checkpoint, space, rank, world, progress):
    reference = objective.space(space).reference()
    device = reference[0].device
    d1, d2 = directions.landscape_directions(reference, job["seed"])
    d1, d2 = [d.to(device) for d in d1], [d.to(device) for d in d2]
    pts = landscape.points(job["range"], job["resolution"])
    settings = {"run": job["run_id"], "checkpoint": checkpoint["label"], "space": space, "seed": job["seed"],
                "range": job["range"], "resolution": job["resolution"], "batches": job["batches"],
                "batch_points": int(job.get("batch_points", BATCH_POINTS)),  # equal to float tolerance only
                # a retrained run, other data or other weights never reuse a cache
                "weights": _fingerprint(reference), "loss": repr(objective.loss())}
    cache = landscape.ChunkCache(job["cache"], settings, len(pts), job.get("chunk_points", landscape.CHUNK_POINTS))

    def evaluate_chunk(chunk):
        return objective.plane_losses(space, d1, d2, chunk, int(job.get("batch_points", BATCH_POINTS)))

    label = f"{checkpoint['label']} {space}"
    values = landscape.compute(None, pts, cache, rank, world, lambda n: progress.add(n, label), many=evaluate_chunk)
    if space in objective.vmap_failure:
        print(f"landscape {label}: grid points evaluated one by one (torch.func.vmap cannot batch this model: "
              f"{objective.vmap_failure[space]})", file=sys.stderr, flush=True)
    if rank != 0:
        return
    centre = objective.loss()
    surface, along_d1, along_d2 = landscape.split(values, job["resolution"])
    stem = Path(job["out"]) / f"landscape-{checkpoint['label']}-{space}"
    np.savez(stem.with_suffix(".npz"), surface=surface, slice_d1=along_d1, slice_d2=along_d2,
             axis=landscape.axis(job["range"], job["resolution"]), seed=job["seed"], loss_at_checkpoint=centre,
             space=space, checkpoint=checkpoint["label"], step=checkpoint["step"], batches=job["batches"])
    with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "a", "b", "loss"])
        kinds = ["grid"] * (len(pts) - 2 * job["resolution"]) + ["slice_d1"] * job["resolution"] + \
            ["slice_d2"] * job["resolution"]
        writer.writerows((k, repr(float(a)), repr(float(b)), repr(float(v))) for k, (a, b), v in zip(kinds, pts, values))


def _fingerprint(tensors):
    import hashlib
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode("utf-8"))
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _seconds(fn, repeats):
    """Median wall time of fn() over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _benchmark(job, objective, checkpoint, progress):
    """Per space: forward, forward + backward and HVP time (same batches, same variables; an HVP from scratch, and
    one through the gradient graph the estimators keep), and landscape grid points per second, one and
    BATCH_POINTS per forward pass; writes benchmark-<checkpoint>.json."""
    repeats = int(job.get("repeats", 5))
    result = {"checkpoint": checkpoint["label"], "repeats": repeats, "batches": job["batches"], "spaces": {}}
    for space in job["spaces"]:
        if space not in objective.available:
            progress.add(1, force=True)
            continue
        with no_parameter_grads(objective.model):
            function = objective.function(space)
            xs = [r.detach().clone().requires_grad_(True) for r in function.reference]
            vs = [torch.randn_like(r) for r in function.reference]

            def forward_backward():
                torch.autograd.grad(function.loss(xs), xs, allow_unused=True)

            timing = {"forward_s": _seconds(lambda: float(function.loss(function.reference)), repeats),
                      "forward_backward_s": _seconds(forward_backward, repeats),
                      "hvp_s": _seconds(lambda: hessian.hvp(function.loss, function.reference, vs), repeats),
                      "kept_graph_hvp_s": _seconds(lambda: function.hvp(vs), repeats)}
        d1 = [torch.randn_like(r) * 1e-3 for r in objective.space(space).reference()]
        d2 = [torch.randn_like(r) * 1e-3 for r in objective.space(space).reference()]
        points = landscape.points(1.0, 3)[:BATCH_POINTS]
        timing["grid_point_s"] = _seconds(lambda: objective.shifted_loss(space, d1), repeats)
        timing["grid_points_per_s"] = 1.0 / timing["grid_point_s"]
        batched_s = _seconds(lambda: objective.plane_losses(space, d1, d2, points, BATCH_POINTS), repeats)
        timing["batched_grid_points_per_s"] = len(points) / batched_s
        timing["batched"] = space not in objective.vmap_failure
        timing["batch_points"] = BATCH_POINTS
        timing["hvp_over_forward_backward"] = timing["hvp_s"] / timing["forward_backward_s"]
        result["spaces"][space] = timing
        progress.add(1, f"{checkpoint['label']} {space}", force=True)
    atomic_write_json(Path(job["out"]) / f"benchmark-{checkpoint['label']}.json", result, indent=1)

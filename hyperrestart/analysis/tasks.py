"""`analyse landscape` and `analyse hessian` on a run folder: run the job in the upstream's env, then write the
figures and print what each result says."""
import csv
import json
from pathlib import Path

import numpy as np

from ..core.errors import HyperrestartError
from . import hessian_job, launch, loading, plots

SPACES = ("hypernetwork", "main", "backbone")
LANDSCAPE_DEFAULTS = {"range": 10.0, "resolution": 256, "batches": 1, "seed": 0, "batch_points": 8}
HESSIAN_DEFAULTS = {"k": 5, "lanczos_steps": 20, "density_runs": 2, "trace_samples": 10, "ratio_vectors": 3,
                    "batches": 1, "seed": 0}


def spaces_for(space):
    if space == "all":
        return list(SPACES)
    if space not in SPACES:
        raise HyperrestartError(f"--space {space}: choose one of {', '.join(SPACES)} or all")
    return [space]


ANALYSIS_DIR = "analysis"  # RUN_DIR/analysis: where the results go without --out (report reads track's there)


def output_dir(run, out):
    return Path(out) if out else run.dir / ANALYSIS_DIR


def landscape(run_dir, checkpoint="last", space="all", out=None, nproc=1, upstream=None, **options):
    """Compute, save and plot the landscapes; returns {(checkpoint label, space): npz path}."""
    options = dict(LANDSCAPE_DEFAULTS, **{k: v for k, v in options.items() if v is not None})
    if options["resolution"] < 2 or options["range"] <= 0 or options["batches"] < 1 or options["batch_points"] < 1:
        raise HyperrestartError("--resolution must be at least 2, --range positive, --batches and --batch-points "
                                "at least 1")
    run = loading.open_run(run_dir, upstream)
    checkpoints = loading.select(run, checkpoint)
    spaces = spaces_for(space)
    out = output_dir(run, out)
    job = launch.write_job(run, checkpoints, "landscape", spaces, out, options)
    launch.execute(run, job, nproc=nproc, label="landscape")
    found, lines = {}, []
    for ck in checkpoints:
        results = {}
        for name in spaces:
            path = out / f"landscape-{ck.label}-{name}.npz"
            if path.is_file():
                found[(ck.label, name)] = path
                results[name] = plots.load_landscape(path)
        if not results:
            continue
        figure = plots.landscape_figure(
            results, f"{run.dir.name} at {ck.label}: loss along two filter-normalised random directions "
                     f"(seed {options['seed']}, {options['batches']} batch(es))", out / f"landscape-{ck.label}.png")
        lines.append(f"{ck.label}: {figure}")
        for name, data in results.items():
            lines.append(f"  {name:12s} loss {float(data['loss_at_checkpoint']):.6g} at the checkpoint; over "
                         f"[-{options['range']:g}, {options['range']:g}]^2 ({options['resolution']}x"
                         f"{options['resolution']}) from {np.nanmin(data['surface']):.6g} to {np.nanmax(data['surface']):.6g}"
                         + _not_finite(data["surface"]))
    missing = sorted({name for name in spaces for ck in checkpoints if (ck.label, name) not in found})
    if missing:
        lines.append(f"no {', '.join(missing)} space in this model (see overlay/common/param_spaces.py)")
    _figure3(found, checkpoints, out, lines)
    print("\n".join(lines + [f"grids and direction seeds: {out}/landscape-*.npz and .csv"]))
    return found


def _not_finite(surface):
    bad = int((~np.isfinite(surface)).sum())
    return f"; {bad} point(s) where the loss is not finite (blank in the plots)" if bad else ""


def _figure3(found, checkpoints, out, lines):
    trained = [c for c in checkpoints if c.path is not None]
    needed = ("hypernetwork", "main")
    if not trained or not any(c.path is None for c in checkpoints):
        return
    last = trained[-1].label
    if all((label, s) in found for label in (last, "init") for s in needed):
        path = plots.figure3({s: plots.load_landscape(found[(last, s)]) for s in needed},
                             {s: plots.load_landscape(found[("init", s)]) for s in needed}, last,
                             out / "figure3.png")
        lines.append(f"Figure 3 layout (hypernetwork vs main, after vs before training): {path}")


def hessian(run_dir, checkpoint="last", space="all", out=None, upstream=None, quiet=False, checkpoints=None,
            nproc=1, **options):
    """Compute the spectra and the R-term ratio (their units spread over `nproc` processes); returns the
    per-checkpoint results (dicts)."""
    options = dict(HESSIAN_DEFAULTS, **{k: v for k, v in options.items() if v is not None})
    if options["k"] < 1 or options["batches"] < 1 or options["trace_samples"] < 1:
        raise HyperrestartError("-k, --batches and --trace-samples must be at least 1")
    run = loading.open_run(run_dir, upstream)
    checkpoints = checkpoints or loading.select(run, checkpoint)
    out = output_dir(run, out)
    job = launch.write_job(run, checkpoints, "hessian", spaces_for(space), out, options)
    _clear_parts(out / hessian_job.PARTS_DIR)
    launch.execute(run, job, nproc=nproc, label="hessian")
    results = []
    for ck in checkpoints:
        path = out / f"hessian-{ck.label}.json"
        result = json.loads(path.read_text(encoding="utf-8"))
        plots.density_figure(result, out / f"hessian-{ck.label}.png")
        results.append(result)
    write_summary(results, out / "hessian-summary.csv")
    if not quiet:
        print("\n".join(describe(r) for r in results))
        print(f"spectra: {out}/hessian-*.json, densities: hessian-*.png, table: {out / 'hessian-summary.csv'}")
    return results


def _clear_parts(folder: Path):
    """Parts an interrupted hessian job left (JSON files the job writes, then the folder if that empties it)."""
    if folder.is_dir():
        for part in folder.glob("*.json"):
            part.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def describe(result):
    """What one checkpoint's Hessian result says, in a few lines."""
    lines = [f"{result['checkpoint']} (step {result['step']}, loss {result['loss']:.6g}):"]
    for space, data in result["spaces"].items():
        if not data:
            lines.append(f"  {space:12s} not in this model")
            continue
        signs = data["signs"]
        lines.append(f"  {space:12s} n={data['size']}: largest {_fmt(data['top'])}, most negative "
                     f"{_fmt(data['bottom'])}; trace {data['trace']:.4g} +- {data['trace_stderr']:.2g} "
                     f"(Hutchinson, {data['trace_samples']} probes); spectral mass below / near / above 0: "
                     f"{data['negative_mass']:.3f} / {data['near_zero_mass']:.3f} / {data['positive_mass']:.3f}; "
                     f"signs: {signs['positive_of_top']}/{signs['k']} of the largest > 0, "
                     f"{signs['negative_of_bottom']}/{signs['k']} of the most negative < 0")
    if "inertia_agrees" in result:
        lines.append("  inertia of hypernetwork and main network: "
                     + ("agree (both have, or both lack, positive and negative curvature)" if result["inertia_agrees"]
                        else "DIFFER"))
    if "r_term" in result:
        r = result["r_term"]
        lines.append(f"  ||R v|| / ||H_phi v|| = {r['ratio_mean']:.3g} (mean of {len(r['vectors'])} random v, max "
                     f"{r['ratio_max']:.3g}): near 0 the paper's eq. 4 (R dropped) holds here; near 1 or above, "
                     f"R is as large as the Hessian itself")
    return "\n".join(lines)


def _fmt(values):
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


SUMMARY_COLUMNS = ("checkpoint", "step", "loss", "space", "size", "top_eigenvalue", "bottom_eigenvalue", "trace",
                   "trace_stderr", "negative_mass", "near_zero_mass", "positive_mass", "positive_of_top", "negative_of_bottom", "r_ratio")


def summary_rows(results):
    rows = []
    for result in results:
        ratio = result.get("r_term", {}).get("ratio_mean")
        for space, data in result["spaces"].items():
            if not data:
                continue
            rows.append({"checkpoint": result["checkpoint"], "step": result["step"], "loss": result["loss"],
                         "space": space, "size": data["size"], "top_eigenvalue": max(data["top"]),
                         "bottom_eigenvalue": min(data["bottom"]), "trace": data["trace"],
                         "trace_stderr": data["trace_stderr"], "negative_mass": data["negative_mass"],
                         "near_zero_mass": data["near_zero_mass"], "positive_mass": data["positive_mass"],
                         "positive_of_top": data["signs"]["positive_of_top"],
                         "negative_of_bottom": data["signs"]["negative_of_bottom"],
                         "r_ratio": ratio if space == "hypernetwork" else None})
    return rows


def write_summary(results, path: Path):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(summary_rows(results))
    return path

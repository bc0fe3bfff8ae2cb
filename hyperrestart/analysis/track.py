"""`analyse track`: the Hessian summary at init, at the end of every lr cycle (the weights each restart starts
from, found in lr_trace.csv) and at the last step; a table and a plot against the lr curve."""
import csv
from pathlib import Path

from ..core.errors import HyperrestartError
from . import loading, plots, tasks

TRACK_FILE = "track.csv"


def checkpoints_at(run, steps):
    """Checkpoint per step (0: init); an error naming the missing steps and how to save them."""
    missing = [s for s in steps if s != 0 and s not in run.checkpoints and s != run.final_step]
    if missing:
        saved = ", ".join(map(str, run.checkpoints)) or "none"
        raise HyperrestartError(
            f"{run.dir} has no checkpoint at step(s) {', '.join(map(str, missing))} (saved: {saved}). "
            f"track reads the weights at every cycle end: train with --set save_steps=1 --set save_total_limit=null "
            f"(and load_best_model_at_end=false), or pass --steps with saved steps")
    return [loading.Checkpoint("init", 0) if s == 0 else
            loading.Checkpoint(f"checkpoint-{s}", s, run.checkpoints[s]) if s in run.checkpoints else
            loading.Checkpoint("final", s, run.final_dir) for s in steps]


def track(run_dir, out=None, steps=None, upstream=None, space="all", against=None, **options):
    """Track one run; with `against` (another run folder, e.g. the no-restart arm) track it at the same steps too
    and draw both on shared axes."""
    run = loading.open_run(run_dir, upstream)
    steps = sorted(set(steps)) if steps else loading.track_steps(run)
    other = loading.open_run(against, upstream) if against else None
    if other is not None:
        checkpoints_at(other, steps)  # refuse before computing anything
    rows, trace, out = _track_one(run, steps, out, space, upstream, options)
    if other is None:
        return rows
    other_rows, other_trace, _ = _track_one(other, steps, None, space, upstream, options)
    figure = plots.track_comparison_figure(
        [(run.dir.name, rows, trace), (other.dir.name, other_rows, other_trace)],
        f"{run.dir.name} (solid) against {other.dir.name} (dashed) at steps {', '.join(map(str, steps))}",
        out / f"track-vs-{other.dir.name}.png")
    print(f"both runs: {figure}")
    return rows


def _track_one(run, steps, out, space, upstream, options):
    trace = loading.lr_trace(run)
    checkpoints = checkpoints_at(run, steps)
    out = tasks.output_dir(run, out)
    results = tasks.hessian(run.dir, space=space, out=out, upstream=upstream, quiet=True, checkpoints=checkpoints,
                            **options)
    rows = tasks.summary_rows(results)
    table = write_track(rows, out / TRACK_FILE)
    figure = plots.track_figure(rows, trace, f"{run.dir.name}: curvature per parameter space at init, cycle ends "
                                             f"and the end (lr dotted)", out / "track.png")
    print(f"{run.dir}:")
    print(format_rows(rows))
    print(f"table: {table}\nplot:  {figure}")
    return rows, trace, out


def write_track(rows, path: Path):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, tasks.SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_rows(rows):
    lines = [f"{'step':>6} {'space':12s} {'largest':>11} {'most neg.':>11} {'neg. mass':>9} {'|Rv|/|Hv|':>9}"]
    for r in rows:
        ratio = "" if r["r_ratio"] is None else f"{r['r_ratio']:.3g}"
        lines.append(f"{r['step']:>6} {r['space']:12s} {r['top_eigenvalue']:>11.4g} {r['bottom_eigenvalue']:>11.4g} "
                     f"{r['negative_mass']:>9.3f} {ratio:>9}")
    return "\n".join(lines)


def read_track(path: Path):
    """Rows of a track.csv (numbers as floats), for reports."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key not in ("checkpoint", "space"):
                row[key] = float(value) if value not in ("", None) else None
    return rows

"""Cost of `hyperrestart analyse` on a tiny hyperdecoders run (CPU unless the machine has a GPU):

- per parameter space: landscape grid points per second, one per forward pass and 8 per forward pass (vmap), and
  Hessian-vector-product time divided by the time of a forward + backward pass on the same batches and variables
  (target: 3 or less; double backward is about 2-4 forward passes), medians over --repeats calls measured in this run;
- a 21 x 21 `analyse landscape` of the 3 spaces, one grid point per forward pass (--batch-points 1) and batched (the
  default), in the same run: wall and CPU time (CPU time of the processes, which other load on the machine does not
  inflate the way it inflates wall time);
- the wall and CPU time of `analyse track` (Hessian summary at init, every cycle end and the end, k=5) on a 31-step
  tiny restart run (target: under 3 minutes on 2 CPU cores), with --nproc N (default 1).

    python benchmarks/analysis_speed.py [--run RUN_DIR] [--repeats 5] [--skip-track] [--track-nproc N]

Without --run it first trains the tiny run (31 steps, a checkpoint every step) into a temporary folder.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hyperrestart(*args):
    """Run the CLI; returns (wall s, stdout) and keeps the CPU seconds of it and its workers in hyperrestart.cpu."""
    start, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", *map(str, args)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"hyperrestart {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    hyperrestart.cpu = _children_cpu() - cpu
    return time.perf_counter() - start, result.stdout


def tiny_run(folder: Path):
    seconds, _ = hyperrestart("run", ROOT / "configs/hyperdecoders/glue_restart.json", "--tiny", "--quiet",
                              "--output-dir", folder, "--set", "max_steps=31", "--set", "save_steps=1",
                              "--set", "save_total_limit=null", "--set", "load_best_model_at_end=false")
    print(f"trained the 31-step tiny restart run in {seconds:.0f} s: {folder}")
    return folder


def per_space(run_dir: Path, repeats):
    from hyperrestart.analysis import launch, loading
    run = loading.open_run(run_dir)
    out = Path(tempfile.mkdtemp(prefix="analysis-bench-"))
    job = launch.write_job(run, loading.select(run, "last"), "benchmark", ["hypernetwork", "main", "backbone"], out,
                           {"batches": 1, "seed": 0, "repeats": repeats})
    launch.execute(run, job, label="benchmark")
    result = json.loads(next(out.glob("benchmark-*.json")).read_text(encoding="utf-8"))
    print(f"\nper space at {result['checkpoint']} (1 batch, medians of {repeats}):")
    print(f"{'space':12s} {'forward':>9} {'fwd+bwd':>9} {'HVP':>9} {'HVP/(fwd+bwd)':>14} {'HVP kept':>9} "
          f"{'grid pts/s':>11} {'batched':>9} {'ratio':>6}")
    for space, t in result["spaces"].items():
        note = "" if t["batched"] else " (vmap failed: one by one)"
        print(f"{space:12s} {t['forward_s'] * 1e3:>7.1f}ms {t['forward_backward_s'] * 1e3:>7.1f}ms "
              f"{t['hvp_s'] * 1e3:>7.1f}ms {t['hvp_over_forward_backward']:>14.2f} {t['kept_graph_hvp_s'] * 1e3:>7.1f}ms "
              f"{t['grid_points_per_s']:>11.1f} "
              f"{t['batched_grid_points_per_s']:>9.1f} {t['batched_grid_points_per_s'] / t['grid_points_per_s']:>6.2f}"
              + note)
    print(f"grid pts/s: one point per forward pass; batched: {result['spaces'][next(iter(result['spaces']))]['batch_points']} "
          f"per pass (vmap); ratio = batched / one")
    print("HVP: from scratch (forward, backward with graph, backward); HVP kept: through the gradient graph the "
          "estimators keep (one backward)")
    print("target: HVP/(fwd+bwd) <= 3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a tiny run folder with checkpoints at every step (default: train one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-track", action="store_true")
    parser.add_argument("--track-nproc", type=int, default=1, help="processes for `analyse track` (default 1)")
    args = parser.parse_args()
    run_dir = Path(args.run) if args.run else tiny_run(Path(tempfile.mkdtemp(prefix="analysis-bench-run-")) / "run")
    per_space(run_dir, args.repeats)
    print()
    timings = {}
    for batch_points in (1, 8):
        seconds, _ = hyperrestart("analyse", "landscape", run_dir, "--resolution", "21", "--batch-points", batch_points,
                                  "--out", tempfile.mkdtemp(prefix="analysis-bench-land-"))
        timings[batch_points] = (seconds, hyperrestart.cpu)
        print(f"analyse landscape --resolution 21 --batch-points {batch_points} (3 spaces x 485 points, last "
              f"checkpoint): {seconds:.0f} s wall, {hyperrestart.cpu:.1f} s CPU")
    print(f"landscape CPU time, one point per pass / 8 per pass: {timings[1][1] / timings[8][1]:.2f}x")
    if not args.skip_track:
        seconds, text = hyperrestart("analyse", "track", run_dir, "--nproc", args.track_nproc,
                                     "--out", tempfile.mkdtemp(prefix="analysis-bench-"))
        checkpoints = len({line.split()[0] for line in text.splitlines()[1:] if line.strip()[:1].isdigit()})
        print(f"analyse track --nproc {args.track_nproc} (k=5, {checkpoints} checkpoints, 3 spaces): {seconds:.0f} s "
              f"wall, {hyperrestart.cpu:.1f} s CPU; target < 180 s wall on 2 CPU cores")


if __name__ == "__main__":
    main()

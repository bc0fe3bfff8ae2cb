"""Cost of `hyperrestart analyse` on a tiny hyperdecoders run (CPU unless the machine has a GPU):

- per parameter space: landscape grid points per second, and Hessian-vector-product time divided by the time of a
  forward + backward pass on the same batches and variables (target: 3 or less; double backward is about 2-4
  forward passes), medians over --repeats calls measured in this run;
- the wall time of `analyse track` (Hessian summary at init, every cycle end and the end, k=5) on a 31-step tiny
  restart run (target: under 3 minutes on 2 CPU cores), and of a 21 x 21 `analyse landscape` per space.

    python benchmarks/analysis_speed.py [--run RUN_DIR] [--repeats 5] [--skip-track]

Without --run it first trains the tiny run (31 steps, a checkpoint every step) into a temporary folder.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def hyperrestart(*args):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", *map(str, args)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"hyperrestart {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
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
    print(f"{'space':12s} {'forward':>9} {'fwd+bwd':>9} {'HVP':>9} {'HVP/(fwd+bwd)':>14} {'grid pts/s':>11}")
    for space, t in result["spaces"].items():
        print(f"{space:12s} {t['forward_s'] * 1e3:>7.1f}ms {t['forward_backward_s'] * 1e3:>7.1f}ms "
              f"{t['hvp_s'] * 1e3:>7.1f}ms {t['hvp_over_forward_backward']:>14.2f} {t['grid_points_per_s']:>11.1f}")
    print("target: HVP/(fwd+bwd) <= 3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a tiny run folder with checkpoints at every step (default: train one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-track", action="store_true")
    args = parser.parse_args()
    run_dir = Path(args.run) if args.run else tiny_run(Path(tempfile.mkdtemp(prefix="analysis-bench-run-")) / "run")
    per_space(run_dir, args.repeats)
    seconds, _ = hyperrestart("analyse", "landscape", run_dir, "--resolution", "21", "--out",
                              tempfile.mkdtemp(prefix="analysis-bench-land-"))
    print(f"\nanalyse landscape --resolution 21 (3 spaces x 485 points, last checkpoint): {seconds:.0f} s wall")
    if not args.skip_track:
        seconds, text = hyperrestart("analyse", "track", run_dir, "--out", tempfile.mkdtemp(prefix="analysis-bench-"))
        checkpoints = len({line.split()[0] for line in text.splitlines()[1:] if line.strip()[:1].isdigit()})
        print(f"analyse track (k=5, {checkpoints} checkpoints, 3 spaces): {seconds:.0f} s wall; target < 180 s "
              f"on 2 CPU cores")


if __name__ == "__main__":
    main()

"""`hyperrestart sweep SPEC`: list, run one (SLURM array task), run all locally, or submit a sweep with submitit."""


def register(subparsers):
    parser = subparsers.add_parser(
        "sweep", help="expand a YAML sweep spec into named runs; list, run one, run all, or submit to SLURM",
        description="A sweep spec (sweeps/*.yaml) is a base JSON config, a runner (run | p3) and a grid of overrides. "
                    "Each run writes to OUTPUT_ROOT/<run name> and is finished once its completion marker exists; "
                    "finished runs are skipped, so a relaunch resumes.")
    parser.add_argument("spec", help="sweep spec (YAML)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="print the runs: index, name, overrides (runs nothing)")
    what.add_argument("--task-id", type=int, default=None,
                      help="run the K-th run (0-based); default: $SLURM_ARRAY_TASK_ID when set")
    what.add_argument("--launch", choices=("local", "slurm"), default=None,
                      help="local: run every unfinished run in turn; slurm: submit them as a job array (submitit)")
    parser.add_argument("--output-root", default=None, help="where run directories go (default: runs/<sweep name>)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run, after the spec's grid (repeatable), e.g. --set max_steps=8")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke test on this CPU: p3 runs use the tiny learnable P3 + a tiny random T5, 255 steps; "
                             "`run` runs get hyperrestart run --tiny")
    parser.add_argument("--runner-args", default="", help="extra arguments for the runner, e.g. \"--tiny\"")
    parser.add_argument("--max-runs", type=int, default=None, metavar="N",
                        help="refuse a grid of more than N runs before building it (default: 10,000)")
    parser.add_argument("--keep-going", action="store_true", help="--launch local: go on after a failed run")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="--launch local: run N runs at once (default 1; tiny runs use one core each, so "
                             "--jobs 2 fills 2 cores)")
    slurm = parser.add_argument_group("SLURM resources (override the spec's `slurm:` section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus", type=int)
    slurm.add_argument("--cpus", type=int)
    slurm.add_argument("--mem", help="e.g. 64G")
    slurm.add_argument("--time", help="e.g. 2-00:00:00 or 720 (minutes)")
    slurm.add_argument("--array-parallelism", type=int)
    slurm.add_argument("--account")
    slurm.add_argument("--wait", action="store_true", help="wait for the submitted jobs and fail if one fails")
    slurm.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"), default=None,
                       help="submitit backend (default slurm; local/debug run the array on this machine, for tests)")
    parser.set_defaults(func=run)


def run(args):
    from hyperrestart.sweep.launch import run_sweep
    return run_sweep(args)

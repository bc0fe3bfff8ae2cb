"""`hyperrestart sweep SPEC`: list, run one (SLURM array task), run all locally, or submit a sweep with submitit."""
import os
import shlex

from hyperrestart.core.errors import HyperrestartError


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
    parser.add_argument("--keep-going", action="store_true", help="--launch local: go on after a failed run")
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


def _print_list(sweep, jobs):
    from hyperrestart.sweep.spec import completion, format_value
    print(f"# {sweep.name}: {len(sweep.runs)} runs, runner {sweep.runner}, base config "
          f"{os.path.relpath(sweep.config)}")
    for job in jobs:
        run = job.run
        state = "finished" if completion(job.run_dir) else "-"
        sets = " ".join(f"{k}={shlex.quote(format_value(v))}" for k, v in run.overrides)
        config = "" if run.config == sweep.config else f" [config {os.path.relpath(run.config)}]"
        print(f"{run.index}\t{run.name}\t{state}\t{sets}{config}")


def run(args):
    from hyperrestart.sweep import spec as sweeps

    spec = sweeps.parse_spec(args.spec, cli_sets=args.sets, tiny=args.tiny)
    output_root = args.output_root or os.path.join("runs", spec.name)
    jobs = sweeps.make_jobs(spec, output_root, shlex.split(args.runner_args))
    if args.list:
        _print_list(spec, jobs)
        return 0
    if args.tiny and spec.runner == "p3":
        sweeps.tiny_p3_environment()
    task_id = args.task_id
    if task_id is None and args.launch is None:
        env_id = os.environ.get("SLURM_ARRAY_TASK_ID")
        if env_id is None:
            raise HyperrestartError("say what to do: --list, --task-id K (or set SLURM_ARRAY_TASK_ID), "
                                    "--launch local or --launch slurm")
        try:
            task_id = int(env_id)
        except ValueError:
            raise HyperrestartError(f"SLURM_ARRAY_TASK_ID={env_id!r} is not an integer") from None
    if task_id is not None:
        spec.run(task_id)  # range check with a clear message
        sweeps.execute(jobs[task_id])
        return 0
    if args.launch == "local":
        counts = sweeps.launch_local(jobs, keep_going=args.keep_going)
        print(f"{spec.name}: {counts['done']} run, {counts['skipped']} skipped (finished), {len(jobs)} in all; "
              f"outputs in {output_root}")
        return 0
    resources = dict(spec.slurm)
    for key in ("partition", "gpus", "cpus", "mem", "time", "array_parallelism", "account"):
        if getattr(args, key) is not None:
            resources[key] = getattr(args, key)
    cluster = None if args.submitit_cluster in (None, "slurm") else args.submitit_cluster
    submitted, skipped = sweeps.launch_submitit(jobs, output_root, resources, cluster=cluster, wait=args.wait)
    for job, sub in submitted:
        print(f"{job.run.index}\t{job.run.name}\tjob {sub.job_id}")
    print(f"{spec.name}: {len(submitted)} submitted, {skipped} skipped (finished); logs in "
          f"{os.path.join(output_root, '.submitit')}")
    return 0

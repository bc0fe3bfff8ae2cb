"""Launching a sweep's runs: on this machine (in turn or N at a time), or as one submitit job array (SLURM)."""
import concurrent.futures
import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.sweep import jobs as sweep_jobs
from hyperrestart.sweep import runners as sweep_runners
from hyperrestart.sweep import spec as sweep_spec


def check_jobs(jobs):
    """Fail before anything runs: unset $VARS, finished dirs with other settings."""
    for job in jobs:
        job.command()
        sweep_jobs.is_finished(job)


def launch_local(jobs, keep_going=False, parallel=1):
    """Run the jobs on this machine, `parallel` at a time (in turn by default), skipping finished ones; returns
    {status: count}. A failure raises once the running jobs end (no new one starts), unless keep_going."""
    check_jobs(jobs)
    if parallel < 1:
        raise HyperrestartError(f"--jobs {parallel}: give 1 or more runs at once")
    counts = {"done": 0, "skipped": 0, "failed": 0}
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        pending = {pool.submit(sweep_jobs.execute, job): job for job in jobs}
        for future in concurrent.futures.as_completed(pending):
            if future.cancelled():
                continue
            try:
                counts[future.result()] += 1
            except HyperrestartError as exc:
                counts["failed"] += 1
                errors.append(str(exc))
                if keep_going:
                    print(str(exc), file=sys.stderr, flush=True)
                else:
                    for other in pending:
                        other.cancel()  # runs not started yet are dropped; running ones finish
    if errors and not keep_going:
        raise HyperrestartError("\n".join(errors))
    if errors:
        raise HyperrestartError(f"{len(errors)} of {len(jobs)} runs failed (see above)")
    return counts


def parse_mem_gb(value):
    """'64G' / '64GB' / 64 / '500M' -> GB (float)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not match:
        raise HyperrestartError(f"slurm mem {value!r}: use e.g. 64G or 500M")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1}[match.group(2).upper()]
    return float(match.group(1)) * scale


def parse_time_min(value):
    """SLURM time ('D-HH:MM:SS', 'HH:MM:SS', 'MM', minutes as a number) -> minutes."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not match:
        raise HyperrestartError(f"slurm time {value!r}: use D-HH:MM:SS, HH:MM:SS or minutes")
    days, first, second, third = match.groups()
    if second is None and days is None:
        hours, minutes, seconds = 0, int(first), 0
    elif third is None and second is not None and days is None:
        hours, minutes, seconds = 0, int(first), int(second)  # MM:SS as SLURM reads it
    else:
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def executor_parameters(slurm):
    """The spec's `slurm:` section (plus flags) -> submitit AutoExecutor parameters."""
    params = {"name": slurm.get("name", "hyperrestart"), "nodes": int(slurm.get("nodes", 1)), "tasks_per_node": 1}
    if slurm.get("gpus") is not None:
        params["gpus_per_node"] = int(slurm["gpus"])
    if slurm.get("cpus") is not None:
        params["cpus_per_task"] = int(slurm["cpus"])
    if slurm.get("mem") is not None:
        params["mem_gb"] = parse_mem_gb(slurm["mem"])
    if slurm.get("time") is not None:
        params["timeout_min"] = parse_time_min(slurm["time"])
    for key, param in (("partition", "slurm_partition"), ("array_parallelism", "slurm_array_parallelism"),
                       ("account", "slurm_account"), ("qos", "slurm_qos"), ("constraint", "slurm_constraint")):
        if slurm.get(key) is not None:
            params[param] = slurm[key]
    if slurm.get("additional"):
        params["slurm_additional_parameters"] = dict(slurm["additional"])
    return params


def launch_submitit(jobs, output_root, slurm, cluster=None, wait=False):
    """Submit the unfinished jobs as one array (submitit AutoExecutor.map_array); cluster None = SLURM when
    available, 'local'/'debug' run them on this machine. Returns (submitted jobs, skipped count)."""
    import submitit

    check_jobs(jobs)
    pending = [job for job in jobs if not sweep_jobs.is_finished(job)]
    skipped = len(jobs) - len(pending)
    if not pending:
        return [], skipped
    nodes = int(slurm.get("nodes", 1))
    if nodes > 1:  # one run across the job's nodes: slurm.gpus processes on each (execute_submitted)
        pending = [dataclasses.replace(job, nodes=nodes, nproc_per_node=max(1, int(slurm.get("gpus") or 1)))
                   for job in pending]
    folder = Path(output_root).resolve() / ".submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if cluster is None and executor.cluster != "slurm":
        raise HyperrestartError("--launch slurm: no SLURM here (sbatch not found); run on the cluster's login "
                                "node, or use --launch local / --task-id K")
    executor.update_parameters(**executor_parameters(slurm))
    submitted = executor.map_array(sweep_jobs.execute_submitted, pending)
    if wait:
        failures = []
        for job, sub in zip(pending, submitted):
            try:
                sub.result()
            except Exception as exc:  # noqa: BLE001 - submitit wraps the remote error
                failures.append(f"{job.run.name} ({sub.job_id}): {str(exc).strip().splitlines()[-1]}")
        if failures:
            raise HyperrestartError("runs failed:\n  " + "\n  ".join(failures))
    return list(zip(pending, submitted)), skipped


def format_list(sweep, jobs) -> str:
    """The --list view: a header, then index, name, state and overrides of each run."""
    lines = [f"# {sweep.name}: {len(sweep.runs)} runs, runner {sweep.runner}, base config "
          f"{os.path.relpath(sweep.config)}"]
    for job in jobs:
        run = job.run
        state = "finished" if sweep_jobs.completion(job.run_dir) else "-"
        sets = " ".join(f"{k}={shlex.quote(sweep_runners.format_value(v))}" for k, v in run.overrides)
        config = "" if run.config == sweep.config else f" [config {os.path.relpath(run.config)}]"
        lines.append(f"{run.index}\t{run.name}\t{state}\t{sets}{config}")
    return "\n".join(lines)


def run_sweep(args):
    """`hyperrestart sweep`: list the runs, run one (--task-id or $SLURM_ARRAY_TASK_ID), run all here, or submit
    them with submitit. args: the verb's options (commands/sweep.py)."""
    spec = sweep_spec.parse_spec(args.spec, cli_sets=args.sets, tiny=args.tiny, max_runs=args.max_runs)
    output_root = args.output_root or os.path.join("runs", spec.name)
    jobs = sweep_jobs.make_jobs(spec, output_root, shlex.split(args.runner_args))
    if args.list:
        print(format_list(spec, jobs))
        return 0
    if args.tiny and spec.runner == "p3":
        sweep_runners.tiny_p3_environment()
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
        sweep_jobs.execute(jobs[task_id])
        return 0
    if args.launch == "local":
        counts = launch_local(jobs, keep_going=args.keep_going, parallel=args.jobs)
        print(f"{spec.name}: {counts['done']} run, {counts['skipped']} skipped (finished), {len(jobs)} in all; "
              f"outputs in {output_root}")
        print("\n".join(local_summary(spec, output_root, args.tiny)))
        return 0
    resources = dict(spec.slurm)
    for key in ("partition", "gpus", "cpus", "mem", "time", "array_parallelism", "account"):
        if getattr(args, key) is not None:
            resources[key] = getattr(args, key)
    cluster = None if args.submitit_cluster in (None, "slurm") else args.submitit_cluster
    submitted, skipped = launch_submitit(jobs, output_root, resources, cluster=cluster, wait=args.wait)
    for job, sub in submitted:
        print(f"{job.run.index}\t{job.run.name}\tjob {sub.job_id}")
    print(f"{spec.name}: {len(submitted)} submitted, {skipped} skipped (finished); logs in "
          f"{os.path.join(output_root, '.submitit')}")
    return 0


def local_summary(spec, output_root, tiny=False):
    """After a local sweep: the result per arm (report.build.summary_lines, imported lazily: report reads what sweep
    writes), what to expect of a tiny sweep's numbers, and the command that writes the full report."""
    from hyperrestart.report.build import summary_lines
    lines = summary_lines([output_root])
    if tiny and spec.runner == "p3":
        from hyperrestart.p3.synthetic import TINY_EXPECTATION
        lines.append(TINY_EXPECTATION)
    report = f"hyperrestart report {shlex.quote(str(output_root))} --out {shlex.quote(os.path.join(output_root, 'report'))}"
    return lines + [f"tables and curves: {report}" + (" --published" if spec.report.get("published") else "")]

"""`hyperrestart tune SPEC`: a Ray Tune search whose trials are P3 run folders under OUTPUT_ROOT.

Ray runs on this machine (a fresh local instance with --cpus CPUs, no dashboard, quiet logs, its files in
OUTPUT_ROOT/.ray) or on a cluster (--address). Each trial asks for --nproc CPUs (and the spec's GPUs), so Ray runs as
many at once as the resources allow. Progress is one line per evaluation; at the end each trial that its scheduler
stopped gets OUTPUT_ROOT/<trial>/.hyperrestart-stopped.json, the best configuration is printed and
`hyperrestart report OUTPUT_ROOT` tabulates the search. No Ray process outlives the command (Ctrl-C, SIGTERM)."""
import contextlib
import logging
import os
import shlex
import signal
import time
import warnings
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.sweep.jobs import completion
from hyperrestart.sweep.runners import expand_env, tiny_p3_environment
from hyperrestart.tune import space as tune_space
from hyperrestart.tune.spec import format_list, parse_tune_spec
from hyperrestart.tune.trial import SEARCH_RECORD, STOPPED_MARKER, TrialPlan, run_trial

QUIET_ENV = {"RAY_DEDUP_LOGS": "1", "RAY_USAGE_STATS_ENABLED": "0", "TUNE_DISABLE_SIGINT_HANDLER": "1",
             "RAY_AIR_NEW_OUTPUT": "0", "TUNE_RESULT_BUFFER_LENGTH": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0",
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0", "PYTHONWARNINGS": "ignore"}


def run_tune(args):
    """The verb: parse, refuse an output root that holds a search, start Ray, search, mark, summarise."""
    spec = parse_tune_spec(args.spec, cli_sets=args.sets, tiny=args.tiny)
    if args.list:
        print(format_list(spec))
        return 0
    output_root = Path(args.output_root or os.path.join("runs", spec.name)).resolve()
    if (output_root / SEARCH_RECORD).exists():
        raise HyperrestartError(f"{output_root} holds a search already ({SEARCH_RECORD}); choose another "
                                f"--output-root (or delete that folder to search again)")
    if output_root.exists() and (not output_root.is_dir() or any(output_root.iterdir())):
        raise HyperrestartError(f"--output-root {output_root} is {'a file' if not output_root.is_dir() else 'not empty'}"
                                f"; a search writes its trial folders into a new or empty folder")
    if args.nproc < 1:
        raise HyperrestartError(f"--nproc {args.nproc}: a trial needs at least one process")
    if not args.address and args.nproc > (args.cpus or os.cpu_count()):
        raise HyperrestartError(f"--nproc {args.nproc} asks more CPUs per trial than the local Ray has "
                                f"({args.cpus or os.cpu_count()}, --cpus); no trial could start")
    if args.tiny:
        tiny_p3_environment()
    fixed = expand_env(spec.fixed, f"{spec.path}")
    plan = TrialPlan(spec.name, str(output_root), spec.config, fixed, list(spec.args), spec.keys, spec.metric,
                     spec.max_steps, spec.scheduler.get("perturbation_interval", 0) if spec.scheduler["name"] == "pbt"
                     else 0, spec.scheduler.get("mutate", []), args.nproc, spec.report,
                     {k: os.environ[k] for k in ("OMP_NUM_THREADS", "HYPERRESTART_TINY_P3_DATA",
                                                 "HYPERRESTART_TINY_T5") if k in os.environ})
    started = time.monotonic()
    with ray_session(args.address, args.cpus, args.verbose), warnings.catch_warnings():
        output_root.mkdir(parents=True, exist_ok=True)  # only once Ray is up: a failed start leaves nothing
        atomic_write_json(output_root / SEARCH_RECORD, search_record(spec, args))
        if not args.verbose:  # Ray's advice (reuse_actors, ...) is not the user's to act on
            warnings.simplefilter("ignore")
        grid = build_tuner(spec, plan, output_root, args).fit()
        outcomes = mark_trials(grid, output_root, spec)
    elapsed = time.monotonic() - started
    for line in summary(spec, output_root, outcomes, elapsed):
        print(line)
    failed = sorted(name for name, state in outcomes.items() if state == "failed")
    if failed:
        raise HyperrestartError(f"{len(failed)} of {len(outcomes)} trials failed: "
                                + ", ".join(f"{name} (log: {output_root / name / 'sweep.log'})" for name in failed))
    return 0


def search_record(spec, args):
    return {"name": spec.name, "spec": str(spec.path), "metric": spec.metric, "mode": spec.mode,
            "num_samples": spec.num_samples, "searcher": spec.searcher, "seed": spec.seed,
            "scheduler": spec.scheduler, "max_steps": spec.max_steps, "eval_steps": spec.eval_steps,
            "space": {d.key: {d.kind: list(d.values)} for d in spec.space}, "tiny": bool(args.tiny),
            "nproc": args.nproc, "address": args.address, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


@contextlib.contextmanager
def ray_session(address, cpus, verbose):
    """Ray for the length of the block: a fresh local instance (or the cluster at `address`), quiet; shut down on
    the way out, also on Ctrl-C and SIGTERM (turned into KeyboardInterrupt), so no Ray process is left."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if address and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"  # read when ray is imported: see connect()
    try:
        import ray
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise HyperrestartError(f"`tune` needs Ray Tune ({exc}); install it with pip install -e \".[tune]\" "
                                f"(ray[tune] 2.60.0, optuna 5.0.0)") from None

    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        level = logging.INFO if verbose else logging.CRITICAL  # a failed trial: our one line, its log in the folder
        options = dict(include_dashboard=False, log_to_driver=bool(verbose), logging_level=level,
                       configure_logging=True)
        signal.signal(signal.SIGTERM, interrupt)  # while Ray starts
        if address:
            connect(ray, address, options)
        else:
            ray.init(address="local", num_cpus=cpus or os.cpu_count(), num_gpus=None, **options)
        signal.signal(signal.SIGTERM, interrupt)  # again: Ray's core worker installs its own (it aborts the driver)
        for name in ("ray", "ray.tune", "ray.train", "ray.data"):
            logging.getLogger(name).setLevel(level)
        yield
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)


def connect(ray, address, options):
    """Join the cluster at `address`. Ray 2.5x clusters use token authentication by default, but a driver joining
    one only sends its token when RAY_AUTH_MODE=token: set it when a token is at hand (~/.ray/auth_token,
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) and the mode is not chosen. A failure is one line."""
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise HyperrestartError(f"--address {address}: cannot join that Ray cluster ({reason}); start one with "
                                f"`ray start --head` there, and give this machine the cluster's token "
                                f"(RAY_AUTH_TOKEN or ~/.ray/auth_token) when it uses token authentication") from None


def build_tuner(spec, plan, output_root, args):
    """The Tuner: the trial function with its resources, the searcher, the scheduler, our progress lines."""
    from ray import tune

    resources = {"cpu": args.nproc, "gpu": args.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), resources)
    name_trial = TrialNamer()
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples, search_alg=searcher(spec),
        scheduler=scheduler(spec), max_concurrent_trials=spec.max_concurrent or None,
        trial_name_creator=name_trial, trial_dirname_creator=name_trial)
    checkpoints = tune.CheckpointConfig(num_to_keep=4 if spec.scheduler["name"] == "pbt" else None)
    run_config = tune.RunConfig(
        name="ray", storage_path=str(output_root / ".ray"), verbose=0, checkpoint_config=checkpoints,
        failure_config=tune.FailureConfig(max_failures=0), callbacks=[progress(spec, output_root)])
    return tune.Tuner(trainable, param_space=tune_space.param_space(spec), tune_config=tune_config,
                      run_config=run_config)


class TrialNamer:
    """trial_00000, trial_00001, ...: a run folder name (Ray's trial ids end in the trial's number)."""

    def __call__(self, trial):
        return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


def searcher(spec):
    """Random sampling (seeded), or Optuna's TPE (seeded)."""
    if spec.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=spec.seed))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.seed)


def scheduler(spec):
    """ASHA or PBT on the trial's optimizer step, or FIFO (every trial runs to the end)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    settings = spec.scheduler
    if settings["name"] == "asha":
        return ASHAScheduler(time_attr="step", max_t=spec.max_steps, grace_period=settings["grace_period"],
                             reduction_factor=settings["reduction_factor"])
    if settings["name"] == "pbt":
        import random
        random.seed(spec.seed)  # PBT draws quantile partners and perturbations from python's random
        return PopulationBasedTraining(
            time_attr="step", perturbation_interval=settings["perturbation_interval"],
            hyperparam_mutations=tune_space.mutations(spec), quantile_fraction=settings["quantile_fraction"],
            resample_probability=settings["resample_probability"],
            perturbation_factors=tuple(settings["perturbation_factors"]),
            custom_explore_fn=tune_space.Clipper(spec), synch=True)
    return FIFOScheduler()


def progress(spec, output_root):
    """Our progress lines as a Ray Tune callback (ray is imported only once the session's environment is set)."""
    from ray.tune import Callback

    class Progress(Callback):
        """One line per evaluation, per stop and per failure; nothing else from Ray."""

        def _values(self, trial):
            return " ".join(f"{k}={trial.config.get(k):.4g}" if isinstance(trial.config.get(k), float)
                            else f"{k}={trial.config.get(k)}" for k in spec.keys)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(spec.metric)
            print(f"{trial}: step {result.get('step')}: {spec.metric} {value:.2f}  [{self._values(trial)}]",
                  flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            step = (trial.last_result or {}).get("step")
            how = "finished" if step == spec.max_steps else f"stopped at step {step} by {spec.scheduler['name']}"
            print(f"{trial}: {how}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            log = Path(output_root) / str(trial) / "sweep.log"
            try:
                last = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1][:200]
            except (OSError, IndexError):
                last = "no output"
            print(f"{trial}: FAILED: {last} (log: {log})", flush=True)

    return Progress()


def mark_trials(grid, output_root, spec):
    """{trial: finished | stopped | failed}; a stopped trial's folder gets STOPPED_MARKER (step, score, by whom)."""
    outcomes = {}
    for result in grid:
        name = Path(result.path).name
        run_dir = output_root / name
        last = result.metrics or {}
        if result.error is not None:
            outcomes[name] = "failed"
        elif completion(run_dir) is not None:
            outcomes[name] = "finished"
        else:
            outcomes[name] = "stopped"
            atomic_write_json(run_dir / STOPPED_MARKER, {
                "step": last.get("step"), spec.metric: last.get(spec.metric), "by": spec.scheduler["name"],
                "max_steps": spec.max_steps, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return outcomes


def summary(spec, output_root, outcomes, elapsed):
    """The search in a few lines: counts, the best configuration (report.search, as `report` computes it), the
    report command."""
    from hyperrestart.report.search import best_lines

    counts = {state: sum(1 for s in outcomes.values() if s == state) for state in ("finished", "stopped", "failed")}
    lines = [f"{spec.name}: {len(outcomes)} trials in {elapsed:.0f}s: {counts['finished']} finished, "
             f"{counts['stopped']} stopped early by {spec.scheduler['name']}, {counts['failed']} failed; run folders "
             f"in {output_root}"]
    lines += best_lines(output_root)
    report = (f"hyperrestart report {shlex.quote(str(output_root))} --out "
              f"{shlex.quote(str(output_root / 'report'))}")
    return lines + [f"tables and the score-per-key plot: {report}"]

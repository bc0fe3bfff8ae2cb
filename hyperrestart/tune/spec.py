"""Tune specs: a sweep spec (sweeps/*.yaml: runner, config, set, report) whose `grid:` is replaced by a `search:`
section, checked when it is read, before Ray starts::

    search:
      space:                                   # one distribution per runner option
        learning_rate: {loguniform: [3.0e-4, 1.0e-2]}
        eta_min: {uniform: [0, 1.0e-4]}        # also {choice: [a, b, ...]}, {randint: [low, high]} (both inclusive)
      metric: rougeL_micro                     # a column of the P3 runner's eval_log.csv
      mode: max
      num_samples: 8                           # trials (PBT: the population)
      searcher: random                         # random | optuna (Optuna's TPE through Ray's OptunaSearch)
      seed: 0                                  # the searcher's (and PBT's) random seed
      scheduler: {name: asha, grace_period: 102, reduction_factor: 2}
      # or {name: pbt, perturb_every: 2, mutate: [learning_rate, eta_min], quantile_fraction: 0.25,
      #     resample_probability: 0.25, perturbation_factors: [1.2, 0.8]} or {name: fifo}
      # (PBT compares and exploits every `perturb_every` evaluations, or every `perturbation_interval` steps: a
      # multiple of eval_steps)

Refused, one line each: unknown keys (with the closest allowed one), a malformed distribution, bounds that are not
finite numbers or out of the option's range, low >= high, a log scale through 0, an unknown metric, a PBT key that is
not searched or that the runner cannot change on resume, steps that do not meet the run's evaluations.
"""
import dataclasses
import difflib
import math
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.overrides import parse_set
from hyperrestart.p3.runner import RUNNER_PACKAGE, arguments_module
from hyperrestart.sweep.runners import TINY_P3, merge_config
from hyperrestart.sweep.spec import (MAX_RUNS, Run, _check_folder_name, _check_keys, _dedupe, _section, base_of,
                                     load_yaml)
from hyperrestart.upstream.ranges import value_problem

TOP_LEVEL_KEYS = ("name", "description", "runner", "config", "args", "set", "search", "report")
SEARCH_KEYS = ("space", "metric", "mode", "num_samples", "searcher", "seed", "scheduler", "max_concurrent")
REPORT_KEYS = ("title",)
KINDS = ("uniform", "loguniform", "choice", "randint")
SEARCHERS = ("random", "optuna")
SCHEDULER_KEYS = {
    "fifo": ("name",),
    "asha": ("name", "grace_period", "reduction_factor"),
    "pbt": ("name", "perturbation_interval", "perturb_every", "mutate", "quantile_fraction", "resample_probability",
            "perturbation_factors"),
}
EVAL_COLUMNS_NOT_METRICS = ("step", "num_examples", "num_tasks", "eval_seconds")


@dataclasses.dataclass(frozen=True)
class Distribution:
    key: str
    kind: str                 # one of KINDS
    values: tuple             # (low, high) for uniform / loguniform / randint (inclusive); the options for choice

    def describe(self):
        return f"{self.kind}{list(self.values)}"


@dataclasses.dataclass
class TuneSpec:
    path: Path
    name: str
    description: str
    runner: str
    config: str               # absolute path of the base JSON config
    args: list                # extra runner arguments
    fixed: list               # [(key, value)]: `set`, --tiny's settings, --set (values may hold $VARS)
    space: list               # [Distribution]
    metric: str
    mode: str
    num_samples: int
    searcher: str
    seed: int
    scheduler: dict           # {"name": ..., settings}
    max_concurrent: int
    max_steps: int            # of every trial (the runner's, after `set`, --tiny and --set)
    eval_steps: int
    report: dict

    @property
    def keys(self):
        return [d.key for d in self.space]

    def distribution(self, key):
        return next(d for d in self.space if d.key == key)


def _unknown(found, allowed, where, path):
    """One line naming the first unknown key with the closest allowed one."""
    for key in found:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise HyperrestartError(f"{path}: unknown key `{key}` in {where}; {hint}allowed: {', '.join(allowed)}")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_distribution(key, body, path):
    """`{kind: [args]}` -> Distribution; HyperrestartError (one line) on anything else."""
    where = f"search.space.{key}"
    if not isinstance(body, dict) or len(body) != 1:
        raise HyperrestartError(f"{path}: `{where}` must be one distribution such as {{loguniform: [1.0e-4, 1.0e-2]}}"
                                f" ({', '.join(KINDS)}), got {body!r}")
    kind, values = next(iter(body.items()))
    _unknown([kind], list(KINDS), where, path)
    if not isinstance(values, list) or not values:
        raise HyperrestartError(f"{path}: `{where}.{kind}` must be a list, got {values!r}")
    if kind == "choice":
        bad = [v for v in values if isinstance(v, (dict, list)) or v is None]
        if bad:
            raise HyperrestartError(f"{path}: `{where}.choice` holds {bad[0]!r}; choices are numbers, strings or "
                                    f"booleans")
        return Distribution(key, kind, tuple(values))
    if len(values) != 2 or not all(_number(v) for v in values):
        raise HyperrestartError(f"{path}: `{where}.{kind}` must be [low, high], two finite numbers, got {values!r}")
    low, high = values
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise HyperrestartError(f"{path}: `{where}.randint` bounds must be integers, got {values!r}")
    if not low < high:
        raise HyperrestartError(f"{path}: `{where}.{kind}` has low {low!r} >= high {high!r}; give [low, high] with "
                                f"low < high (a fixed value goes in `set:`)")
    if kind == "loguniform" and low <= 0:
        raise HyperrestartError(f"{path}: `{where}.loguniform` needs low > 0 (a log scale cannot reach {low!r}); "
                                f"use uniform, or a small positive low such as 1.0e-8")
    return Distribution(key, kind, (low, high))


def _check_value_ranges(space, fixed, path):
    """Every bound or choice is a valid value of its option (upstream.ranges); eta_min stays below learning_rate
    for every sample (the scheduler refuses eta_min >= learning_rate). fixed: the run's eta_min and learning_rate
    when they are not searched."""
    for dist in space:
        for value in dist.values:
            problem = value_problem(dist.key, value)
            if problem:
                raise HyperrestartError(f"{path}: search.space.{dist.key}: {problem}")
    def extreme(key, pick):
        if key in {d.key for d in space}:
            values = [v for v in next(d for d in space if d.key == key).values if _number(v)]
            return pick(values) if values else None
        return fixed.get(key) if _number(fixed.get(key)) else None
    eta_high, lr_low = extreme("eta_min", max), extreme("learning_rate", min)
    if eta_high is not None and lr_low is not None and eta_high >= lr_low and \
            {"eta_min", "learning_rate"} & {d.key for d in space}:
        raise HyperrestartError(f"{path}: search.space: eta_min can reach {eta_high!r} and learning_rate can be as "
                                f"low as {lr_low!r}; the restart schedule needs eta_min < learning_rate in every "
                                f"trial: keep eta_min's range below learning_rate's")


def _runner_default(name):
    field = next(f for cls in arguments_module().ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.name == name)
    return field.default


def _metrics():
    from hyperrestart.core.overlay_import import load_overlay_module
    logs = load_overlay_module("hyperrestart._p3_runner_logs", RUNNER_PACKAGE / "logs.py")
    return [c for c in logs.EVAL_LOG_FIELDS if c not in EVAL_COLUMNS_NOT_METRICS]


def _resumable():
    from hyperrestart.core.overlay_import import load_overlay_module
    return load_overlay_module("hyperrestart._p3_runner_resume_changes", RUNNER_PACKAGE / "resume_changes.py").RESUMABLE


def _int_at_least(value, low, where, path):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise HyperrestartError(f"{path}: `{where}` must be an integer >= {low}, got {value!r}")
    return value


def _fraction(value, low, high, where, path):
    if not _number(value) or not low < value < high:
        raise HyperrestartError(f"{path}: `{where}` must be a number between {low} and {high}, got {value!r}")
    return float(value)


def parse_scheduler(body, space, max_steps, eval_steps, path):
    """The scheduler section, checked against the search space and the run's steps."""
    body = {"name": "fifo"} if body is None else body
    if isinstance(body, str):
        body = {"name": body}
    if not isinstance(body, dict) or body.get("name") not in SCHEDULER_KEYS:
        name = body.get("name") if isinstance(body, dict) else body
        close = difflib.get_close_matches(str(name), list(SCHEDULER_KEYS), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise HyperrestartError(f"{path}: `search.scheduler.name` is {name!r}; use one of "
                                f"{', '.join(SCHEDULER_KEYS)}{hint}")
    name = body["name"]
    _unknown(body, list(SCHEDULER_KEYS[name]), f"search.scheduler ({name})", path)
    where = "search.scheduler."
    if name == "asha":
        grace = _int_at_least(body.get("grace_period", eval_steps), 1, where + "grace_period", path)
        if grace >= max_steps:
            raise HyperrestartError(f"{path}: `{where}grace_period` {grace} is not below max_steps {max_steps}: "
                                    f"ASHA could stop nothing")
        factor = body.get("reduction_factor", 2)
        if not _number(factor) or factor <= 1:
            raise HyperrestartError(f"{path}: `{where}reduction_factor` must be a number > 1, got {factor!r}")
        return {"name": name, "grace_period": grace, "reduction_factor": factor}
    if name == "pbt":
        if "perturbation_interval" in body and "perturb_every" in body:
            raise HyperrestartError(f"{path}: give `{where}perturbation_interval` (steps) or `{where}perturb_every` "
                                    f"(evaluations), not both")
        if "perturb_every" in body:
            interval = _int_at_least(body["perturb_every"], 1, where + "perturb_every", path) * eval_steps
        else:
            interval = _int_at_least(body.get("perturbation_interval", eval_steps), 1,
                                     where + "perturbation_interval", path)
        if interval % eval_steps or interval >= max_steps:
            raise HyperrestartError(f"{path}: `{where}perturbation_interval` {interval} must be a multiple of "
                                    f"eval_steps ({eval_steps}) below max_steps ({max_steps}): a trial is compared "
                                    f"and exploited at an evaluation")
        keys = [d.key for d in space]
        mutate = body.get("mutate", keys)
        if not isinstance(mutate, list) or not mutate:
            raise HyperrestartError(f"{path}: `{where}mutate` must be a list of searched keys, got {mutate!r}")
        for key in mutate:
            if key not in keys:
                raise HyperrestartError(f"{path}: `{where}mutate` names `{key}`, which is not searched "
                                        f"(search.space: {', '.join(keys)}); PBT perturbs searched keys only")
            if key not in _resumable():
                raise HyperrestartError(f"{path}: `{where}mutate` names `{key}`, which the P3 runner cannot change "
                                        f"when it resumes a donor's checkpoint (it can: {', '.join(_resumable())})")
        factors = body.get("perturbation_factors", [1.2, 0.8])
        if not isinstance(factors, list) or not factors or not all(_number(f) and f > 0 for f in factors):
            raise HyperrestartError(f"{path}: `{where}perturbation_factors` must be a list of numbers > 0, got "
                                    f"{factors!r}")
        return {"name": name, "perturbation_interval": interval, "mutate": list(mutate),
                "quantile_fraction": _fraction(body.get("quantile_fraction", 0.25), 0, 0.5 + 1e-12,
                                               where + "quantile_fraction", path),
                "resample_probability": _fraction(body.get("resample_probability", 0.25), -1e-12, 1 + 1e-12,
                                                  where + "resample_probability", path),
                "perturbation_factors": [float(f) for f in factors]}
    return {"name": name}


def parse_tune_spec(path, cli_sets=(), tiny=False):
    """Validate a tune spec and resolve it (TuneSpec); HyperrestartError naming the key on any problem.
    tiny: the P3 runner's tiny settings (sweep.runners.TINY_P3) before cli_sets."""
    path = Path(path)
    data = load_yaml(path)
    if "grid" in data:
        raise HyperrestartError(f"{path}: a tune spec has no `grid:`; put fixed settings in `set:` and searched ones "
                                f"in `search.space` (`hyperrestart sweep` runs grids)")
    _unknown(data, list(TOP_LEVEL_KEYS), "the spec", path)
    if data.get("runner") != "p3":
        raise HyperrestartError(f"{path}: `runner` is {data.get('runner')!r}; `tune` runs the P3 runner "
                                f"(runner: p3) so far")
    config, args, fixed = base_of(data, path)
    search = data.get("search")
    if not isinstance(search, dict):
        raise HyperrestartError(f"{path}: `search` must be a mapping with keys among {', '.join(SEARCH_KEYS)}")
    _unknown(search, list(SEARCH_KEYS), "search", path)
    space = search.get("space")
    if not isinstance(space, dict) or not space:
        raise HyperrestartError(f"{path}: `search.space` must map at least one option to a distribution, e.g. "
                                f"learning_rate: {{loguniform: [1.0e-4, 1.0e-2]}}")
    space = [parse_distribution(str(key), body, path) for key, body in space.items()]
    report = _section(data, "report", REPORT_KEYS, path)
    name = str(data.get("name") or path.stem)
    _check_folder_name(name, "the spec's `name` (default output root runs/<name>)", path)

    tagged = [(str(k), v, "set") for k, v in fixed.items()]
    searched = {d.key for d in space}
    tagged += [(k, v, "--tiny") for k, v in (TINY_P3 if tiny else []) if k not in searched]  # the search decides
    tagged += [(*parse_set(item), "--set") for item in cli_sets]
    both = sorted({k for k, _, _ in tagged} & {d.key for d in space})
    if both:
        raise HyperrestartError(f"{path}: `{both[0]}` is both searched (search.space) and fixed (set/--set/--tiny); "
                                f"keep it in one place")
    probe = Run(0, name, config, [(k, v) for k, v, _ in tagged], {}, name, None,
                tagged + [(d.key, d.values[0], "search.space") for d in space])
    _check_keys([probe], "p3", [str(a) for a in args], path)
    for key, value, source in tagged:
        if source != "--tiny" and value_problem(key, value):  # the tiny settings are the runner's own
            raise HyperrestartError(f"{path}: {source}: {value_problem(key, value)}")
    fixed = _dedupe([(k, v) for k, v, _ in tagged])  # later ones win (--tiny's data over the spec's)
    merged = merge_config(config, fixed)
    _check_value_ranges(space, {k: merged.get(k, _runner_default(k)) for k in ("eta_min", "learning_rate")}, path)
    max_steps = merged.get("max_steps", _runner_default("max_steps"))
    eval_steps = merged.get("eval_steps", _runner_default("eval_steps"))
    if not eval_steps or eval_steps >= max_steps:
        raise HyperrestartError(f"{path}: the trials evaluate every {eval_steps} steps of {max_steps}: a search needs "
                                f"evaluations during training to compare trials; set eval_steps below max_steps")

    metric = search.get("metric", "rougeL_micro")
    metrics = _metrics()
    if metric not in metrics:
        close = difflib.get_close_matches(str(metric), metrics, n=1)
        raise HyperrestartError(f"{path}: `search.metric` {metric!r} is not a metric of the P3 runner's evaluations"
                                f"{f'; did you mean `{close[0]}`?' if close else ''} (metrics: {', '.join(metrics)})")
    mode = search.get("mode", "max")
    if mode not in ("min", "max"):
        raise HyperrestartError(f"{path}: `search.mode` must be min or max, got {mode!r}")
    num_samples = _int_at_least(search.get("num_samples", 1), 1, "search.num_samples", path)
    if num_samples > MAX_RUNS:
        raise HyperrestartError(f"{path}: `search.num_samples` {num_samples} is over the limit of {MAX_RUNS} trials")
    searcher = search.get("searcher", "random")
    if searcher not in SEARCHERS:
        close = difflib.get_close_matches(str(searcher), SEARCHERS, n=1)
        raise HyperrestartError(f"{path}: `search.searcher` is {searcher!r}; use one of {', '.join(SEARCHERS)}"
                                f"{f' (did you mean `{close[0]}`?)' if close else ''}")
    seed = search.get("seed", 0)
    _int_at_least(seed, 0, "search.seed", path)
    max_concurrent = search.get("max_concurrent", 0)
    _int_at_least(max_concurrent, 0, "search.max_concurrent", path)
    scheduler = parse_scheduler(search.get("scheduler"), space, max_steps, eval_steps, path)
    if scheduler["name"] == "pbt" and searcher != "random":
        raise HyperrestartError(f"{path}: PBT draws its population at random and then perturbs it; use "
                                f"`searcher: random` with `scheduler: pbt`")
    if scheduler["name"] == "pbt" and num_samples < 2:
        raise HyperrestartError(f"{path}: a PBT population needs at least 2 members (search.num_samples)")
    return TuneSpec(path, name, str(data.get("description") or ""), "p3", config, [str(a) for a in args], fixed,
                    space, metric, mode, num_samples, searcher, seed, scheduler, max_concurrent, max_steps,
                    eval_steps, report)


def format_list(spec):
    """The --list view: what will be searched, how, and the fixed settings."""
    lines = [f"# {spec.name}: {spec.num_samples} trial(s), runner {spec.runner}, searcher {spec.searcher}, scheduler "
             f"{spec.scheduler['name']}, {spec.mode} {spec.metric}; {spec.max_steps} steps evaluated every "
             f"{spec.eval_steps}"]
    lines += [f"search\t{d.key}\t{d.describe()}" for d in spec.space]
    lines += [f"set\t{k}\t{v!r}" for k, v in spec.fixed if not str(k).startswith("_")]
    settings = {k: v for k, v in spec.scheduler.items() if k != "name"}
    if settings:
        lines.append(f"scheduler\t{spec.scheduler['name']}\t{settings}")
    return "\n".join(lines)

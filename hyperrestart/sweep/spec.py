"""Sweep specs: a base config + a grid of overrides (YAML) -> named runs, run locally, per array task, or via submitit.

A spec (see sweeps/*.yaml)::

    name: table5_schedulers          # optional, default: the file name
    runner: run                      # `run` (hyperrestart run, the patched upstream trainers) or `p3`
    config: configs/hyperdecoders/glue_restart.json   # base JSON config (relative to the project root or the spec)
    args: ["--tiny"]                 # optional extra runner arguments, before the overrides
    set: {max_steps: 65535}          # overrides for every run (keys: the runner's options; values may be mappings)
    grid:                            # the runs: the product of the axes, in this order
      scheduler:                     # a labelled axis: label -> overrides (`config:` switches the base config)
        constant: {lr_scheduler: constant}
        restart: {lr_scheduler: cosine_annual_w_restarts}
      eta_min: [0, 1.0e-6]           # a scalar axis: the axis name is the override key
      seed: [1, 2, 3]
    run_name: "{scheduler}_seed{seed}"   # optional; fields are the axis names with dots as `_`
    report: {seed_axis: seed, compare: {axis: scheduler, baseline: constant}}
    slurm: {partition: gpu, gpus: 1, cpus: 8, mem: 64G, time: "2-00:00:00", array_parallelism: 16}

Checked when the spec is read, before anything runs or is submitted: every run name (and label, and the sweep's
name) is a plain folder name, so each run directory stays inside OUTPUT_ROOT; every override key (`set`, grid,
`--set`) is an option of the runner: the P3 runner's argparse options (read from its parser), or for `runner: run`
a field of the upstream's argument dataclasses (the list recorded in hyperrestart/upstream_arguments.json from the
patched upstreams; tests keep it equal to the live classes).

Every run gets its own directory OUTPUT_ROOT/<run name> (also the trainer's output dir). It is *finished* when
`.hyperrestart-complete.json` exists there: written atomically, only after the runner exited 0, with the run's
fingerprint (runner, config, overrides), so relaunching a sweep skips finished runs and refuses to mix a changed spec
into an old directory.
"""
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import file_sha256
from hyperrestart.core.limits import (MAX_DEPTH, check_depth, check_name_length, non_finite_numbers,
                                      read_text_bounded)
from hyperrestart.core.overrides import parse_set
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.sweep.runners import RUNNERS, SWEEP_OWNED_KEYS, TINY_P3, accepted_keys, merge_config

TOP_LEVEL_KEYS = ("name", "description", "runner", "config", "args", "set", "grid", "run_name", "report", "slurm")
REPORT_KEYS = ("seed_axis", "compare", "split", "metric", "title", "published")
SLURM_KEYS = ("partition", "gpus", "cpus", "mem", "time", "array_parallelism", "account", "qos", "constraint",
              "nodes", "additional")
MAX_RUNS = 10_000  # a grid larger than this is refused before it is built (--max-runs raises it)
NAME_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")
FOLDER_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")  # no separators, not hidden, not `.` or `..`


# --- YAML ---------------------------------------------------------------------------------------------------------
def _yaml_loader():
    """SafeLoader with YAML 1.2 scalars: 1e-6 is a float, only true/false are booleans (`no`, `on` stay strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise AliasRefused(f"line {event.start_mark.line + 1}: alias *{event.anchor}")
            return super().compose_node(parent, index)

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return Loader


class AliasRefused(Exception):
    """A YAML alias (*name): refused, so a small spec cannot expand into a huge one (an alias bomb)."""


def load_yaml(path):
    """The spec's mapping: at most MAX_FILE_BYTES and MAX_DEPTH levels (core.limits), no YAML aliases, finite
    numbers only."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise HyperrestartError(f"sweep spec {path} does not exist; pass a YAML file such as sweeps/table2_p3.yaml")
    text = read_text_bounded(path, "sweep spec")
    loader = _yaml_loader()(text)
    try:
        data = loader.get_single_data()
    except AliasRefused as exc:
        raise HyperrestartError(f"{path}: {exc}; a sweep spec may not use YAML aliases (they can expand a small "
                                f"file into a huge one): write the values out") from None
    except RecursionError:
        raise HyperrestartError(f"{path}: nested too deeply to read (the limit is {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        raise HyperrestartError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise HyperrestartError(f"{path}: a sweep spec must be a YAML mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    check_depth(data, str(path))
    bad = non_finite_numbers(data)
    if bad:
        raise HyperrestartError(f"{path}: {', '.join(f'{k} is {v!r}' for k, v in bad)}: NaN and infinite values "
                                f"are refused")
    return data


# --- spec ---------------------------------------------------------------------------------------------------------
def label_for(value):
    """A grid value as a file-name-safe label: 1e-06 -> '1e-06', 'cosine' -> 'cosine', [1, 2] -> '1-2'."""
    if isinstance(value, (list, tuple)):
        text = "-".join(label_for(v) for v in value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return NAME_SAFE.sub("-", text).strip("-") or "none"


@dataclasses.dataclass
class Axis:
    name: str                 # as written in the spec
    values: list              # [(label, overrides list[(key, value)], config or None)]
    labelled: bool            # label -> overrides mapping (arm) rather than a scalar list

    @property
    def field(self):
        return self.name.replace(".", "_")


@dataclasses.dataclass
class Run:
    index: int
    name: str
    config: str               # absolute path of the base JSON config
    overrides: list           # [(key, value)]: spec `set`, then the grid values, then the CLI --set
    labels: dict              # axis name -> label
    arm: str                  # the run name without the seed axis (rows of the report)
    seed: object              # the seed axis value (None when the spec has no seed axis)
    tagged: list = dataclasses.field(default=None, repr=False, compare=False)  # [(key, value, where it comes from)]

    def fingerprint(self, runner, extra_args):
        blob = json.dumps({"runner": runner, "config": Path(self.config).name,
                           "config_sha256": file_sha256(self.config), "args": list(extra_args),
                           "overrides": [[k, v] for k, v in self.overrides]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]



@dataclasses.dataclass
class Sweep:
    path: Path
    name: str
    description: str
    runner: str
    config: str
    args: list
    fixed: list
    axes: list
    run_name: str
    report: dict
    slurm: dict
    runs: list

    def run(self, index):
        if not self.runs:
            raise HyperrestartError(f"{self.path}: the sweep has no runs")
        if not 0 <= index < len(self.runs):
            raise HyperrestartError(f"task id {index} is out of range: {self.path} has {len(self.runs)} runs "
                                    f"(0..{len(self.runs) - 1}); see `hyperrestart sweep {self.path} --list`")
        return self.runs[index]


def base_of(data, path):
    """A spec's base: (the config file, the runner args as a list, the `set` overrides), each checked."""
    if "config" not in data:
        raise HyperrestartError(f"{path}: `config` (the base JSON config) is missing")
    config = _resolve_config(data["config"], path, "config")
    args = data.get("args") or []
    if isinstance(args, str):
        args = shlex.split(args)
    if not isinstance(args, list):
        raise HyperrestartError(f"{path}: `args` must be a list of runner arguments, got {args!r}")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise HyperrestartError(f"{path}: `set` must be a mapping of overrides, got {fixed!r}")
    return config, args, fixed


def _resolve_config(value, spec_path, where):
    if not isinstance(value, str) or not value:
        raise HyperrestartError(f"{spec_path}: `{where}` must be a path to a JSON config, got {value!r}")
    candidates = [Path(value)] if Path(value).is_absolute() else [PROJECT_ROOT / value, spec_path.parent / value]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    raise HyperrestartError(f"{spec_path}: `{where}` names {value}, which does not exist (looked in "
                            f"{', '.join(str(c.parent) for c in candidates)}); fix the path or add the config")


def _parse_axis(name, values, spec_path):
    where = f"grid.{name}"
    if isinstance(values, list):
        if not values:
            raise HyperrestartError(f"{spec_path}: grid axis `{name}` is empty; give it at least one value or remove it")
        for value in values:
            if isinstance(value, dict):
                raise HyperrestartError(f"{spec_path}: `{where}` mixes a mapping into a list of values; use "
                                        f"`{name}: {{label: {{key: value}}}}` for labelled arms")
        return [Axis(name, [(label_for(v), [(name, v)], None) for v in values], labelled=False)]
    if isinstance(values, dict):
        if not values:
            raise HyperrestartError(f"{spec_path}: grid axis `{name}` is empty; give it at least one value or remove it")
        arms = []
        for label, body in values.items():
            _check_label(label, name, spec_path)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise HyperrestartError(
                    f"{spec_path}: `{where}.{label}` must be a mapping of overrides (or empty), got {body!r}; "
                    f"a scalar axis is a list: `{name}: [a, b]`")
            body = dict(body)
            config = _resolve_config(body.pop("config"), spec_path, f"{where}.{label}.config") \
                if "config" in body else None
            arms.append((label_for(label), list(body.items()), config))
        return [Axis(name, arms, labelled=True)]
    raise HyperrestartError(f"{spec_path}: grid axis `{name}` must be a list of values or a mapping of labelled "
                            f"overrides, got {values!r}")


def _check_label(label, axis, spec_path):
    """A labelled arm names run folders: refuse labels that are empty, `.`/`..`, hidden or hold a path separator."""
    text = str(label)
    check_name_length(text, PROJECT_ROOT / "runs", f"{spec_path}: grid label of axis `{axis}`")
    if not text.strip() or text.strip() in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise HyperrestartError(
            f"{spec_path}: grid label {text!r} of axis `{axis}` cannot name a run folder (labels name the folders "
            f"OUTPUT_ROOT/<run name>; an empty, `.`/`..`, hidden or path-like label would write elsewhere); use a "
            f"plain name of letters, digits and . _ + - that does not start with a dot")


def _check_values(axes, fixed, seed_axis, spec_path):
    """Grid and `set` values typed when the spec is read: the seed axis holds integers, a numeric training
    setting holds numbers in its range (upstream.ranges)."""
    from hyperrestart.upstream.ranges import value_problem
    problems = []
    for axis in axes:
        for label, overrides, _ in axis.values:
            where = f"grid.{axis.name}" + (f".{label}" if axis.labelled else "")
            for key, value in overrides:
                if key == seed_axis and (not isinstance(value, int) or isinstance(value, bool)):
                    problems.append(f"{where}: seed {value!r} is not an integer (seeds are integers, e.g. [1, 2, 3])")
                elif value_problem(key, value):
                    problems.append(f"{where}: {value_problem(key, value)}")
    problems += [f"set: {value_problem(key, value)}" for key, value in fixed if value_problem(key, value)]
    if problems:
        raise HyperrestartError(f"{spec_path}: {len(problems)} grid value(s) of the wrong type or range:\n  "
                                + "\n  ".join(problems))


def _check_folder_name(name, what, spec_path, folder=None):
    check_name_length(name, folder or PROJECT_ROOT / "runs", f"{spec_path}: {what}")
    if not FOLDER_NAME.fullmatch(name):
        raise HyperrestartError(
            f"{spec_path}: {what} {name!r} is not a plain folder name, so its directory would not stay inside the "
            f"output root; use letters, digits and . _ + -, not starting with a dot (change `run_name` or the labels)")


def _check_keys(runs, runner_kind, args, path):
    """Every override key is one the runner accepts (see accepted_keys); one error listing every unknown key and
    where it comes from. When the accepted keys cannot be known here, a warning says the check was not done."""
    cache, problems, unchecked, configs = {}, {}, set(), {}
    for run in runs:
        names, what = accepted_keys(runner_kind, run.config, args, cache)
        if run.config not in configs:  # the base config's own keys (the P3 runner skips `_comment` keys)
            configs[run.config] = [(key, None, f"config {os.path.relpath(run.config)}")
                                   for key in merge_config(run.config, [])
                                   if not (runner_kind == "p3" and key.startswith("_"))]
            base = configs[run.config]
        else:
            base = []
        comments = [t for t in run.tagged if runner_kind == "p3" and t[0].startswith("_")]  # notes, not options
        for key, _, source in base + [t for t in run.tagged if t not in comments]:
            if key in SWEEP_OWNED_KEYS and not source.startswith("config "):  # a config's own output_dir is replaced
                problems.setdefault((key, source), f"`{key}` (from {source}) is set by the sweep itself "
                                                   f"(OUTPUT_ROOT/<run name>); choose the folder with --output-root")
            elif names is None:
                unchecked.add(what)
            elif key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                problems.setdefault((key, source), f"`{key}` (from {source}) is not one of the {what}{hint}")
    if problems:
        raise HyperrestartError(f"{path}: key(s) the runner does not accept, found before anything runs:\n  "
                                + "\n  ".join(problems.values()))
    for what in sorted(unchecked):
        print(f"warning: {path}: override keys not checked: {what}; the runner checks them when each run starts",
              file=sys.stderr)


def parse_spec(path, cli_sets=(), tiny=False, max_runs=None):
    """Validate a spec file and expand it into runs; raises HyperrestartError naming the key/file on any problem.
    tiny: p3 runs get TINY_P3 (before cli_sets), `run` runs get `--tiny`."""
    path = Path(path)
    max_runs = MAX_RUNS if max_runs is None else max_runs
    data = load_yaml(path)
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise HyperrestartError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; allowed: "
                                f"{', '.join(TOP_LEVEL_KEYS)}")
    runner = data.get("runner")
    if runner not in RUNNERS:
        raise HyperrestartError(f"{path}: `runner` is {runner!r}; use one of {', '.join(RUNNERS)}")
    config, args, fixed = base_of(data, path)
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise HyperrestartError(f"{path}: `grid` must be a non-empty mapping of axes (e.g. `seed: [1, 2, 3]`)")
    axes = [axis for name, values in grid.items() for axis in _parse_axis(str(name), values, path)]
    count = math.prod(len(axis.values) for axis in axes)
    if count > max_runs:
        raise HyperrestartError(f"{path}: the grid has {count:,} runs ({' x '.join(str(len(a.values)) for a in axes)}"
                                f"), over the limit of {max_runs:,} runs; shrink the grid, or raise the limit with "
                                f"--max-runs N")
    report = _section(data, "report", REPORT_KEYS, path)
    slurm = _section(data, "slurm", SLURM_KEYS, path)
    check_nodes(slurm, runner, [str(a) for a in args], path)
    if report.get("published") is not None:
        from hyperrestart.report.aggregate import load_published
        try:
            load_published(report["published"])
        except HyperrestartError as exc:
            raise HyperrestartError(f"{path}: report.published: {exc}") from None
    seed_axis = report.get("seed_axis", "seed")
    axis_names = [axis.name for axis in axes]
    if "seed_axis" in report and seed_axis not in axis_names:
        raise HyperrestartError(f"{path}: report.seed_axis `{seed_axis}` is not a grid axis ({', '.join(axis_names)})")
    _check_values(axes, list(fixed.items()), seed_axis, path)
    compare = report.get("compare")
    if compare is not None:
        if not isinstance(compare, dict) or set(compare) != {"axis", "baseline"}:
            raise HyperrestartError(f"{path}: report.compare must be {{axis: AXIS, baseline: LABEL}}, got {compare!r}")
        axis = next((a for a in axes if a.name == compare["axis"]), None)
        if axis is None:
            raise HyperrestartError(f"{path}: report.compare.axis `{compare['axis']}` is not a grid axis "
                                    f"({', '.join(axis_names)})")
        if label_for(compare["baseline"]) not in [label for label, _, _ in axis.values]:
            raise HyperrestartError(f"{path}: report.compare.baseline `{compare['baseline']}` is not a label of "
                                    f"axis `{axis.name}` ({', '.join(label for label, _, _ in axis.values)})")
    run_name = data.get("run_name")
    _check_folder_name(str(data.get("name") or path.stem), "the sweep's `name` (default output root runs/<name>)", path)
    cli_overrides = [parse_set(item) for item in cli_sets]
    if tiny and runner == "p3":
        cli_overrides = TINY_P3 + cli_overrides
    if tiny and runner == "run" and "--tiny" not in args:
        args = list(args) + ["--tiny"]
    cli_source = ["--set"] * len(cli_overrides)
    if tiny and runner == "p3":
        cli_source = ["--tiny"] * len(TINY_P3) + cli_source[len(TINY_P3):]
    runs = []
    for index, combo in enumerate(itertools.product(*[axis.values for axis in axes])):
        labels = {axis.name: label for axis, (label, _, _) in zip(axes, combo)}
        tagged = [(str(key), value, "set") for key, value in fixed.items()]
        run_config = config
        for axis, (label, axis_overrides, axis_config) in zip(axes, combo):
            source = f"grid.{axis.name}.{label}" if axis.labelled else f"grid.{axis.name}"
            tagged.extend((key, value, source) for key, value in axis_overrides)
            run_config = axis_config or run_config
        tagged.extend((key, value, source) for (key, value), source in zip(cli_overrides, cli_source))
        overrides = [(key, value) for key, value, _ in tagged]
        name = _run_name(axes, labels, run_name, path)
        _check_folder_name(name, f"run {index}'s name", path)
        arm_axes = [a for a in axes if a.name != seed_axis]
        arm = _run_name(arm_axes, labels, None, path) if arm_axes else "all"
        seed = next((v for k, v in reversed(overrides) if k == seed_axis), None)
        runs.append(Run(index, name, run_config, _dedupe(overrides), labels, arm, seed, tagged))
    seen = {}
    for run in runs:
        if run.name in seen:
            raise HyperrestartError(f"{path}: runs {seen[run.name]} and {run.index} are both named `{run.name}`; "
                                    f"make `run_name` use every grid axis or give arms distinct labels")
        seen[run.name] = run.index
    _check_keys(runs, runner, [str(a) for a in args], path)
    return Sweep(path, str(data.get("name") or path.stem), str(data.get("description") or ""), runner, config,
                 [str(a) for a in args], list(fixed.items()), axes, run_name, report, slurm, runs)


NODE_OPTIONS = ("--nproc", "--nnodes", "--nproc-per-node", "--rdzv-endpoint", "--node-rank")


def check_nodes(slurm, runner, args, path):
    """`slurm: {nodes: N}` with N > 1 starts one run across the job's N nodes (`hyperrestart run --nnodes N
    --nproc-per-node <gpus>`): a `run` runner only, its node options set by the job, not by `args`."""
    nodes = slurm.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise HyperrestartError(f"{path}: slurm.nodes must be a whole number >= 1, got {nodes!r}")
    gpus = slurm.get("gpus")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0):
        raise HyperrestartError(f"{path}: slurm.gpus must be a whole number >= 0 (GPUs per node), got {gpus!r}")
    if nodes == 1:
        return
    if runner != "run":
        raise HyperrestartError(f"{path}: slurm.nodes {nodes}: only `runner: run` trains one run across nodes "
                                f"(the {runner} runner runs on one node); use nodes: 1")
    given = [a for a in args if a.split("=", 1)[0] in NODE_OPTIONS]
    if given:
        raise HyperrestartError(f"{path}: slurm.nodes {nodes}: the job sets each node's --nnodes, --nproc-per-node "
                                f"(slurm.gpus, default 1), --rdzv-endpoint and --node-rank itself; drop "
                                f"{', '.join(given)} from `args`")


def _section(data, key, allowed, path):
    """An optional mapping section (report:, slurm:) with only the allowed keys."""
    section = data.get(key) or {}
    if not isinstance(section, dict):
        raise HyperrestartError(f"{path}: `{key}` must be a mapping with keys among {', '.join(allowed)}, "
                                f"got {section!r}")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise HyperrestartError(f"{path}: unknown key(s) in `{key}`: {', '.join(unknown)}; allowed: "
                                f"{', '.join(allowed)}")
    return section


def _dedupe(overrides):
    """Later overrides of the same key win; keep the position of the last one."""
    last = {key: i for i, (key, _) in enumerate(overrides)}
    return [(k, v) for i, (k, v) in enumerate(overrides) if last[k] == i]


def _run_name(axes, labels, template, path):
    if template:
        try:
            name = template.format(**{axis.field: labels[axis.name] for axis in axes})
        except (KeyError, IndexError, ValueError) as exc:
            raise HyperrestartError(f"{path}: `run_name` {template!r} uses an unknown field {exc}; fields: "
                                    f"{', '.join(axis.field for axis in axes)}") from None
        return NAME_SAFE.sub("-", name)
    parts = [labels[axis.name] if axis.labelled else f"{axis.name.rsplit('.', 1)[-1]}-{labels[axis.name]}"
             for axis in axes]
    return "_".join(parts)

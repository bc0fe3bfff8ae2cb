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
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json, file_sha256
from hyperrestart.core.overrides import parse_set
from hyperrestart.core.locks import FileLock
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.p3.synthetic import TINY_SETTINGS

TOP_LEVEL_KEYS = ("name", "description", "runner", "config", "args", "set", "grid", "run_name", "report", "slurm")
REPORT_KEYS = ("seed_axis", "compare", "split", "metric", "title", "published")
SLURM_KEYS = ("partition", "gpus", "cpus", "mem", "time", "array_parallelism", "account", "qos", "constraint",
              "nodes", "additional")
COMPLETE_MARKER = ".hyperrestart-complete.json"
RUN_INFO = "sweep-run.json"
RUN_LOG = "sweep.log"
NAME_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")
FOLDER_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")  # no separators, not hidden, not `.` or `..`
UPSTREAM_ARGUMENTS = Path(__file__).resolve().parents[1] / "upstream" / "upstream_arguments.json"
SWEEP_OWNED_KEYS = ("output_dir",)  # the sweep sets them per run: OUTPUT_ROOT/<run name>


# --- runners ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Runner:
    """How a sweep run becomes a command line.

    `run`: `hyperrestart run CONFIG [args] --set k=v ... --output-dir RUN_DIR` (flat JSON configs, --set per key).
    `p3`:  the base config merged with the overrides is written to RUN_DIR/sweep-config.json (the P3 runner takes its
           options from a JSON config), then `hyperrestart p3 --config RUN_DIR/sweep-config.json --output-dir RUN_DIR
           [args]`.
    """

    kind: str
    description: str

    def command(self, config, overrides, run_dir, extra_args=()):
        base = [sys.executable, "-m", "hyperrestart.cli", self.kind]
        if self.kind == "run":
            sets = [item for key, value in overrides for item in ("--set", f"{key}={format_value(value)}")]
            return base + [str(config), *extra_args, *sets, "--output-dir", str(run_dir)]
        return base + ["--config", str(Path(run_dir) / MERGED_CONFIG), "--output-dir", str(run_dir), *extra_args]

    def prepare(self, config, overrides, run_dir):
        """Files the command needs in run_dir (p3: the merged config)."""
        if self.kind == "p3":
            atomic_write_json(Path(run_dir) / MERGED_CONFIG, merge_config(config, overrides))


RUNNERS = {
    "run": Runner("run", "hyperrestart run: the patched upstream trainers (hyperdecoders/hyperformer)"),
    "p3": Runner("p3", "hyperrestart p3: the P3 instruction-tuning runner"),
}
MERGED_CONFIG = "sweep-config.json"


def merge_config(config, overrides):
    """The JSON config with the overrides applied (later ones win)."""
    try:
        merged = json.loads(Path(config).read_text())
    except ValueError as exc:
        raise HyperrestartError(f"{config}: not valid JSON ({exc}); fix the config file") from None
    merged.update(overrides)
    return merged


# --- what each runner accepts -------------------------------------------------------------------------------------
def p3_runner_options():
    """The P3 runner's option names, from its own argparse parser (the module imports torch)."""
    from hyperrestart.p3.metrics import runner_module
    return {action.dest for action in runner_module().build_parser()._actions} - {"help"}


def recorded_upstream_arguments():
    """{upstream: set of training-argument names}, as recorded in upstream_arguments.json."""
    data = json.loads(UPSTREAM_ARGUMENTS.read_text())
    return {name: set(entry["fields"]) for name, entry in data.items() if not name.startswith("_")}


def record_upstream_arguments(path=UPSTREAM_ARGUMENTS, dest=None):
    """Rewrite upstream_arguments.json from the materialised trees' argument dataclasses, imported in each upstream's
    env (half a minute): after a patch adds or renames a training argument."""
    from hyperrestart.upstream import arguments, registry
    from hyperrestart.upstream.envs import python_for
    data = {"_about": "Field names of each patched upstream's argument dataclasses (registry.ARGUMENT_CLASSES): the "
                      "keys a `runner: run` sweep may set. Regenerate with "
                      "`python -c 'from hyperrestart.sweep.spec import record_upstream_arguments as r; r()'`."}
    for name in sorted(registry.UPSTREAMS):
        upstream = registry.upstream_named(name)
        spec = arguments.argument_spec(upstream, registry.tree_dir(upstream, dest), python_for(name))
        data[name] = {"fields": sorted(spec.kinds)}
    atomic_write_json(path, data)
    return {name: set(entry["fields"]) for name, entry in data.items() if not name.startswith("_")}


def accepted_keys(runner_kind, config, args, cache):
    """(names, what they are) that a run of `runner_kind` on base `config` accepts as override keys; names is None
    when they cannot be known here, and `what` then says why. cache: a dict shared over one spec's runs."""
    if runner_kind == "p3":
        if "p3" not in cache:
            try:
                cache["p3"] = (p3_runner_options(), "options of the P3 runner (`python p3_trainer.py --help`)")
            except ImportError as exc:
                cache["p3"] = (None, f"the P3 runner's options cannot be read here (importing it failed: {exc})")
        return cache["p3"]
    from hyperrestart.upstream.registry import upstream_for_config
    explicit = next((a.split("=", 1)[1] if "=" in a else args[i + 1] for i, a in enumerate(args)
                     if a.split("=", 1)[0] == "--upstream" and ("=" in a or i + 1 < len(args))), None)
    upstream = upstream_for_config(config, explicit).name
    if "run" not in cache:
        cache["run"] = recorded_upstream_arguments()
    names = cache["run"].get(upstream)
    if names is None:
        return None, f"{UPSTREAM_ARGUMENTS.name} records no arguments for {upstream}"
    return names, (f"training arguments of the patched {upstream} (its argument dataclasses, as recorded in "
                   f"hyperrestart/{UPSTREAM_ARGUMENTS.name})")


def expand_env(overrides, where):
    """$VAR / ${VAR} in string values -> the environment's value; an unset variable is an error naming it."""
    expanded = []
    for key, value in overrides:
        if isinstance(value, str) and "$" in value:
            missing = [m.group(1) or m.group(2) for m in re.finditer(r"\$(?:\{(\w+)\}|(\w+))", value)
                       if (m.group(1) or m.group(2)) not in os.environ]
            if missing:
                raise HyperrestartError(f"{where}: override {key}={value} needs the environment variable(s) "
                                        f"{', '.join(missing)}; export them or pass --set {key}=VALUE")
            value = os.path.expandvars(value)
        expanded.append((key, value))
    return expanded


def format_value(value):
    """An override value as `--set` text: strings as they are, everything else as JSON (0, 1e-06, true, [..])."""
    return value if isinstance(value, str) else json.dumps(value)


# --- tiny runs (CI smoke tests of real specs) ---------------------------------------------------------------------
TINY_P3_DATA_ENV, TINY_T5_ENV = "HYPERRESTART_TINY_P3_DATA", "HYPERRESTART_TINY_T5"
# P3 runner options of a tiny run: the tiny learnable P3 data and T5, and hyperrestart.p3.synthetic.TINY_SETTINGS
# (255 steps, a restart cycle end, evaluated every 51 steps).
TINY_P3 = [("data_dir", f"${TINY_P3_DATA_ENV}"), ("model_name_or_path", f"${TINY_T5_ENV}"),
           *TINY_SETTINGS.items()]


def tiny_p3_environment():
    """Build (once, cached) the tiny P3 data and the tiny T5; export their paths for TINY_P3's $VARS (and one thread
    per run)."""
    from hyperrestart.p3.synthetic import TINY_THREADS, tiny_p3_data, tiny_t5_dir

    os.environ.setdefault("OMP_NUM_THREADS", TINY_THREADS)
    os.environ.setdefault(TINY_P3_DATA_ENV, str(tiny_p3_data()))
    os.environ.setdefault(TINY_T5_ENV, str(tiny_t5_dir()))


# --- YAML ---------------------------------------------------------------------------------------------------------
def _yaml_loader():
    """SafeLoader with YAML 1.2 scalars: 1e-6 is a float, only true/false are booleans (`no`, `on` stay strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return Loader


def load_yaml(path):
    import yaml
    path = Path(path)
    if not path.is_file():
        raise HyperrestartError(f"sweep spec {path} does not exist; pass a YAML file such as sweeps/table2_p3.yaml")
    try:
        data = yaml.load(path.read_text(), Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise HyperrestartError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise HyperrestartError(f"{path}: a sweep spec must be a YAML mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
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
    if not text.strip() or text.strip() in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise HyperrestartError(
            f"{spec_path}: grid label {text!r} of axis `{axis}` cannot name a run folder (labels name the folders "
            f"OUTPUT_ROOT/<run name>; an empty, `.`/`..`, hidden or path-like label would write elsewhere); use a "
            f"plain name of letters, digits and . _ + - that does not start with a dot")


def _check_folder_name(name, what, spec_path):
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
        for key, _, source in base + run.tagged:
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


def parse_spec(path, cli_sets=(), tiny=False):
    """Validate a spec file and expand it into runs; raises HyperrestartError naming the key/file on any problem.
    tiny: p3 runs get TINY_P3 (before cli_sets), `run` runs get `--tiny`."""
    path = Path(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise HyperrestartError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; allowed: "
                                f"{', '.join(TOP_LEVEL_KEYS)}")
    runner = data.get("runner")
    if runner not in RUNNERS:
        raise HyperrestartError(f"{path}: `runner` is {runner!r}; use one of {', '.join(RUNNERS)}")
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
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise HyperrestartError(f"{path}: `grid` must be a non-empty mapping of axes (e.g. `seed: [1, 2, 3]`)")
    axes = [axis for name, values in grid.items() for axis in _parse_axis(str(name), values, path)]
    report = _section(data, "report", REPORT_KEYS, path)
    slurm = _section(data, "slurm", SLURM_KEYS, path)
    if report.get("published") is not None:
        from hyperrestart.report.build import load_published
        try:
            load_published(report["published"])
        except HyperrestartError as exc:
            raise HyperrestartError(f"{path}: report.published: {exc}") from None
    seed_axis = report.get("seed_axis", "seed")
    axis_names = [axis.name for axis in axes]
    if "seed_axis" in report and seed_axis not in axis_names:
        raise HyperrestartError(f"{path}: report.seed_axis `{seed_axis}` is not a grid axis ({', '.join(axis_names)})")
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


# --- running one run ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Job:
    """Everything needed to execute one run (picklable, for submitit)."""

    sweep_name: str
    runner: str
    run: Run
    run_dir: str
    extra_args: list
    report: dict

    @property
    def fingerprint(self):
        return self.run.fingerprint(self.runner, self.extra_args)

    def overrides(self):
        """The run's overrides with $VARS expanded (raises naming a missing variable)."""
        return expand_env(self.run.overrides, f"run {self.run.index} ({self.run.name})")

    def command(self, continuation=()):
        return RUNNERS[self.runner].command(self.run.config, self.overrides(), self.run_dir,
                                            (*self.extra_args, *continuation))


def continuation_args(job):
    """How a relaunch continues an unfinished `run` job: `--resume` from its last checkpoint, `--overwrite` when it
    left files but no checkpoint (`hyperrestart run` refuses a folder holding a run unless told which); nothing for
    a fresh folder or a P3 run (its runner resumes from its own checkpoints)."""
    if job.runner != "run":
        return ()
    from hyperrestart.upstream.run_folder import run_entries
    from hyperrestart.upstream.run_folder import latest_checkpoint
    run_dir = Path(job.run_dir)
    if latest_checkpoint(run_dir):
        return ("--resume",)
    return ("--overwrite",) if run_entries(run_dir) else ()


def make_jobs(sweep, output_root, extra_args=()):
    """One job per run, in OUTPUT_ROOT/<run name>; a run folder that resolves outside the root is an error."""
    root = Path(output_root).resolve()
    jobs = []
    for run in sweep.runs:
        run_dir = (root / run.name).resolve()
        if run_dir.parent != root:
            raise HyperrestartError(f"run {run.index} ({run.name}): its folder {root / run.name} resolves to "
                                    f"{run_dir}, outside the output root {root}; rename the run or remove the link")
        jobs.append(Job(sweep.name, sweep.runner, run, str(run_dir), list(sweep.args) + list(extra_args),
                        sweep.report))
    return jobs


def completion(run_dir):
    """The completion marker's content, or None when the run has not finished."""
    marker = Path(run_dir) / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_finished(job):
    """True when the run finished with this job's fingerprint; an error when it finished with another."""
    done = completion(job.run_dir)
    if done is None:
        return False
    if done.get("fingerprint") != job.fingerprint:
        raise HyperrestartError(
            f"{job.run_dir} holds a finished run with other settings (fingerprint {done.get('fingerprint')} != "
            f"{job.fingerprint}: the config or overrides changed); use another --output-root or delete that directory")
    return True




class RunLock(FileLock):
    """An exclusive flock on RUN_DIR/.sweep.lock: one process runs a sweep run at a time; a second is refused."""

    def __init__(self, run_dir):
        super().__init__(Path(run_dir) / ".sweep.lock")

    def __enter__(self):
        self._open()
        if not self.try_exclusive():
            self.handle.close()
            raise HyperrestartError(f"{self.path.parent} is being run by another process right now; wait for it")
        return self


def execute(job, quiet=False):
    """Run one job unless finished; returns 'skipped', 'done'; raises HyperrestartError when the runner fails."""
    if is_finished(job):
        if not quiet:
            print(f"[{job.run.index}] {job.run.name}: finished already, skipped", flush=True)
        return "skipped"
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        command = job.command(continuation_args(job))
        RUNNERS[job.runner].prepare(job.run.config, job.overrides(), run_dir)
        info = {"sweep": job.sweep_name, "runner": job.runner, "index": job.run.index, "name": job.run.name,
                "arm": job.run.arm, "seed": job.run.seed, "labels": job.run.labels, "config": job.run.config,
                "overrides": [[k, v] for k, v in job.run.overrides], "report": job.report,
                "fingerprint": job.fingerprint, "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(run_dir / RUN_INFO, info)
        if not quiet:
            print(f"[{job.run.index}] {job.run.name}: {shlex.join(command[1:])}", flush=True)
        started = time.monotonic()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        with open(run_dir / RUN_LOG, "ab") as log:
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        elapsed = time.monotonic() - started
        if code != 0:
            tail = (run_dir / RUN_LOG).read_text(errors="replace").splitlines()[-15:]
            raise HyperrestartError(f"run {job.run.index} ({job.run.name}) failed with exit code {code} after "
                                    f"{elapsed:.0f}s; log: {run_dir / RUN_LOG}\n  " + "\n  ".join(tail))
        atomic_write_json(run_dir / COMPLETE_MARKER, dict(info, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                           seconds=round(elapsed, 1)))
    if not quiet:
        print(f"[{job.run.index}] {job.run.name}: done in {elapsed:.1f}s", flush=True)
    return "done"


def execute_submitted(job):
    """The function submitit runs on a node (must be importable): execute one job, return its status."""
    return execute(job)


# --- launching many -----------------------------------------------------------------------------------------------
def check_jobs(jobs):
    """Fail before anything runs: unset $VARS, finished dirs with other settings."""
    for job in jobs:
        job.command()
        is_finished(job)


def launch_local(jobs, keep_going=False):
    """Run the jobs in turn, skipping finished ones; returns {status: count}; failures raise unless keep_going."""
    check_jobs(jobs)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    errors = []
    for job in jobs:
        try:
            counts[execute(job)] += 1
        except HyperrestartError as exc:
            if not keep_going:
                raise
            counts["failed"] += 1
            errors.append(str(exc))
            print(str(exc), file=sys.stderr)
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
    pending = [job for job in jobs if not is_finished(job)]
    skipped = len(jobs) - len(pending)
    if not pending:
        return [], skipped
    folder = Path(output_root).resolve() / ".submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if cluster is None and executor.cluster != "slurm":
        raise HyperrestartError("--launch slurm: no SLURM here (sbatch not found); run on the cluster's login "
                                "node, or use --launch local / --task-id K")
    executor.update_parameters(**executor_parameters(slurm))
    submitted = executor.map_array(execute_submitted, pending)
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

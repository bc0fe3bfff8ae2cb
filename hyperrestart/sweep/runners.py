"""The two sweep runners (`run`, `p3`): how a run becomes a command line, which override keys each accepts, and the
tiny settings of a CI smoke run."""
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.p3.synthetic import TINY_SETTINGS

UPSTREAM_ARGUMENTS = Path(__file__).resolve().parents[1] / "upstream" / "upstream_arguments.json"
SWEEP_OWNED_KEYS = ("output_dir",)  # the sweep sets them per run: OUTPUT_ROOT/<run name>
MERGED_CONFIG = "sweep-config.json"


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


def merge_config(config, overrides):
    """The JSON config with the overrides applied (later ones win)."""
    try:
        merged = json.loads(Path(config).read_text())
    except ValueError as exc:
        raise HyperrestartError(f"{config}: not valid JSON ({exc}); fix the config file") from None
    merged.update(overrides)
    return merged


def p3_runner_options():
    """The P3 runner's option names: the fields of its argument dataclasses (hyperrestart.p3.options)."""
    from hyperrestart.p3.options import runner_option_kinds
    return set(runner_option_kinds())


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
                      "`python -c 'from hyperrestart.sweep.runners import record_upstream_arguments as r; r()'`."}
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
                cache["p3"] = (p3_runner_options(), "options of the P3 runner (its argument dataclasses; `python p3_trainer.py --help`)")
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

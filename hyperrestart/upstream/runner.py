"""Run an upstream's training script on a config: which upstream, the resolved config, the command and environment,
and reading the run back (lr trace, restarts, metrics, checkpoints)."""
import csv
import difflib
import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.core.overrides import apply_overrides, parse_set  # noqa: F401  (re-exported for callers)
from hyperrestart.core.paths import CONFIGS_DIR, DEFAULT_DEST, cache_dir


@dataclass(frozen=True)
class Upstream:
    name: str
    workdir: str  # inside the tree: where the script runs
    script: str  # inside workdir
    pythonpath: tuple  # inside the tree, prepended to PYTHONPATH
    args_import: str  # python importing ARGUMENT_CLASSES (run in workdir)
    trainer_module: str  # the module whose arg_to_scheduler picks the lr schedule


ARGUMENT_CLASSES = ("ModelArguments", "DataTrainingArguments", "Seq2SeqTrainingArguments", "AdapterTrainingArguments")

UPSTREAMS = {
    "hyperdecoders": Upstream("hyperdecoders", "hyperdecoder", "finetune_trainer.py", (),
                              "from training_args import " + ", ".join(ARGUMENT_CLASSES),
                              "third_party.trainers.t5_trainer"),
    "hyperformer": Upstream("hyperformer", "hyperformer", "finetune_t5_trainer.py", (".",),
                            "from hyperformer.training_args import " + ", ".join(ARGUMENT_CLASSES),
                            "hyperformer.third_party.trainers.t5_trainer"),
}


def upstream_named(name) -> Upstream:
    if name not in UPSTREAMS:
        raise HyperrestartError(f"unknown upstream {name!r}; choose one of: {', '.join(UPSTREAMS)}")
    return UPSTREAMS[name]


def upstream_for_config(config_path, explicit=None) -> Upstream:
    """The upstream named by --upstream, else by the config's folder (configs/hyperdecoders/..., .../hyperformer/...)."""
    if explicit:
        return upstream_named(explicit)
    for parent in Path(config_path).resolve().parents:
        if parent.name in UPSTREAMS:
            return UPSTREAMS[parent.name]
        if parent == CONFIGS_DIR.resolve():
            break
    raise HyperrestartError(f"cannot tell which upstream runs {config_path}: put it under configs/hyperdecoders/ or "
                            f"configs/hyperformer/, or pass --upstream {'|'.join(UPSTREAMS)}")


def load_config(path) -> dict:
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise HyperrestartError(f"config {path} does not exist") from None
    except ValueError as exc:
        raise HyperrestartError(f"config {path} is not valid JSON ({exc}); fix the file") from None
    if not isinstance(config, dict):
        raise HyperrestartError(f"config {path} must hold a JSON object of training arguments, not "
                                f"{type(config).__name__}")
    return config


def tree_dir(upstream: Upstream, dest=None) -> Path:
    """The materialised tree, checked to hold the training script."""
    tree = Path(dest or DEFAULT_DEST) / upstream.name
    if not (tree / upstream.workdir / upstream.script).is_file():
        raise HyperrestartError(f"no materialised {upstream.name} tree at {tree} "
                                f"({upstream.workdir}/{upstream.script} missing); run `python bootstrap.py` first"
                                + (f" (with --dest {dest})" if dest else ""))
    return tree


def process_env(upstream: Upstream, tree: Path, base=None) -> dict:
    env = dict(os.environ if base is None else base)
    paths = [str((tree / p).resolve()) for p in upstream.pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# hyperformer reads no LOCAL_RANK and transformers 3.5.1 hard-codes NCCL: N processes would be N independent runs.
SINGLE_PROCESS = {"hyperformer"}


def command(upstream: Upstream, python, config_file, nproc=None):
    if nproc and nproc > 1 and upstream.name in SINGLE_PROCESS:
        raise HyperrestartError(f"--nproc {nproc}: {upstream.name} cannot train data-parallel (it reads no LOCAL_RANK, "
                                f"so the processes would be independent runs); run it on one process")
    if nproc and nproc > 1:
        return [str(python), "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                upstream.script, str(config_file)]
    return [str(python), upstream.script, str(config_file)]


@dataclass(frozen=True)
class ArgumentSpec:
    """What the upstream's script accepts: its argument fields (name -> JSON kinds) and lr scheduler names."""
    kinds: dict
    schedulers: tuple


# Run in the upstream's env (cwd = workdir): the argument dataclasses' fields with the JSON kinds each type takes, and
# the keys of the trainer's arg_to_scheduler (the dict that picks the schedule).
_SPEC_SNIPPET = """
import dataclasses, enum, json, types, typing
{args_import}
from {trainer_module} import arg_to_scheduler
def kinds(tp):
    if tp is type(None): return {{"null"}}
    if tp is bool: return {{"bool"}}
    if tp is int: return {{"int"}}
    if tp is float: return {{"float"}}
    if tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum)): return {{"str"}}
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is getattr(types, "UnionType", None):
        return set().union(*(kinds(a) for a in typing.get_args(tp)))
    if tp in (list, tuple) or origin in (list, tuple): return {{"list"}}
    if tp is dict or origin is dict: return {{"dict"}}
    return {{"any"}}
fields = {{f.name: sorted(kinds(f.type)) for c in ({classes}) for f in dataclasses.fields(c)}}
print(json.dumps({{"kinds": fields, "schedulers": sorted(arg_to_scheduler)}}))
"""


def _spec_cache_file(upstream: Upstream, tree: Path, python):
    """Where argument_spec caches its answer for this tree and env, or None when the env is not one `hyperrestart env`
    made (its marker records the installed requirements; an arbitrary --python is asked every time)."""
    from hyperrestart.upstream.envs import MARKER
    marker = Path(python).parent.parent / MARKER
    if not marker.is_file():
        return None
    digest = hashlib.sha256(f"{Path(python).absolute()}\0".encode() + marker.read_bytes())
    for path in sorted(p for p in tree.rglob("*.py") if ".git" not in p.relative_to(tree).parts):
        digest.update(f"\0{path.relative_to(tree)}\0".encode() + path.read_bytes())
    return cache_dir() / "argspec" / f"{upstream.name}-{digest.hexdigest()[:16]}.json"


def argument_spec(upstream: Upstream, tree: Path, python) -> ArgumentSpec:
    """The upstream's arguments and scheduler names, imported in its env (a subprocess, offline); cached per tree
    content and env."""
    cached = _spec_cache_file(upstream, tree, python)
    if cached is not None and cached.is_file():
        data = json.loads(cached.read_text())
    else:
        data = _import_spec(upstream, tree, python)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cached, data)
    return ArgumentSpec({name: set(kinds) for name, kinds in data["kinds"].items()}, tuple(data["schedulers"]))


def _import_spec(upstream: Upstream, tree: Path, python) -> dict:
    snippet = _SPEC_SNIPPET.format(args_import=upstream.args_import, trainer_module=upstream.trainer_module,
                                   classes=", ".join(ARGUMENT_CLASSES))
    env = dict(process_env(upstream, tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    try:
        result = subprocess.run([str(python), "-c", snippet], cwd=tree / upstream.workdir, capture_output=True,
                                text=True, env=env, timeout=300)
    except OSError as exc:
        raise HyperrestartError(f"cannot run {python} ({exc.strerror}); create the env with "
                                f"`hyperrestart env {upstream.name}` or pass --python") from None
    if result.returncode != 0:
        raise HyperrestartError(f"cannot import the {upstream.name} argument classes with {python}: "
                                + (result.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_config(config, spec: ArgumentSpec, upstream: Upstream, origin):
    """Refuse keys the upstream's script does not take (with the closest names) and unknown lr schedulers.
    origin: key -> where it came from ("the config", "--set", "--tiny"), for the message."""
    problems = []
    for key in sorted(k for k in config if k not in spec.kinds):
        close = difflib.get_close_matches(key, list(spec.kinds), n=3, cutoff=0.75)
        problems.append(f"unknown training argument {key!r} (from {origin.get(key, 'the config')})"
                        + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""))
    scheduler = config.get("lr_scheduler")
    if scheduler is not None and scheduler not in spec.schedulers:
        close = difflib.get_close_matches(str(scheduler), spec.schedulers, n=1, cutoff=0.6)
        problems.append(f"lr_scheduler {scheduler!r} (from {origin.get('lr_scheduler', 'the config')}) is not one "
                        f"of the schedulers {upstream.name} knows: {', '.join(spec.schedulers)}"
                        + (f"; did you mean {close[0]!r}?" if close else ""))
    if problems:
        raise HyperrestartError("\n  ".join([f"the {upstream.name} config has {len(problems)} problem(s); fix them "
                                             f"in the config file or the --set values:"] + problems))


# --- reading a run back ---------------------------------------------------------------------------------------------
RUN_CONFIG = "hyperrestart_config.json"  # the resolved config `run` saves (the trainer writes the model's config.json)
RESUME_CONFIG = "hyperrestart_resume_config.json"  # RUN_CONFIG pointed at the checkpoint a --resume continues from


def latest_checkpoint(output_dir: Path):
    """The checkpoint-N folder with the highest N that holds what a resume needs, or None."""
    complete = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
                and all((p / name).is_file() for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt"))]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def latest_trainer_state(output_dir: Path):
    """The trainer_state.json with the highest global_step (output_dir itself or a checkpoint-*), or None."""
    best = None
    for path in [output_dir / "trainer_state.json", *output_dir.glob("checkpoint-*/trainer_state.json")]:
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except ValueError:
                continue
            if best is None or state.get("global_step", 0) >= best[1].get("global_step", 0):
                best = (path, state)
    return best


def applied_lrs(logged, initial, last_step=None) -> list:
    """[(step, lr applied by optimizer step `step`)] from the Trainer's logged [(k, lr after step k)]: step 1 applies
    the initial lr, step k+1 the lr logged at k (LR step numbering of the project); steps past last_step dropped."""
    trace = {1: float(initial)}
    for step, lr in logged:
        if last_step is None or step + 1 <= last_step:
            trace.setdefault(step + 1, float(lr))
    return sorted(trace.items())


def lr_trace_from_state(state, config) -> list:
    """The applied-lr trace (applied_lrs) from a trainer state's log_history, up to its global_step."""
    logged = [(int(e["step"]), float(e["learning_rate"])) for e in state.get("log_history", [])
              if "learning_rate" in e and "step" in e]
    return applied_lrs(logged, initial_lr(config), state.get("global_step") or None)


_LOG_DICT = re.compile(r"\{[^{}]*'learning_rate': [^{}]*\}")


def lr_trace_from_log(text, config) -> list:
    """Fallback for a run without trainer_state.json: the Trainer's printed log dicts ({'loss': ..,
    'learning_rate': ..}), at the config's logging steps (logging_first_step, then every logging_steps)."""
    import ast
    values = []
    for match in _LOG_DICT.finditer(text):
        try:
            values.append(float(ast.literal_eval(match.group(0))["learning_rate"]))
        except (ValueError, SyntaxError, KeyError):
            continue
    every = int(config.get("logging_steps") or 500)
    steps = ([1] if config.get("logging_first_step") and every != 1 else []) + \
        list(range(every, every * (len(values) + 1), every))
    return applied_lrs(list(zip(steps, values)), initial_lr(config))


LR_TRACE_HEADER = ("step", "lr_applied")  # lr_applied: the lr that optimizer step `step` used


def write_lr_trace(trace, path: Path):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LR_TRACE_HEADER)
        writer.writerows((step, repr(lr)) for step, lr in trace)


def restart_steps(trace, rel=1e-6):
    """Steps that start a new cycle in an applied-lr trace [(step, lr)]: the lr rises again after having fallen, or
    (T_0 = 1) stays at its start value for one more step right before its first fall. Warmup ramps and constant lrs
    have none. For SGDR T_0=1, T_mult=2: 2, 4, 8, 16, ..."""
    restarts, fell = [], False
    for i in range(1, len(trace)):
        step, cur = trace[i]
        prev = trace[i - 1][1]
        nxt = trace[i + 1][1] if i + 1 < len(trace) else None
        rose = cur > prev * (1 + rel) + 1e-30
        flat = abs(cur - prev) <= rel * max(abs(prev), 1e-30)
        if (rose and fell) or (flat and not fell and cur > 0 and nxt is not None and nxt < cur * (1 - rel)):
            restarts.append(step)
        if cur < prev * (1 - rel):
            fell = True
    return restarts


def initial_lr(config) -> float:
    """The lr before the first optimizer step for this config's scheduler (0 during a warmup)."""
    from hyperrestart.upstream.scheduler import SCHEDULER_NAMES
    lr = float(config.get("learning_rate", 5e-5))
    if config.get("lr_scheduler") in SCHEDULER_NAMES:
        return 0.0 if (config.get("restart_warmup_steps") or 0) > 0 else lr
    if config.get("lr_scheduler", "linear") != "constant" and (config.get("warmup_steps") or 0) > 0:
        return 0.0
    return lr

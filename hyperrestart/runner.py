"""Run an upstream's training script on a config: which upstream, the resolved config, the command and environment,
and reading the run back (lr trace, restarts, metrics, checkpoints)."""
import csv
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import HyperrestartError
from .paths import CONFIGS_DIR, DEFAULT_DEST


@dataclass(frozen=True)
class Upstream:
    name: str
    workdir: str  # inside the tree: where the script runs
    script: str  # inside workdir
    pythonpath: tuple  # inside the tree, prepended to PYTHONPATH
    args_import: str  # python importing ARGUMENT_CLASSES (run in workdir)


ARGUMENT_CLASSES = ("ModelArguments", "DataTrainingArguments", "Seq2SeqTrainingArguments", "AdapterTrainingArguments")

UPSTREAMS = {
    "hyperdecoders": Upstream("hyperdecoders", "hyperdecoder", "finetune_trainer.py", (),
                              "from training_args import " + ", ".join(ARGUMENT_CLASSES)),
    "hyperformer": Upstream("hyperformer", "hyperformer", "finetune_t5_trainer.py", (".",),
                            "from hyperformer.training_args import " + ", ".join(ARGUMENT_CLASSES)),
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


def parse_set(item):
    """"key=value" -> (key, value); value parsed as JSON when it parses (3e-4, true, ["rte"]), else the string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise HyperrestartError(f"--set {item!r}: expected key=value with a training-argument name as key, "
                                f"e.g. --set max_steps=65535")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def apply_overrides(config, items):
    resolved = dict(config)
    for item in items or ():
        key, value = parse_set(item)
        resolved[key] = value
    return resolved


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


def argument_fields(upstream: Upstream, tree: Path, python) -> set:
    """Names of every field of the upstream's argument dataclasses, imported in its env (subprocess)."""
    snippet = (upstream.args_import + "\nimport dataclasses, json\nprint(json.dumps(sorted({f.name for c in ("
               + ", ".join(ARGUMENT_CLASSES) + ") for f in dataclasses.fields(c)})))")
    result = subprocess.run([str(python), "-c", snippet], cwd=tree / upstream.workdir, capture_output=True, text=True,
                            env=process_env(upstream, tree), timeout=300)
    if result.returncode != 0:
        raise HyperrestartError(f"cannot import the {upstream.name} argument classes with {python}: "
                                + (result.stderr.strip().splitlines() or ["?"])[-1])
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


# --- reading a run back ---------------------------------------------------------------------------------------------
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


def lr_trace_from_state(state) -> list:
    """[(step, learning_rate)] from a trainer state's log_history (first entry per step)."""
    seen = {}
    for entry in state.get("log_history", []):
        if "learning_rate" in entry and "step" in entry and entry["step"] not in seen:
            seen[entry["step"]] = float(entry["learning_rate"])
    return sorted(seen.items())


_LOG_DICT = re.compile(r"\{[^{}]*'learning_rate': [^{}]*\}")


def lr_trace_from_log(text) -> list:
    """Fallback: the Trainer's printed log dicts ({'loss': ..., 'learning_rate': ...}), numbered 1, 2, ... ."""
    import ast
    values = []
    for match in _LOG_DICT.finditer(text):
        try:
            values.append(float(ast.literal_eval(match.group(0))["learning_rate"]))
        except (ValueError, SyntaxError, KeyError):
            continue
    return list(enumerate(values, start=1))


def write_lr_trace(trace, path: Path):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "learning_rate"])
        writer.writerows((step, repr(lr)) for step, lr in trace)


def restart_steps(trace, initial_lr, rel=1e-6):
    """Steps after which the lr went back up to start a new cycle: a rise after a fall, or (T_0 = 1 style) a step
    that leaves the lr flat at its start value right before a fall. Warmup ramps and constant lrs are not restarts."""
    points = [(0, float(initial_lr))] + [(s, lr) for s, lr in trace]
    restarts, fell = [], False
    for i in range(1, len(points)):
        step, cur = points[i]
        prev = points[i - 1][1]
        nxt = points[i + 1][1] if i + 1 < len(points) else None
        rose = cur > prev * (1 + rel) + 1e-30
        flat = abs(cur - prev) <= rel * max(abs(prev), 1e-30)
        if (rose and fell) or (flat and not fell and cur > 0 and nxt is not None and nxt < cur * (1 - rel)):
            restarts.append(step)
        if cur < prev * (1 - rel):
            fell = True
    return restarts


def initial_lr(config) -> float:
    """The lr before the first optimizer step for this config's scheduler (0 during a warmup)."""
    from .scheduler import SCHEDULER_NAMES
    lr = float(config.get("learning_rate", 5e-5))
    if config.get("lr_scheduler") in SCHEDULER_NAMES:
        return 0.0 if (config.get("restart_warmup_steps") or 0) > 0 else lr
    if config.get("lr_scheduler", "linear") != "constant" and (config.get("warmup_steps") or 0) > 0:
        return 0.0
    return lr

"""What an upstream's training script accepts (its argument dataclasses and lr schedulers, read in its own env), and
the pre-flight check of a config against it."""
import difflib
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.core.paths import cache_dir
from hyperrestart.upstream.registry import ARGUMENT_CLASSES, INERT_SETTINGS, Upstream, process_env


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
        data = json.loads(cached.read_text(encoding="utf-8"))
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
                                text=True, encoding="utf-8", errors="replace", env=env, timeout=300)
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
    for key, why in INERT_SETTINGS.get(upstream.name, {}).items():
        if config.get(key) is not None:
            problems.append(f"{key}={config[key]!r} (from {origin.get(key, 'the config')}) does nothing in "
                            f"{upstream.name}: {why}; remove it")
    scheduler = config.get("lr_scheduler")
    if scheduler is not None and scheduler not in spec.schedulers:
        close = difflib.get_close_matches(str(scheduler), spec.schedulers, n=1, cutoff=0.6)
        problems.append(f"lr_scheduler {scheduler!r} (from {origin.get('lr_scheduler', 'the config')}) is not one "
                        f"of the schedulers {upstream.name} knows: {', '.join(spec.schedulers)}"
                        + (f"; did you mean {close[0]!r}?" if close else ""))
    problems.extend(schedule_problems(config))
    if problems:
        raise HyperrestartError("\n  ".join([f"the {upstream.name} config has {len(problems)} problem(s); fix them "
                                             f"in the config file or the --set values:"] + problems))


def schedule_problems(config):
    """The restart family's argument checks (restart_scheduler.schedules_from_args) run before training: [problem]."""
    from hyperrestart.upstream.scheduler import FAMILY_NAMES, schedules_from_args
    name = config.get("lr_scheduler")
    scope = config.get("restart_scope") or "all"
    if name not in FAMILY_NAMES:
        return [] if scope == "all" else [f"restart_scope {scope!r} needs a restart lr_scheduler "
                                          f"({', '.join(FAMILY_NAMES)}), got {name!r}"]
    try:
        schedules_from_args(config, config.get("max_steps") if (config.get("max_steps") or 0) > 0 else None)
    except ValueError as exc:
        return [str(exc)]
    return []

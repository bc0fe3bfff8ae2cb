"""Repeating a run bit for bit: what a run folder records beside its config (seed, the environment that changes
numerics, versions, the code), and `run --repeat RUN_DIR`, which reruns it and compares the results. The record's
environment part, the comparison of results and the repeat's folder are shared with `p3 --repeat`
(hyperrestart.p3.repeat)."""
import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json

RUN_RECORD = "hyperrestart_run.json"
# Variables that change numerics or what a run loads; recorded set or unset, and restored as recorded on a repeat.
NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS",
               "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "TOKENIZERS_PARALLELISM",
               "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HYPERRESTART_DATA_DIR",
               "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "numpy", "sentencepiece", "protobuf")
DEFAULT_SEED = 42  # transformers' TrainingArguments.seed, in both upstreams
_VERSIONS = ("import json, platform, importlib.metadata as m\n"
             "def v(p):\n    try:\n        return m.version(p)\n    except m.PackageNotFoundError:\n        return None\n"
             f"print(json.dumps(dict(python=platform.python_version(), **{{p: v(p) for p in {PACKAGES!r}}})))")


def versions(python) -> dict:
    """Python's and the numerics-relevant packages' versions as `python` sees them (no import of torch: fast); read
    in this process when `python` is this interpreter, else by a probe that dies with this process."""
    import contextlib
    import io
    from hyperrestart.upstream.processes import parent_death_signal
    if Path(str(python)).resolve() == Path(sys.executable).resolve():
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(_VERSIONS, {})  # noqa: S102 - the same snippet the probe runs
        return json.loads(printed.getvalue())
    try:
        result = subprocess.run([str(python), "-c", _VERSIONS], capture_output=True, text=True, encoding="utf-8",
                                timeout=120, preexec_fn=parent_death_signal)
    except subprocess.TimeoutExpired:
        return {"error": f"{python} did not print its versions within 120 s"}
    except OSError as exc:
        return {"error": f"{python}: {exc.strerror}"}
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    try:
        return json.loads(result.stdout)
    except ValueError:
        return {"error": f"{python} printed no versions"}


def machine() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": os.cpu_count(), "usable_cores": cores, "platform": platform.platform(),
            "processor": platform.machine()}


def upstream_tree(tree: Path) -> str:
    """The tree hash of the upstream as it is now, local edits included (equal to vendor.lock's result_tree when
    untouched)."""
    from hyperrestart.vendor.gitops import worktree_tree
    try:
        return worktree_tree(tree)
    except Exception as exc:  # noqa: BLE001 - not a git tree (a test's fake tree): recorded, not fatal
        return f"unknown ({str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__})"


def environment(env, python, code) -> dict:
    """The part of a record beside how the run was asked for: the numerics variables (set or unset), the python and
    its package versions, the machine, the code's identity (`code`: a tree hash), the command line."""
    return {"env": {name: env.get(name) for name in NUMERIC_ENV}, "python": str(python), "versions": versions(python),
            "machine": machine(), "upstream_tree": code, "argv": sys.argv}


def write_record(output_dir: Path, data: dict) -> dict:
    atomic_write_json(Path(output_dir) / RUN_RECORD, data, indent=2)
    return data


def record(output_dir: Path, request, resolved, env, python, tree, tiny_env):
    """Write RUN_RECORD: how the run was asked for, and everything beside the config that decides its numbers."""
    return write_record(output_dir, {
        "about": "hyperrestart run's record of this run; `hyperrestart run --repeat RUN_DIR` repeats it",
        "kind": "run", "upstream": resolved.upstream.name, "config_file": str(Path(request.config).resolve()),
        "set": list(request.set), "tiny": bool(request.tiny), "tiny_env": bool(tiny_env), "nproc": request.nproc,
        "seed": resolved.config.get("seed", DEFAULT_SEED),
        "data_seed": resolved.config.get("data_seed"),
        **environment(env, python, upstream_tree(tree)),
    })


def load_record(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HyperrestartError(f"--repeat: {run_dir} holds no {RUN_RECORD} (a run folder written by `hyperrestart "
                                f"run` or `hyperrestart p3` since they record seed, threads and versions); nothing to "
                                "repeat") from None
    except ValueError as exc:
        raise HyperrestartError(f"--repeat: {path} is damaged ({exc}); it cannot be repeated") from None


def apply_env(env: dict, recorded: dict):
    """Set the recorded numerics variables as they were (unset ones removed)."""
    for name, value in recorded.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value


def differences(recorded: dict, now: dict) -> list:
    """'what: was -> now' for each version, machine or tree entry that changed since the recorded run."""
    found = []
    for section in ("versions", "machine"):
        for key, value in recorded.get(section, {}).items():
            if now.get(section, {}).get(key) != value:
                found.append(f"{key}: {value} -> {now.get(section, {}).get(key)}")
    if recorded.get("upstream_tree") != now.get("upstream_tree"):
        found.append(f"upstream tree: {recorded.get('upstream_tree')} -> {now.get('upstream_tree')}")
    return found


def repeat_output_dir(run_dir: Path) -> Path:
    """RUN_DIR-repeat[-N], created here (mkdir is atomic)."""
    for n in range(1, 1000):
        candidate = run_dir.with_name(f"{run_dir.name}-repeat" + (f"-{n}" if n > 1 else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise HyperrestartError(f"cannot create a folder next to {run_dir}; pass --output-dir")


RESULT_FILES = ("eval_results.json", "test_results.json", "all_results.json", "train_results.json")
VOLATILE = ("runtime", "per_second", "total_flos", "elapsed_s", "tokens_per_s", "eval_seconds")  # timings differ
# between identical runs
P3_LOGS = ("train_log.csv", "eval_log.csv")  # the P3 runner's loss and lr per step, its Rouge-L per evaluation


def _metrics(run_dir: Path) -> dict:
    found = {}
    for name in RESULT_FILES:
        try:
            data = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.update({f"{name}:{k}": v for k, v in data.items() if not any(t in k for t in VOLATILE)})
    return found


def _log_history(run_dir: Path) -> list:
    try:
        state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [{k: v for k, v in entry.items() if not any(t in k for t in VOLATILE)}
            for entry in state.get("log_history", [])]


def _trace(run_dir: Path) -> list:
    try:
        with open(run_dir / "lr_trace.csv", encoding="utf-8", newline="") as handle:
            return list(csv.reader(handle))
    except OSError:
        return []


def _csv_rows(path: Path) -> list:
    """A CSV log's rows without the timing columns (VOLATILE)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return [{k: v for k, v in row.items() if not any(t in k for t in VOLATILE)} for row in csv.DictReader(handle)]
    except OSError:
        return []


def _predictions(run_dir: Path) -> dict:
    """The P3 runner's eval predictions, {file name: bytes}."""
    return {p.name: p.read_bytes() for p in sorted((run_dir / "eval").glob("*_predictions.jsonl"))}


def compare(original: Path, repeat: Path) -> list:
    """What differs between two runs' results (values compared exactly, as written): an upstream run's metrics files,
    the trainer's logged losses/lrs/evals and lr_trace.csv; a P3 run's train_log.csv (loss and lr per step),
    eval_log.csv and eval predictions. Timings are left out. Empty when they are equal bit for bit."""
    found = []
    first, second = _metrics(original), _metrics(repeat)
    if not first and not _csv_rows(original / P3_LOGS[0]):
        found.append(f"{original} has no metrics file or train_log.csv to compare")
    for key in sorted(set(first) | set(second)):
        if first.get(key) != second.get(key):
            found.append(f"{key}: {first.get(key)!r} vs {second.get(key)!r}")
    history, again = _log_history(original), _log_history(repeat)
    if history != again:
        step = next((i for i, (a, b) in enumerate(zip(history, again)) if a != b), min(len(history), len(again)))
        found.append(f"trainer_state.json log_history differs from entry {step}")
    if _trace(original) != _trace(repeat):
        found.append("lr_trace.csv differs")
    for name in P3_LOGS:
        rows, again = _csv_rows(original / name), _csv_rows(repeat / name)
        if rows != again:
            step = next((a.get("step") for a, b in zip(rows, again) if a != b), f"row {min(len(rows), len(again))}")
            found.append(f"{name} differs from step {step}")
    first, second = _predictions(original), _predictions(repeat)
    found += [f"eval/{name} differs" for name in sorted(set(first) | set(second)) if first.get(name) != second.get(name)]
    return found


def repeat_request(request):
    """The RunRequest that repeats request.repeat (a run folder) into --output-dir or RUN_DIR-repeat, and the
    recorded run. The run's own saved config is used as it is: no --tiny or --set on top."""
    import dataclasses
    from hyperrestart.upstream.run_folder import RUN_CONFIG
    run_dir = Path(request.repeat).resolve()
    if request.set or request.tiny or request.resume:
        raise HyperrestartError("--repeat reruns a run with its own recorded settings; drop --set, --tiny and "
                                "--resume (start a new run from its config to change something)")
    recorded = load_record(run_dir)
    if recorded.get("kind") == "p3":
        raise HyperrestartError(f"--repeat: {run_dir} is a P3 run; repeat it with `hyperrestart p3 --repeat {run_dir}`")
    if not (run_dir / RUN_CONFIG).is_file():
        raise HyperrestartError(f"--repeat: {run_dir / RUN_CONFIG} is missing; the run cannot be repeated")
    output_dir = request.output_dir or str(repeat_output_dir(run_dir))
    if Path(output_dir).resolve() == run_dir:
        raise HyperrestartError("--repeat: give an --output-dir other than the run being repeated")
    repeated = dataclasses.replace(request, config=str(run_dir / RUN_CONFIG), upstream=recorded["upstream"],
                                   nproc=recorded.get("nproc"), output_dir=output_dir, repeat=str(run_dir))
    return repeated, recorded


def check_repeat(original: Path, repeat: Path):
    """After a repeat: one line saying it equals the original bit for bit; an error listing what differs."""
    found = compare(original, repeat)
    if found:
        raise HyperrestartError(f"the repeat in {repeat} differs from {original}: " + "; ".join(found[:6])
                                + (f"; and {len(found) - 6} more" if len(found) > 6 else ""))
    what = ("train_log.csv's losses and lrs, eval_log.csv, the eval predictions" if (original / P3_LOGS[0]).is_file()
            else "metrics files, the trainer's log history, lr_trace.csv")
    return f"repeat:       equal to {original} bit for bit ({what})"

"""Launching the P3 runner: its config, the command line (one process or torchrun), the environment, --tiny's
defaults, and where a finished run's outputs are.

`--model t5` runs the project's copy of the runner with the given python; no upstream tree is needed.
`--model hyperdecoder` needs hyperdecoders' adapter T5: it runs the runner copy inside the materialised tree when
bootstrap put it there and every runner file equals the project's, else the project's copy pointed at the tree with
--hyperdecoders_path.
"""
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import CONFIGS_DIR, PROJECT_ROOT
from hyperrestart.p3.runner import RUNNER_DIR, RUNNER_FILE, lifeline_module, runner_files


@dataclass
class Launch:
    """What `hyperrestart p3` was asked to run (the command's options, without the CLI)."""
    config: Optional[str] = None
    model: Optional[str] = None
    data_dir: Optional[str] = None
    output_dir: Optional[str] = None
    model_name_or_path: Optional[str] = None
    hyperdecoders_tree: Optional[str] = None
    python: str = "python"
    nproc_per_node: int = 1
    tiny: bool = False
    tiny_mixing: bool = False
    runner_args: list = field(default_factory=list)
    repeat: Optional[str] = None  # the run folder this launch repeats (p3 --repeat)


def resolve_config(name):
    """A runner config: a JSON file, or a name under configs/p3/; None for None."""
    if name is None:
        return None
    path = Path(name)
    if path.is_file():
        return path.resolve()
    candidate = CONFIGS_DIR / "p3" / (name if name.endswith(".json") else f"{name}.json")
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in (CONFIGS_DIR / "p3").glob("*.json"))
    raise HyperrestartError(f"P3 config {name!r} not found (neither a file nor configs/p3/{candidate.name}); "
                            f"known: {', '.join(known)}")


def apply_tiny(launch):
    """--tiny: fill the config, data, model and output folder the user did not give (generating the tiny files once);
    returns the runner flags of TINY_SETTINGS (they go before the user's runner arguments, which win)."""
    from hyperrestart.p3.synthetic import TINY_SETTINGS, tiny_p3_data, tiny_t5_dir

    launch.config = launch.config or "table2_t5_restart"
    launch.data_dir = launch.data_dir or str(tiny_p3_data(mixing=launch.tiny_mixing))
    launch.model_name_or_path = launch.model_name_or_path or str(tiny_t5_dir())
    launch.output_dir = launch.output_dir or str(PROJECT_ROOT / "runs" / f"p3-tiny-{time.strftime('%Y%m%d-%H%M%S')}")
    flags = []
    for key, value in TINY_SETTINGS.items():
        flags += [f"--{key}", json.dumps(value) if isinstance(value, bool) else str(value)]
    return flags


def config_model(config):
    """The "model" a runner config names, or None."""
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model")
    except json.JSONDecodeError as exc:
        raise HyperrestartError(f"{config}: invalid JSON ({exc}); fix the config file")


def tree_has_same_runner(tree):
    """True when the tree holds every runner file, byte for byte the project's (bootstrap put them there)."""
    return all((tree / name).is_file() and (tree / name).read_bytes() == (RUNNER_DIR / name).read_bytes()
               for name in runner_files())


def runner_script(model, hyperdecoders_tree):
    """(script, extra runner flags): the tree's copy for the hyperdecoder when it is current, else the project's."""
    if model != "hyperdecoder":
        return RUNNER_FILE, []
    tree = Path(hyperdecoders_tree) / "hyperdecoder"
    if not (tree / "modeling" / "adapter_t5.py").is_file():
        raise HyperrestartError(f"--model hyperdecoder needs the hyperdecoders tree: {tree}/modeling/adapter_t5.py "
                                "is missing; run `python bootstrap.py` (or pass --hyperdecoders-tree DIR)")
    if tree_has_same_runner(tree):
        return tree / RUNNER_FILE.name, []
    return RUNNER_FILE, ["--hyperdecoders_path", str(tree)]


def build_command(launch, tiny_flags=()):
    """The runner's command line: [python [-m torch.distributed.run ...]] script, config, paths, tiny flags, the
    user's runner arguments (last, so they win)."""
    config = resolve_config(launch.config)
    model = launch.model or (config_model(config) if config is not None else None) or "t5"
    passed = ["--config", str(config)] if config is not None else []
    passed += ["--model", model]
    for flag, value in (("--data_dir", launch.data_dir), ("--output_dir", launch.output_dir),
                        ("--model_name_or_path", launch.model_name_or_path)):
        if value:
            passed += [flag, value]
    script, extra = runner_script(model, launch.hyperdecoders_tree)
    launcher = [launch.python]
    if launch.nproc_per_node > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={launch.nproc_per_node}"]
    runner_args = [a for a in launch.runner_args if a != "--"]
    return launcher + [str(script)] + passed + extra + list(tiny_flags) + runner_args


# A tiny run's console: its own progress bar and evaluations, not the libraries' chatter: datasets' bars for
# generating and tokenizing 4,000 rows, and transformers' one-time `add_prefix_space` warning about the tiny
# tokenizer's config (it is converted from its SentencePiece model, as intended). Errors still show.
TINY_QUIET_ENV = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def runner_env(launch):
    """The runner's environment: this project importable; --tiny offline, few threads, caches in the run folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if launch.tiny:
        from hyperrestart.p3.synthetic import TINY_THREADS
        from hyperrestart.upstream.tiny import OFFLINE_ENV

        env.update(OFFLINE_ENV)
        env.update(TINY_QUIET_ENV)
        env.setdefault("OMP_NUM_THREADS", TINY_THREADS)
        env.setdefault("HF_HOME", str(Path(launch.output_dir) / "hf-home"))
        env["HF_DATASETS_CACHE"] = str(Path(env["HF_HOME"]) / "datasets")
    return env


def prepare_launch(launch, python_given=False):
    """(launch, command to run, record of the repeated run or None): --tiny's defaults filled in first; under
    --repeat, the recorded run's command (python_given: launch.python replaces the recorded interpreter)."""
    if launch.repeat:
        from hyperrestart.p3 import repeat

        repeat.check_not_combined(launch)
        return repeat.repeat_launch(launch, launch.repeat, launch.output_dir,
                                    launch.python if python_given else None)
    if launch.tiny_mixing and not launch.tiny:
        raise HyperrestartError("--tiny-mixing picks the tiny data prepared with T0's mixing rates; it needs --tiny")
    return launch, build_command(launch, apply_tiny(launch) if launch.tiny else ()), None


def run_runner(launch, command, recorded=None):
    """Check the paths and the data's mixing rates (every problem, one line each), then run the command holding the
    run folder's lock (a second `p3` on it is refused); the runner and its workers die with this process. A fresh
    run folder gets hyperrestart_run.json (what `p3 --repeat` needs); `recorded`: the record of the run this launch
    repeats, whose environment is restored and whose results must be equal. After --tiny, print where the outputs
    are. Returns its exit status; a run folder this launch made is not left behind empty."""
    from hyperrestart.p3 import preflight
    from hyperrestart.p3 import repeat
    from hyperrestart.p3.runlock import locked_run_folder

    preflight.check(command)
    output_dir = Path(preflight.effective_options(command)["output_dir"])
    lifeline = lifeline_module()
    env = runner_env(launch)
    if recorded:
        repeat.shared.apply_env(env, recorded["env"])
    env[lifeline.LAUNCHER_PID] = str(os.getpid())
    with locked_run_folder(output_dir) as failed:
        fresh = not any(output_dir.glob("checkpoint-*"))  # a resume keeps the record of the run's start
        if fresh:
            made = repeat.record(output_dir, launch, command, env)
            changed = repeat.shared.differences(recorded, made) if recorded else []
            if changed:
                print("warning: repeating with another setup, so the numbers may differ: " + "; ".join(changed),
                      flush=True)
        code = call_with_heartbeat(command, env, lifeline.preexec(os.getpid()))
        if code != 0:
            if fresh and sorted(p.name for p in output_dir.iterdir()) == sorted([repeat.shared.RUN_RECORD,
                                                                                  ".hyperrestart-p3.lock"]):
                (output_dir / repeat.shared.RUN_RECORD).unlink()  # nothing ran: the folder is left as found
            failed()
    if launch.tiny:
        print(outputs_summary(output_dir))
    if recorded and code == 0:
        print(repeat.shared.check_repeat(Path(launch.repeat), output_dir))
    return code


def call_with_heartbeat(command, env, preexec):
    """Run the runner, passing its stdout and stderr on as they come; whenever it is silent for a few seconds
    (importing torch, tokenizing, generating at an evaluation), say what it is still at: its last line. Returns its
    exit status."""
    import threading

    from hyperrestart.core.progress import Heartbeat

    print("starting the P3 runner (importing torch and transformers) ...", file=sys.stderr, flush=True)
    process = subprocess.Popen(command, env=env, preexec_fn=preexec, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = {"last": "starting (importing torch and transformers)", "open_line": False}

    def say(seconds):
        print(("\n" if seen["open_line"] else "") + f"  still running the P3 runner ({seconds:.0f}s): {seen['last']}",
              file=sys.stderr, flush=True)
        seen["open_line"] = False

    with Heartbeat(say) as beat:
        readers = [threading.Thread(target=_forward, args=(pipe, stream, beat, seen), daemon=True)
                   for pipe, stream in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))]
        for reader in readers:
            reader.start()
        code = process.wait()
        for reader in readers:
            reader.join()
    return code


LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ \w+ [\w.]+: ")


def _forward(pipe, stream, beat, seen):
    """Copy `pipe` to `stream` chunk by chunk (progress bars' carriage returns included), noting the last line."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    while True:
        chunk = os.read(pipe.fileno(), 65536)
        text = decoder.decode(chunk, final=not chunk)
        if not chunk:
            stream.write(text)
            break
        stream.write(text)
        stream.flush()
        lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
        if lines:
            seen["last"] = LOG_PREFIX.sub("", lines[-1])[:100]
        seen["open_line"] = not text.endswith("\n")
        beat.touch()
    pipe.close()


def outputs_summary(output_dir):
    """Where a run's outputs are, and its last Rouge-L (lines of text)."""
    from hyperrestart.p3.metrics import summarize

    lines = [f"output dir:   {output_dir}", f"train log:    {output_dir / 'train_log.csv'} (loss and lr per step)"]
    try:
        summary = summarize(output_dir)
        final = summary["final"]
        lines.append(f"eval log:     {output_dir / 'eval_log.csv'} ({summary['evals']} evaluations; step "
                     f"{int(final['step'])}: Rouge-L {final['rougeL_micro']:.2f} micro, "
                     f"{final['rougeL_macro']:.2f} macro)")
        lines.append(f"predictions:  {output_dir / 'eval'}")
    except HyperrestartError as exc:
        lines.append(f"eval log:     none ({exc})")
    checkpoints = sorted((p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    lines.append("checkpoints:  " + (", ".join(p.name for p in checkpoints) if checkpoints else "none"))
    if (output_dir / "final_model").is_dir():
        lines.append(f"final model:  {output_dir / 'final_model'}")
    return "\n".join(lines)

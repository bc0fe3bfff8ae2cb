"""`hyperrestart p3 --repeat RUN_DIR`: what a P3 run folder records to be repeated (the runner's exact command line,
the seed, --tiny, the numerics environment, versions, the runner's code), and the repeat itself. The record's
environment part, the comparison of results and the repeat's folder are hyperrestart.upstream.repeat's, shared with
`run --repeat`."""
import hashlib
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import file_sha256
from hyperrestart.core.paths import OVERLAY_DIR
from hyperrestart.upstream import repeat as shared

DEFAULT_SEED = 42  # the P3 runner's --seed default (p3_runner/arguments.py)
OUTPUT_FLAGS = ("--output_dir", "--output-dir")


def runner_code(model, hyperdecoders_tree) -> str:
    """The code a P3 run runs: a digest of the runner's files and the shared overlay (restart scheduler, parameter
    spaces, diagnostics), and for --model hyperdecoder the hyperdecoders tree's hash."""
    from hyperrestart.p3.runner import RUNNER_DIR, runner_files

    files = [RUNNER_DIR / name for name in runner_files()] + sorted((OVERLAY_DIR / "common").glob("*.py"))
    digest = hashlib.sha256("".join(file_sha256(path) for path in files).encode()).hexdigest()[:16]
    code = f"p3 runner {digest}"
    if model == "hyperdecoder":
        code += f"; hyperdecoders {shared.upstream_tree(Path(hyperdecoders_tree))}"
    return code


def record(output_dir, launch, command, env):
    """Write the P3 run's record (hyperrestart_run.json) beside its outputs; returns it."""
    from hyperrestart.p3.preflight import effective_options

    options = effective_options(command)
    return shared.write_record(output_dir, {
        "about": "hyperrestart p3's record of this run; `hyperrestart p3 --repeat RUN_DIR` repeats it",
        "kind": "p3", "command": list(command), "output_dir": str(Path(output_dir).resolve()),
        "tiny": bool(launch.tiny), "tiny_mixing": bool(launch.tiny_mixing), "model": options.get("model", "t5"),
        "seed": _number(options.get("seed", DEFAULT_SEED)), "data_dir": options.get("data_dir"),
        "mixing": options.get("mixing", "auto"), "hyperdecoders_tree": launch.hyperdecoders_tree,
        **shared.environment(env, command[0], runner_code(options.get("model"), launch.hyperdecoders_tree)),
    })


def _number(value):
    """An integer option as recorded: the int, or the text when it is none (the runner refuses it)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def with_output_dir(command, output_dir):
    """The command with every --output_dir value replaced by output_dir."""
    out, skip = [], False
    for arg in command:
        if skip:
            out.append(str(output_dir))
            skip = False
        elif arg in OUTPUT_FLAGS:
            out.append(arg)
            skip = True
        elif arg.startswith(tuple(f"{flag}=" for flag in OUTPUT_FLAGS)):
            out.append(f"{arg.split('=', 1)[0]}={output_dir}")
        else:
            out.append(arg)
    return out


def repeat_launch(launch, run_dir, output_dir=None, python=None):
    """(launch, command, recorded) that repeat RUN_DIR's P3 run into output_dir (default RUN_DIR-repeat[-N]): its
    recorded command line, --tiny environment and seed; python replaces the recorded interpreter when given."""
    run_dir = Path(run_dir).resolve()
    recorded = shared.load_record(run_dir)
    if recorded.get("kind") != "p3" or not isinstance(recorded.get("command"), list):
        raise HyperrestartError(f"--repeat: {run_dir} is not a `hyperrestart p3` run; repeat an upstream run with "
                                f"`hyperrestart run --repeat {run_dir}`")
    if output_dir and Path(output_dir).resolve() == run_dir:
        raise HyperrestartError("--repeat: give an --output-dir other than the run being repeated")
    output_dir = str(Path(output_dir).resolve()) if output_dir else str(shared.repeat_output_dir(run_dir))
    command = with_output_dir(recorded["command"], output_dir)
    if python:
        command[0] = python
    launch.tiny, launch.tiny_mixing, launch.output_dir = recorded.get("tiny", False), recorded.get("tiny_mixing",
                                                                                                   False), output_dir
    launch.hyperdecoders_tree = recorded.get("hyperdecoders_tree") or launch.hyperdecoders_tree
    launch.repeat = str(run_dir)
    return launch, command, recorded


def check_not_combined(launch):
    """--repeat reruns the recorded command: refuse options that would change it."""
    given = [flag for flag, value in (("--config", launch.config), ("--model", launch.model),
                                      ("--data-dir", launch.data_dir), ("--tiny", launch.tiny),
                                      ("--tiny-mixing", launch.tiny_mixing),
                                      ("--model-name-or-path", launch.model_name_or_path),
                                      ("--nproc-per-node", launch.nproc_per_node != 1),
                                      ("runner arguments after --", [a for a in launch.runner_args if a != "--"]))
             if value]
    if given:
        raise HyperrestartError(f"--repeat reruns a P3 run with its own recorded command; drop {', '.join(given)} "
                                "(start a new run to change something)")

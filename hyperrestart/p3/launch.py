"""Launching the P3 runner: its config, the command line (one process or torchrun), the environment, --tiny's
defaults, and where a finished run's outputs are.

`--model t5` runs the project's copy of the runner with the given python; no upstream tree is needed.
`--model hyperdecoder` needs hyperdecoders' adapter T5: it runs the runner copy inside the materialised tree when
bootstrap put it there and every runner file equals the project's, else the project's copy pointed at the tree with
--hyperdecoders_path.
"""
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import CONFIGS_DIR, PROJECT_ROOT
from hyperrestart.p3.runner import RUNNER_DIR, RUNNER_FILE, runner_files


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
    runner_args: list = field(default_factory=list)


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
    launch.data_dir = launch.data_dir or str(tiny_p3_data())
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


def runner_env(launch):
    """The runner's environment: this project importable; --tiny offline, few threads, caches in the run folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if launch.tiny:
        from hyperrestart.p3.synthetic import TINY_THREADS
        from hyperrestart.upstream.tiny import OFFLINE_ENV

        env.update(OFFLINE_ENV)
        env.setdefault("OMP_NUM_THREADS", TINY_THREADS)
        env.setdefault("HF_HOME", str(Path(launch.output_dir) / "hf-home"))
        env["HF_DATASETS_CACHE"] = str(Path(env["HF_HOME"]) / "datasets")
    return env


def prepare_launch(launch):
    """The command to run (--tiny's defaults filled in first)."""
    return build_command(launch, apply_tiny(launch) if launch.tiny else ())


def run_runner(launch, command):
    """Run the command; after --tiny, print where the outputs are. Returns its exit status."""
    code = subprocess.call(command, env=runner_env(launch))
    if launch.tiny:
        print(outputs_summary(Path(launch.output_dir)))
    return code


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

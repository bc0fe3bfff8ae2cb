"""`hyperrestart p3`: launch the P3 runner (overlay/hyperdecoders/hyperdecoder/p3_trainer.py).

`--model t5` runs the project's copy of the runner with the current python; no upstream tree is needed.
`--model hyperdecoder` needs hyperdecoders' adapter T5: it runs the runner copy inside the materialised tree
(upstream/hyperdecoders/hyperdecoder/p3_trainer.py) when bootstrap put it there and it equals the project's copy,
else the project's copy pointed at the tree with --hyperdecoders_path. `--python` picks another interpreter (e.g. the
tree's own environment); `--nproc-per-node N` launches N processes with torchrun. Runner options not listed here go
after `--`.
`--tiny`: the tiny learnable P3 data and tiny random T5 (generated once, cached), hyperrestart.p3.synthetic's
TINY_SETTINGS (255 steps, evaluated every 51), offline, on the CPU; prints where the outputs are.
"""
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import CONFIGS_DIR, DEFAULT_DEST, OVERLAY_DIR, PROJECT_ROOT

RUNNER = OVERLAY_DIR / "hyperdecoders" / "hyperdecoder" / "p3_trainer.py"


def register(subparsers):
    parser = subparsers.add_parser(
        "p3", help="P3 instruction tuning (Table 2, Fig. 4/5): T5 or Hyperdecoders, with or without restart",
        description=__doc__ + "\nExample: hyperrestart p3 --config table2_t5_restart --data-dir P3_PREPARED "
                              "--model-name-or-path flan-t5-base --output-dir runs/t5_restart -- --max_steps 2000")
    parser.add_argument("--config", help="runner config: a JSON file or a name under configs/p3/ "
                                          "(e.g. table2_hyperdecoder_restart)")
    parser.add_argument("--model", choices=("t5", "hyperdecoder"), help="overrides the config's model")
    parser.add_argument("--data-dir", help="folder from `hyperrestart prepare-p3`")
    parser.add_argument("--output-dir", help="run folder")
    parser.add_argument("--model-name-or-path", help="T5 checkpoint folder (e.g. a local google/flan-t5-base)")
    parser.add_argument("--hyperdecoders-tree", default=str(DEFAULT_DEST / "hyperdecoders"),
                        help="materialised hyperdecoders tree (default: upstream/hyperdecoders)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the runner")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per node, via torchrun")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny learnable P3 + tiny random T5, 255 steps, offline, CPU: a run that learns in about "
                             "a minute (default config table2_t5_restart, output runs/p3-tiny-TIME)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("runner_args", nargs="*", metavar="-- RUNNER_ARGS",
                        help="further p3_trainer.py options, after `--` (python p3_trainer.py --help lists them)")
    parser.set_defaults(func=run)


def resolve_config(name):
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


def apply_tiny(args):
    """--tiny: fill the config, data, model and output folder the user did not give (generating the tiny files once);
    returns the runner flags of TINY_SETTINGS (they go before the user's runner arguments, which win)."""
    from hyperrestart.p3.synthetic import TINY_SETTINGS, tiny_p3_data, tiny_t5_dir

    args.config = args.config or "table2_t5_restart"
    args.data_dir = args.data_dir or str(tiny_p3_data())
    args.model_name_or_path = args.model_name_or_path or str(tiny_t5_dir())
    args.output_dir = args.output_dir or str(PROJECT_ROOT / "runs" / f"p3-tiny-{time.strftime('%Y%m%d-%H%M%S')}")
    flags = []
    for key, value in TINY_SETTINGS.items():
        flags += [f"--{key}", json.dumps(value) if isinstance(value, bool) else str(value)]
    return flags


def build_command(args, tiny_flags=()):
    config = resolve_config(args.config)
    model = args.model
    if model is None and config is not None:
        try:
            model = json.loads(config.read_text()).get("model")
        except json.JSONDecodeError as exc:
            raise HyperrestartError(f"{config}: invalid JSON ({exc}); fix the config file")
    model = model or "t5"
    runner_args = [a for a in args.runner_args if a != "--"] if args.runner_args else []
    passed = []
    if config is not None:
        passed += ["--config", str(config)]
    passed += ["--model", model]
    for flag, value in (("--data_dir", args.data_dir), ("--output_dir", args.output_dir),
                        ("--model_name_or_path", args.model_name_or_path)):
        if value:
            passed += [flag, value]
    script = RUNNER
    if model == "hyperdecoder":
        tree = Path(args.hyperdecoders_tree) / "hyperdecoder"
        if not (tree / "modeling" / "adapter_t5.py").is_file():
            raise HyperrestartError(f"--model hyperdecoder needs the hyperdecoders tree: {tree}/modeling/adapter_t5.py "
                                    "is missing; run `python bootstrap.py` (or pass --hyperdecoders-tree DIR)")
        if (tree / "p3_trainer.py").is_file() and (tree / "p3_trainer.py").read_bytes() == RUNNER.read_bytes():
            script = tree / "p3_trainer.py"
        else:
            passed += ["--hyperdecoders_path", str(tree)]
    launcher = [args.python]
    if args.nproc_per_node > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc_per_node}"]
    return launcher + [str(script)] + passed + list(tiny_flags) + runner_args


def run(args):
    command = build_command(args, apply_tiny(args) if args.tiny else ())
    if args.dry_run:
        print(shlex.join(command))
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if args.tiny:
        from hyperrestart.p3.synthetic import TINY_THREADS
        from hyperrestart.upstream.tiny import OFFLINE_ENV

        env.update(OFFLINE_ENV)
        env.setdefault("OMP_NUM_THREADS", TINY_THREADS)
        env.setdefault("HF_HOME", str(Path(args.output_dir) / "hf-home"))
        env["HF_DATASETS_CACHE"] = str(Path(env["HF_HOME"]) / "datasets")
    code = subprocess.call(command, env=env)
    if args.tiny:
        print_outputs(Path(args.output_dir))
    return code


def print_outputs(output_dir):
    """Where a run's outputs are, and its last Rouge-L."""
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
    print("\n".join(lines))

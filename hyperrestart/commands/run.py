"""`hyperrestart run CONFIG`: run an upstream's training script on a config, in that upstream's environment."""
import json
import subprocess
import sys
import time
from pathlib import Path

from .. import runner
from ..errors import HyperrestartError
from ..paths import PROJECT_ROOT

# --tiny: the generated tiny T5 and GLUE data, 16 steps with a log line per step; every value can still be --set.
TINY_SETTINGS = {
    "max_steps": 16, "logging_steps": 1, "logging_first_step": True, "eval_steps": 8, "save_steps": 8,
    "save_total_limit": 1, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
    "gradient_accumulation_steps": 1, "max_source_length": 64, "max_target_length": 8, "val_max_target_length": 8,
    "test_max_target_length": 8, "n_val": 16, "n_test": 16,
}
TINY_UPSTREAM_SETTINGS = {
    # small enough to train in seconds on a CPU (the released dims are 64/64/128 on d_model 768)
    "hyperdecoders": {"encoder_adapter_dim": 8, "decoder_adapter_dim": 8, "hypernetwork_bottleneck": 16,
                      "report_to": []},
    "hyperformer": {"task_embedding_dim": 16, "projected_task_embedding_dim": 8, "reduction_factor": 4},
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "CUDA_VISIBLE_DEVICES": "", "WANDB_DISABLED": "true", "WANDB_MODE": "disabled",
               "TOKENIZERS_PARALLELISM": "false"}


def tiny_overrides(upstream, config):
    """The settings --tiny applies (before any --set): tiny model/data, 16 short steps, offline."""
    from ..tiny import GLUE_SCHEMA, tiny_glue_dir, tiny_model_dir
    tasks = list(dict.fromkeys(list(config.get("tasks") or []) + list(config.get("eval_tasks") or [])))
    unsupported = [t for t in tasks if t not in GLUE_SCHEMA]
    if unsupported:
        raise HyperrestartError(f"--tiny has data for the GLUE tasks only ({', '.join(GLUE_SCHEMA)}), not "
                                f"{', '.join(unsupported)}; pass --set tasks='[\"rte\"]' --set eval_tasks='[\"rte\"]'")
    model = str(tiny_model_dir())
    return dict(TINY_SETTINGS, model_name_or_path=model, tokenizer_name=model, data_dir=str(tiny_glue_dir()),
                **TINY_UPSTREAM_SETTINGS.get(upstream.name, {}))


def resolve(args):
    """(upstream, resolved config, output dir) from CONFIG, --tiny and --set, without touching anything."""
    upstream = runner.upstream_for_config(args.config, args.upstream)
    config = runner.load_config(args.config)
    if args.tiny:
        config.update(tiny_overrides(upstream, config))
    config = runner.apply_overrides(config, args.set)
    if args.output_dir:
        output_dir = Path(args.output_dir).resolve()
    else:
        stem = Path(args.config).stem + ("-tiny" if args.tiny else "")
        output_dir = PROJECT_ROOT / "runs" / f"{upstream.name}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    config["output_dir"] = str(output_dir)
    return upstream, config, output_dir


def run_env(upstream, tree, config, output_dir, tiny):
    env = runner.process_env(upstream, tree)
    if config.get("data_dir"):
        env["HYPERRESTART_DATA_DIR"] = str(config["data_dir"])
    if tiny:
        env.update(OFFLINE_ENV)
        env["HF_HOME"] = str(output_dir / "hf-home")
        env["HF_DATASETS_CACHE"] = str(output_dir / "hf-home" / "datasets")
    return env


def summarize(output_dir: Path, config, log_text=""):
    """Write lr_trace.csv and print where the trace, metrics and checkpoints are, and the restart steps."""
    found = runner.latest_trainer_state(output_dir)
    trace = runner.lr_trace_from_state(found[1]) if found else []
    source = str(found[0]) if found else None
    if not trace and log_text:
        trace, source = runner.lr_trace_from_log(log_text), "train.log"
    lines = [f"output dir:   {output_dir}"]
    if trace:
        runner.write_lr_trace(trace, output_dir / "lr_trace.csv")
        lines.append(f"lr trace:     {output_dir / 'lr_trace.csv'} ({len(trace)} steps, from {source})")
        restarts = runner.restart_steps(trace, runner.initial_lr(config))
        lines.append("restarts at:  " + (", ".join(map(str, restarts)) if restarts else "none")
                     + " (steps after which the lr went back up)")
    else:
        lines.append("lr trace:     none found (no trainer_state.json with learning_rate entries)")
    metrics = sorted(p for p in output_dir.glob("*.json") if "results" in p.name or "metrics" in p.name)
    lines.append("metrics:      " + (", ".join(p.name for p in metrics) if metrics else "none"))
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                         if p.name.split("-")[-1].isdigit() else 0)
    lines.append("checkpoints:  " + (", ".join(p.name for p in checkpoints) if checkpoints else "none"))
    print("\n".join(lines))
    return trace


def cmd_run(args):
    from ..envs import python_for
    upstream, config, output_dir = resolve(args)
    tree = runner.tree_dir(upstream, args.dest)
    python = Path(args.python) if args.python else python_for(upstream.name)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "config.json"
    config_file.write_text(json.dumps(config, indent=4) + "\n")
    cmd = runner.command(upstream, python, config_file, args.nproc)
    env = run_env(upstream, tree, config, output_dir, args.tiny)
    print(f"running {upstream.name} in {tree / upstream.workdir}:\n  {' '.join(cmd)}", flush=True)
    log_path = output_dir / "train.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, cwd=tree / upstream.workdir, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            log.write(line)
            if not args.quiet:
                sys.stdout.write(line)
        returncode = process.wait()
    print(f"log:          {log_path}")
    summarize(output_dir, config, log_path.read_text(errors="replace"))
    if returncode != 0:
        raise HyperrestartError(f"{upstream.script} exited with {returncode}; see {log_path}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "run", help="train an upstream on a config (configs/hyperdecoders/*.json, configs/hyperformer/*.json)",
        description="Resolve CONFIG (+ --set), write it to the output dir, run the upstream's training script in its "
                    "materialised tree with its env's python, then write lr_trace.csv and print the restarts, "
                    "metrics and checkpoints.")
    parser.add_argument("config", help="JSON training arguments; its folder names the upstream")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training argument (value parsed as JSON if it parses, else a string); "
                             "repeatable")
    parser.add_argument("--nproc", type=int, default=None, help="processes (torch.distributed.run --nproc_per_node)")
    parser.add_argument("--tiny", action="store_true",
                        help="the generated tiny T5 and GLUE data, 16 steps, offline, CPU: a smoke run in seconds")
    parser.add_argument("--dest", help="folder holding the materialised trees (default: upstream/)")
    parser.add_argument("--output-dir", help="where the run writes (default: runs/<upstream>-<config>-<time>)")
    parser.add_argument("--upstream", choices=sorted(runner.UPSTREAMS), help="override the upstream the folder names")
    parser.add_argument("--python", help="interpreter to run with (default: the upstream's env, `hyperrestart env`)")
    parser.add_argument("--quiet", action="store_true", help="only write the training output to train.log")
    parser.set_defaults(func=cmd_run)

"""The P3 runner's options: three dataclasses read by transformers' HfArgumentParser (the shape of the Hugging Face
example runners), from the command line, from a JSON file (`--config FILE`, whose keys are option names; command-line
flags override it), or from a lone JSON file argument (`p3_trainer.py FILE.json`).

Every option is spelled --foo_bar or --foo-bar; a bool option takes true/false (also yes/no, on/off, 1/0, t/f, y/n)
or no value (true), and one that defaults to true also has --no_foo. Errors are one line and exit with status 2.
"""
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

REQUIRED = ("data_dir", "output_dir", "model_name_or_path")


def _help(text, **metadata):
    return dict(help=text, **metadata)


@dataclass
class ModelArguments:
    """Which model to train, from which checkpoint."""
    model_name_or_path: Optional[str] = field(default=None, metadata=_help(
        "T5 checkpoint (HF format), e.g. a local google/flan-t5-base (required)"))
    tokenizer_name: Optional[str] = field(default=None, metadata=_help("default: --model_name_or_path"))
    model: Literal["t5", "hyperdecoder"] = field(default="t5", metadata=_help(
        "t5: plain T5ForConditionalGeneration; hyperdecoder: hyperdecoders' adapter T5"))
    hyperdecoders_path: Optional[str] = field(default=None, metadata=_help(
        "hyperdecoders' hyperdecoder/ folder (has modeling/adapter_t5.py); default: p3_trainer.py's folder"))
    hdconfig: Optional[str] = field(default=None, metadata=_help(
        "JSON with adapter settings (the released runner's hdconfig.json)"))


@dataclass
class DataArguments:
    """The prepared P3 folder and how its text becomes tokens."""
    data_dir: Optional[str] = field(default=None, metadata=_help(
        "folder from `hyperrestart prepare-p3` (or any datasets folder with inputs/targets) (required)"))
    source_prefix: str = field(default="inputs: ")
    max_source_length: int = field(default=512)
    max_target_length: int = field(default=32)
    eval_split: str = field(default="validation")
    max_eval_samples: Optional[int] = field(default=None)
    mixing: Literal["auto", "rates", "off"] = field(default="auto", metadata=_help(
        "auto: T0's examples-proportional mixing when DATA_DIR/manifest.json records mixing rates (prepare-p3 "
        "--caps-as mixing-rates), else epochs over every row; rates: require the rates; off: epochs over every row"))


@dataclass
class P3TrainingArguments:
    """Optimizer, lr schedule, batches, evaluation, checkpoints and logging (step counts are optimizer steps of the
    global batch)."""
    output_dir: Optional[str] = field(default=None, metadata=_help(
        "run folder: logs, checkpoints, eval predictions (required)"))
    optimizer: Literal["adamw", "adafactor"] = field(default="adamw")
    paper_optimizer_pairing: bool = field(default=False, metadata=_help(
        "the released runner's pairing: AdamW with restart, Adafactor with every other schedule"))
    learning_rate: float = field(default=1e-4)
    weight_decay: float = field(default=0.01)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.999)
    adam_epsilon: float = field(default=1e-8)
    max_grad_norm: float = field(default=0.0, metadata=_help("gradient clipping (0 = off, as the released runner)"))
    lr_scheduler: str = field(default="cosine_annual_w_restarts", metadata=_help(
        "the upstream trainers' scheduler names (restart_scheduler.SCHEDULER_NAMES and SCHEDULER_CHOICES)"))
    eta_min: float = field(default=1e-6)
    restart_t0: int = field(default=1)
    restart_t_mult: int = field(default=2)
    restart_warmup_steps: int = field(default=0, metadata=_help("restart: linear warmup, in scheduler steps"))
    warmup_steps: int = field(default=0, metadata=_help(
        "constant/linear/cosine/polynomial warmup, in scheduler steps"))
    polynomial_power: float = field(default=1.0)
    # the restart family and per-group restarts (restart_scheduler.py); step counts in scheduler steps
    restart_cycle_warmup: int = field(default=0, metadata=_help("linear warmup from eta_min at each restart"))
    restart_peak_decay: float = field(default=1.0, metadata=_help("each cycle's peak = the previous one's x this"))
    restart_cycle_limit: int = field(default=0, metadata=_help("cycles before the restarts stop (0: no limit)"))
    restart_after_limit: Literal["eta_min", "constant"] = field(default="eta_min")
    wsd_decay_steps: int = field(default=0, metadata=_help("wsd: steps of the final decay"))
    wsd_decay_shape: Literal["linear", "cosine", "sqrt"] = field(default="linear")
    adaptive_restart_period: int = field(default=0, metadata=_help("adaptive_restart: cosine length (0: the run)"))
    adaptive_restart_criterion: Literal["loss", "gradient", "either"] = field(default="loss")
    adaptive_restart_window: int = field(default=10)
    adaptive_restart_min_cycle: int = field(default=100)
    restart_scope: Literal["all", "hypernetwork", "backbone"] = field(default="all", metadata=_help(
        "the parameter groups that restart; the others follow --base_lr_scheduler"))
    base_lr_scheduler: Literal["constant", "linear", "cosine", "polynomial"] = field(default="constant")
    step_diagnostics: bool = field(default=True, metadata=_help(
        "per-step, per-space gradient/update norms, lr and loss: diagnostics.csv and TensorBoard"))
    scheduler_step_unit: int = field(default=1, metadata=_help(
        "optimizer steps per scheduler step (released runner: 10000 batch-1 steps)"))
    max_steps: int = field(default=1000, metadata=_help("optimizer steps"))
    stop_at_step: Optional[int] = field(default=None, metadata=_help(
        "save a checkpoint and stop at this step (the schedule still spans --max_steps); for preemption/tests"))
    train_batch_size: Optional[int] = field(default=None, metadata=_help(
        "GLOBAL examples per optimizer step, over all processes and accumulation (default: "
        "per_device_train_batch_size x gradient_accumulation_steps); the same for any number of processes"))
    per_device_train_batch_size: int = field(default=32, metadata=_help(
        "the largest micro-batch one process runs at once (memory); under N processes each runs "
        "train_batch_size / N examples per step in micro-batches of min(this, train_batch_size / N)"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help(
        "only sets the default --train_batch_size; the accumulation used is derived from the global batch, the "
        "number of processes and --per_device_train_batch_size"))
    group_by_length: bool = field(default=True)
    length_group_size: int = field(default=50, metadata=_help("megabatch = this many batches, sorted by length"))
    eval_steps: int = field(default=5000, metadata=_help("0 = no evaluation during training"))
    eval_at_start: bool = field(default=True, metadata=_help("evaluate at step 0 (as the paper)"))
    eval_at_end: bool = field(default=True, metadata=_help("evaluate at the last step (--max_steps) too"))
    per_device_eval_batch_size: int = field(default=64)
    generation_max_new_tokens: Optional[int] = field(default=None, metadata=_help("default: --max_target_length"))
    generation_num_beams: int = field(default=1)
    save_steps: int = field(default=5000)
    save_total_limit: int = field(default=2)
    resume: Literal["auto", "never"] = field(default="auto", metadata=_help(
        "auto: continue from the newest checkpoint in output_dir"))
    resume_allowed_changes: Optional[str] = field(default=None, metadata=_help(
        "comma list of settings that may differ from the checkpoint's on resume (of learning_rate, eta_min, "
        "weight_decay; e.g. a PBT exploit); every other difference is refused; 'none': refuse any; default: not "
        "compared"))
    logging_steps: int = field(default=10, metadata=_help(
        "TensorBoard/wandb/tqdm interval (the CSV gets every step)"))
    report_to: str = field(default="tensorboard", metadata=_help(
        "comma list of tensorboard, wandb, none (CSV is always written)"))
    run_name: Optional[str] = field(default=None)
    seed: int = field(default=42)
    bf16: Literal["auto", "yes", "no"] = field(default="auto")
    tf32: bool = field(default=True)
    dataloader_num_workers: int = field(default=0)
    progress: bool = field(default=True)


ARGUMENT_CLASSES = (ModelArguments, DataArguments, P3TrainingArguments)
TRUE, FALSE = ("1", "true", "yes", "on", "t", "y"), ("0", "false", "no", "off", "f", "n")


def option_fields():
    """{option name: dataclass field} of every runner option (the `--config` file option aside)."""
    return {f.name: f for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)}


def parse_bool(text):
    """A bool option's value: the old runner's spellings (1/true/yes/on, 0/false/no/off) and HfArgumentParser's."""
    import argparse

    if isinstance(text, bool):
        return text
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser(prog=None):
    """HfArgumentParser over the three dataclasses, plus --config; errors are one line (exit status 2)."""
    from transformers import HfArgumentParser
    from transformers.hf_argparser import string_to_bool

    class P3ArgumentParser(HfArgumentParser):
        def add_argument(self, *names, **kwargs):
            if kwargs.get("type") is string_to_bool:
                kwargs["type"] = parse_bool
            return super().add_argument(*names, **kwargs)

        def error(self, message):
            self.exit(2, f"{self.prog}: error: {message}\n")

    parser = P3ArgumentParser(ARGUMENT_CLASSES, prog=prog, description=__doc__)
    parser.add_argument("--config", "--config-file", dest="config", default=None,
                        help="JSON file of option values (keys = option names with underscores; keys starting with "
                             "_ are comments); command-line flags override")
    return parser


def read_config(path, parser):
    """The JSON file's options (comment keys `_...` dropped); unknown keys refused in one line."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        parser.error(f"--config {path}: cannot read it as JSON ({exc})")
    if not isinstance(config, dict):
        parser.error(f"--config {path}: expected a JSON object of option names, got {type(config).__name__}")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    unknown = sorted(set(config) - set(option_fields()) - {"config"})
    if unknown:
        parser.error(f"{path}: unknown option(s) {unknown}; `p3_trainer.py --help` lists the options")
    config.pop("config", None)
    return config


def parse_arguments(argv=None):
    """(ModelArguments, DataArguments, P3TrainingArguments, config path or None) from argv (default sys.argv[1:])."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):  # the HF examples' `run_x.py args.json`
        argv = ["--config", argv[0]]
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**read_config(first.config, parser))
    *parsed, rest, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return (*parsed, rest.config)


def parse_args(argv=None):
    """The options as one flat namespace, checked and completed (global batch layout, canonical scheduler name,
    the optimizer pairing, generation length); a bad combination exits with one line (status 2)."""
    import argparse

    model_args, data_args, training_args, config = parse_arguments(argv)
    args = argparse.Namespace(config=config, **vars(model_args), **vars(data_args), **vars(training_args))
    try:
        complete(args)
    except ValueError as exc:
        build_parser().error(str(exc))
    return args


def complete(args):
    """Check and fill the derived options in place; ValueError saying what to change."""
    from .schedules import canonical_name, is_restart

    for required in REQUIRED:
        if not getattr(args, required):
            raise ValueError(f"--{required} is required (on the command line or in --config)")
    args.lr_scheduler = canonical_name(args.lr_scheduler)
    from .resume_changes import parse_allowed

    parse_allowed(args.resume_allowed_changes)  # a key the runner cannot change is refused before anything loads
    if args.paper_optimizer_pairing:
        args.optimizer = "adamw" if is_restart(args.lr_scheduler) else "adafactor"
    if args.scheduler_step_unit < 1:
        raise ValueError("--scheduler_step_unit must be >= 1")
    if args.train_batch_size is not None and args.gradient_accumulation_steps != 1:
        raise ValueError("give --train_batch_size (the global batch) or --gradient_accumulation_steps, not both: the "
                         "accumulation is derived from the global batch")
    if args.train_batch_size is None:
        args.train_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if min(args.train_batch_size, args.per_device_train_batch_size, args.gradient_accumulation_steps) < 1:
        raise ValueError("--train_batch_size, --per_device_train_batch_size and --gradient_accumulation_steps must "
                         "be >= 1")
    args.batch_layout = batch_layout(args.train_batch_size, int(os.environ.get("WORLD_SIZE", "1")),
                                     args.per_device_train_batch_size)
    if args.generation_max_new_tokens is None:
        args.generation_max_new_tokens = args.max_target_length
    return args


def batch_layout(global_batch, world, max_micro):
    """How `world` processes split a global batch: {per_process, micro_batch, accumulation} (examples per process per
    optimizer step, micro-batch size, micro-batches per step). ValueError saying what to change when it does not
    divide."""
    if global_batch % world:
        raise ValueError(f"the global batch of {global_batch} examples per optimizer step (--train_batch_size, default "
                         f"per_device_train_batch_size x gradient_accumulation_steps) does not divide over {world} "
                         f"processes: make it a multiple of {world} or launch another number of processes")
    share = global_batch // world
    micro = min(max_micro, share)
    if share % micro:
        raise ValueError(f"each of the {world} processes gets {share} examples per optimizer step, not a multiple of "
                         f"--per_device_train_batch_size {micro}: choose a micro-batch size that divides {share}")
    return {"world_size": world, "global_batch": global_batch, "per_process": share, "micro_batch": micro,
            "accumulation": share // micro}

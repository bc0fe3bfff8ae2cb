#!/usr/bin/env python
"""P3 instruction tuning with or without the restart schedule (Zhang et al., NAACL 2025, Sec. 4.1, Table 2, Fig. 4/5).

A hyperrestart overlay file, dropped into hyperdecoders as hyperdecoder/p3_trainer.py so `--model hyperdecoder` can use
that tree's adapter T5 (modeling/adapter_t5.py); `--model t5` is plain T5ForConditionalGeneration and runs anywhere.

    python p3_trainer.py --data_dir P3_PREPARED --model_name_or_path google/flan-t5-base --model t5 \
        --lr_scheduler restart --output_dir runs/t5_restart [--config configs/p3/table2_t5_restart.json]

Training: real batches (length-grouped, padded to the batch's longest), gradient accumulation, token-weighted loss,
bf16 autocast + TF32 on GPUs that have them, DDP under torchrun. The lr scheduler is stepped once every
`--scheduler_step_unit` optimizer steps (the released runner: 10,000 batch-1 steps). Evaluation (at step 0, every
`--eval_steps` and at the last step): greedy generation, Rouge-L exactly as the paper (rouge_score, rougeL, stemmer,
F-measure, mean x 100), micro and per-task macro.

Any number of processes (torchrun --nproc_per_node N) trains the same run: the batch is GLOBAL. One optimizer step
consumes --train_batch_size examples (default: per_device_train_batch_size x gradient_accumulation_steps, so a config
written for one process keeps its meaning), split evenly over the N processes; each process runs its share in
micro-batches of at most --per_device_train_batch_size with gradient accumulation making up the rest. The loss is the
token-weighted mean over the whole global batch. --max_steps, --scheduler_step_unit, --eval_steps and --save_steps
count optimizer steps of that global batch, so they (and the lr sequence) are the same for any N. The global batch
must be divisible by N, and each process's share by its micro-batch (an error says so). The logged loss and token
counts are over all processes. Checkpoints resume exactly: model, optimizer, scheduler, RNG states and data position.
Logs: OUTPUT_DIR/train_log.csv, eval_log.csv, eval/step_N.json(l), TensorBoard; wandb only with --report_to wandb.
"""
import argparse
import csv
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("p3_trainer")
HERE = Path(__file__).resolve().parent

# hdconfig.json of the released runner (configs/hdConfig/hdconfig.json): the adapter settings it reads.
HDCONFIG_ADAPTER_DEFAULTS = {
    "encoder_adapter": "manual", "decoder_adapter": "generated", "encoder_adapter_dim": 64, "decoder_adapter_dim": 64,
    "hypernetwork_bottleneck": 128, "adapter_norm_input": True, "process_encoder_output": True,
    "mean_task_embeddings": False, "freeze_model": False, "unfreeze_encoder_adapters": True,
    "unfreeze_decoder_adapters": True, "unfreeze_encoder": True, "unfreeze_decoder": True,
    "unfreeze_layer_norms": True,
}
SCHEDULERS = ("restart", "constant", "linear", "cosine", "polynomial")
RESTART_NAMES = ("restart", "cosine_annual_w_restarts", "consine_annealing_restart")
TRAIN_LOG_FIELDS = ("step", "epoch", "loss", "lr", "scheduler_steps", "target_tokens", "source_tokens",
                    "nonpad_fraction", "tokens_per_s", "elapsed_s", "examples")
EVAL_LOG_FIELDS = ("step", "rougeL_micro", "rougeL_macro", "num_examples", "num_tasks", "eval_seconds")


# ------------------------------------------------------------------------------------------------------ imports
def import_restart_scheduler():
    """The tree's copy (third_party.trainers.restart_scheduler) inside hyperdecoders, else hyperrestart.upstream.scheduler."""
    try:
        from third_party.trainers.restart_scheduler import RestartScheduler, check_alignment
    except ImportError:
        try:
            from hyperrestart.upstream.scheduler import RestartScheduler, check_alignment
        except ImportError:
            root = HERE.parents[2]  # <project>/overlay/hyperdecoders/hyperdecoder -> <project>
            if not (root / "hyperrestart" / "scheduler.py").exists():
                raise
            sys.path.insert(0, str(root))
            from hyperrestart.upstream.scheduler import RestartScheduler, check_alignment
    return RestartScheduler, check_alignment


# ------------------------------------------------------------------------------------------------------ metric
def rouge_l(predictions, references, tasks=None):
    """The paper's metric: rouge_score RougeScorer(["rougeL"], use_stemmer=True) F-measure, mean over examples x 100
    (micro), plus the mean over tasks of each task's mean (macro) and the per-task scores."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    result = {"rougeL_micro": 100.0 * float(np.mean(scores)) if scores else float("nan"), "num_examples": len(scores)}
    if tasks is not None:
        by_task = {}
        for task, score in zip(tasks, scores):
            by_task.setdefault(task, []).append(score)
        per_task = {task: 100.0 * float(np.mean(values)) for task, values in sorted(by_task.items())}
        result.update(rougeL_macro=float(np.mean(list(per_task.values()))) if per_task else float("nan"),
                      num_tasks=len(per_task), per_task=per_task)
    result["scores"] = scores
    return result


# ------------------------------------------------------------------------------------------------------ arguments
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def add(*names, **kw):
        # accept --foo_bar and --foo-bar alike
        names = list(names) + [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        p.add_argument(*names, **kw)

    add("--config", help="JSON file of option defaults (keys = option names with underscores); CLI flags override")
    add("--data_dir", help="folder from `hyperrestart prepare-p3` (or any datasets folder with inputs/targets)")
    add("--output_dir", help="run folder: logs, checkpoints, eval predictions")
    add("--model_name_or_path", help="T5 checkpoint (HF format), e.g. a local google/flan-t5-base")
    add("--tokenizer_name", default=None)
    add("--model", choices=("t5", "hyperdecoder"), default="t5")
    add("--hyperdecoders_path", default=None,
        help="hyperdecoders' hyperdecoder/ folder (has modeling/adapter_t5.py); default: this file's folder")
    add("--hdconfig", default=None, help="JSON with adapter settings (the released runner's hdconfig.json)")
    add("--optimizer", choices=("adamw", "adafactor"), default="adamw")
    add("--paper_optimizer_pairing", action="store_true",
        help="the released runner's pairing: AdamW with restart, Adafactor with every other schedule")
    add("--learning_rate", type=float, default=1e-4)
    add("--weight_decay", type=float, default=0.01)
    add("--adam_beta1", type=float, default=0.9)
    add("--adam_beta2", type=float, default=0.999)
    add("--adam_epsilon", type=float, default=1e-8)
    add("--max_grad_norm", type=float, default=0.0, help="gradient clipping (0 = off, as the released runner)")
    add("--lr_scheduler", default="restart", help=f"one of {SCHEDULERS} (aliases: {RESTART_NAMES[1:]})")
    add("--eta_min", type=float, default=1e-6)
    add("--restart_t0", type=int, default=1)
    add("--restart_t_mult", type=int, default=2)
    add("--restart_warmup_steps", type=int, default=0, help="restart: linear warmup, in scheduler steps")
    add("--warmup_steps", type=int, default=0, help="constant/linear/cosine/polynomial warmup, in scheduler steps")
    add("--polynomial_power", type=float, default=1.0)
    add("--scheduler_step_unit", type=int, default=1,
        help="optimizer steps per scheduler step (released runner: 10000 batch-1 steps)")
    add("--max_steps", type=int, default=1000, help="optimizer steps")
    add("--stop_at_step", type=int, default=None,
        help="save a checkpoint and stop at this step (the schedule still spans --max_steps); for preemption/tests")
    add("--train_batch_size", type=int, default=None,
        help="GLOBAL examples per optimizer step, over all processes and accumulation (default: "
             "per_device_train_batch_size x gradient_accumulation_steps); the same for any number of processes")
    add("--per_device_train_batch_size", type=int, default=32,
        help="the largest micro-batch one process runs at once (memory); under N processes each runs "
             "train_batch_size / N examples per step in micro-batches of min(this, train_batch_size / N)")
    add("--gradient_accumulation_steps", type=int, default=1,
        help="only sets the default --train_batch_size; the accumulation used is derived from the global batch, the "
             "number of processes and --per_device_train_batch_size")
    add("--group_by_length", type=_bool, default=True)
    add("--length_group_size", type=int, default=50, help="megabatch = this many batches, sorted by length")
    add("--max_source_length", type=int, default=512)
    add("--max_target_length", type=int, default=32)
    add("--source_prefix", default="inputs: ")
    add("--eval_split", default="validation")
    add("--eval_steps", type=int, default=5000, help="0 = no evaluation during training")
    add("--eval_at_start", type=_bool, default=True, help="evaluate at step 0 (as the paper)")
    add("--eval_at_end", type=_bool, default=True, help="evaluate at the last step (--max_steps) too")
    add("--max_eval_samples", type=int, default=None)
    add("--per_device_eval_batch_size", type=int, default=64)
    add("--generation_max_new_tokens", type=int, default=None, help="default: --max_target_length")
    add("--generation_num_beams", type=int, default=1)
    add("--save_steps", type=int, default=5000)
    add("--save_total_limit", type=int, default=2)
    add("--resume", choices=("auto", "never"), default="auto",
        help="auto: continue from the newest checkpoint in output_dir")
    add("--logging_steps", type=int, default=10, help="TensorBoard/wandb/tqdm interval (the CSV gets every step)")
    add("--report_to", default="tensorboard", help="comma list of tensorboard, wandb, none (CSV is always written)")
    add("--run_name", default=None)
    add("--seed", type=int, default=42)
    add("--bf16", choices=("auto", "yes", "no"), default="auto")
    add("--tf32", type=_bool, default=True)
    add("--dataloader_num_workers", type=int, default=0)
    add("--progress", type=_bool, default=True)
    return p


def _bool(text):
    if isinstance(text, bool):
        return text
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_args(argv=None):
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        with open(first.config) as handle:
            config = json.load(handle)
        known = {action.dest for action in parser._actions}
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        unknown = sorted(set(config) - known)
        if unknown:
            parser.error(f"{first.config}: unknown option(s) {unknown}")
        parser.set_defaults(**config)
    args = parser.parse_args(argv)
    for required in ("data_dir", "output_dir", "model_name_or_path"):
        if not getattr(args, required):
            parser.error(f"--{required} is required (on the command line or in --config)")
    name = args.lr_scheduler
    if name in RESTART_NAMES:
        args.lr_scheduler = "restart"
    elif name not in SCHEDULERS:
        parser.error(f"--lr_scheduler {name!r}: choose one of {SCHEDULERS}")
    if args.paper_optimizer_pairing:
        args.optimizer = "adamw" if args.lr_scheduler == "restart" else "adafactor"
    if args.scheduler_step_unit < 1:
        parser.error("--scheduler_step_unit must be >= 1")
    if args.train_batch_size is not None and args.gradient_accumulation_steps != 1:
        parser.error("give --train_batch_size (the global batch) or --gradient_accumulation_steps, not both: the "
                     "accumulation is derived from the global batch")
    if args.train_batch_size is None:
        args.train_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if min(args.train_batch_size, args.per_device_train_batch_size, args.gradient_accumulation_steps) < 1:
        parser.error("--train_batch_size, --per_device_train_batch_size and --gradient_accumulation_steps must be >= 1")
    try:
        args.batch_layout = batch_layout(args.train_batch_size, int(os.environ.get("WORLD_SIZE", "1")),
                                         args.per_device_train_batch_size)
    except ValueError as exc:
        parser.error(str(exc))
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


# ------------------------------------------------------------------------------------------------------ distributed
class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, *values):
        """The values summed over all processes (one all-reduce, float64), as a list."""
        if self.world == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return total.tolist()


# ------------------------------------------------------------------------------------------------------ data
def load_data(args, tokenizer):
    import datasets

    data = datasets.load_dataset(args.data_dir)
    if "train" not in data:
        raise SystemExit(f"{args.data_dir}: no train split (found {list(data)}); prepare it with hyperrestart prepare-p3")
    if args.eval_split not in data and (args.eval_steps or args.eval_at_start or args.eval_at_end):
        if len(data) == 1:  # the released runner's fallback: hold out 0.2% and halve it (seeded here)
            held = data["train"].train_test_split(test_size=0.002, seed=args.seed)
            halves = held["test"].train_test_split(test_size=0.5, seed=args.seed)
            data = datasets.DatasetDict(train=held["train"], validation=halves["train"], test=halves["test"])
        else:
            raise SystemExit(f"{args.data_dir}: no {args.eval_split!r} split (found {list(data)})")
    for split in data.values():
        missing = {"inputs", "targets"} - set(split.column_names)
        if missing:
            raise SystemExit(f"{args.data_dir}: columns {sorted(missing)} missing (have {split.column_names})")

    def tokenize(batch):
        sources = tokenizer([args.source_prefix + text for text in batch["inputs"]],
                            max_length=args.max_source_length, truncation=True)
        targets = tokenizer(text_target=batch["targets"], max_length=args.max_target_length, truncation=True)
        return {"input_ids": sources["input_ids"], "labels": targets["input_ids"],
                "source_length": [len(ids) for ids in sources["input_ids"]]}

    out = {}
    for name in ("train", args.eval_split):
        if name not in data:
            continue
        split = data[name]
        if name != "train" and args.max_eval_samples:
            split = split.select(range(min(args.max_eval_samples, len(split))))
        if "task" not in split.column_names:
            split = split.add_column("task", ["all"] * len(split))
        out[name] = split.map(tokenize, batched=True, remove_columns=["inputs"], desc=f"tokenize {name}")
    return out


def epoch_batches(lengths, batch_size, epoch, seed, group_by_length, group_size):
    """One epoch's global batches (lists of `batch_size` row indices; an incomplete last one is dropped): a seeded
    permutation, cut into megabatches of `group_size` batches each sorted by length (so a batch holds similar
    lengths), batch order shuffled again. The same for any number of processes."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        mega = batch_size * group_size
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, math.ceil(len(order) / mega)))])
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order) - batch_size + 1, batch_size)]
    if not batches:
        raise SystemExit(f"train split has {len(lengths)} rows: fewer than one global batch of {batch_size}")
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class Batches(torch.utils.data.Dataset):
    """Per optimizer step of one epoch, from a position on (exact resume): this process's collated micro-batches.
    Process r of N takes rows r, r+N, ... of the global batch (similar lengths on every process)."""

    def __init__(self, dataset, batches, start, layout, rank, pad_id, pad_multiple):
        self.dataset, self.batches, self.start = dataset, batches, start
        self.world, self.rank, self.micro = layout["world_size"], rank, layout["micro_batch"]
        self.pad_id, self.pad_multiple = pad_id, pad_multiple

    def __len__(self):
        return len(self.batches) - self.start

    def __getitem__(self, i):
        rows = self.dataset[self.batches[self.start + i][self.rank::self.world]]
        return [collate(rows["input_ids"][j:j + self.micro], rows["labels"][j:j + self.micro], self.pad_id,
                        self.pad_multiple) for j in range(0, len(rows["input_ids"]), self.micro)]


def collate(sources, targets, pad_id, pad_multiple=1):
    def pad(seqs, value):
        width = max(len(s) for s in seqs)
        width = int(math.ceil(width / pad_multiple) * pad_multiple)
        return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

    input_ids = pad(sources, pad_id)
    width = input_ids.shape[1]
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sources], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": pad(targets, -100)}


# ------------------------------------------------------------------------------------------------------ model
def load_model(args, source, tokenizer, tasks):
    if args.model == "t5":
        from transformers import T5ForConditionalGeneration

        return T5ForConditionalGeneration.from_pretrained(source)
    tree = Path(args.hyperdecoders_path) if args.hyperdecoders_path else HERE
    if not (tree / "modeling" / "adapter_t5.py").exists():
        raise SystemExit(f"--model hyperdecoder needs hyperdecoders' adapter T5: {tree}/modeling/adapter_t5.py is "
                         "missing; run this file inside upstream/hyperdecoders/hyperdecoder or pass "
                         "--hyperdecoders_path (python bootstrap.py materialises the tree)")
    sys.path.insert(0, str(tree))
    from modeling.adapter_t5 import T5ForConditionalGenerationWithAdapter, T5WithAdapterConfig

    adapter = dict(HDCONFIG_ADAPTER_DEFAULTS)
    if args.hdconfig:
        with open(args.hdconfig) as handle:
            given = json.load(handle)
        adapter.update({k: v for k, v in given.items() if k in HDCONFIG_ADAPTER_DEFAULTS})
    if adapter["freeze_model"]:
        raise SystemExit("freeze_model=true is not supported by the P3 runner (the paper's hdconfig trains everything)")
    config = T5WithAdapterConfig.from_pretrained(source)
    config.update({k: v for k, v in adapter.items() if not k.startswith(("freeze", "unfreeze"))})
    config.update({"tasks": sorted(tasks)})
    return T5ForConditionalGenerationWithAdapter.from_pretrained(source, config=config)


def build_optimizer(args, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                 betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=args.learning_rate, scale_parameter=False, relative_step=False, warmup_init=False,
                     weight_decay=0.0)


def build_scheduler(args, optimizer):
    """lr scheduler counted in scheduler steps (one per --scheduler_step_unit optimizer steps)."""
    unit = args.scheduler_step_unit
    total = args.max_steps // unit
    if args.lr_scheduler == "restart":
        RestartScheduler, check_alignment = import_restart_scheduler()
        if args.max_steps % unit:
            message = (f"max_steps={args.max_steps} is not a multiple of scheduler_step_unit={unit}: the run stops "
                       f"inside a scheduler step, not at a restart cycle end")
            warnings.warn(message)
            logger.warning(message)
        else:
            check_alignment(total, args.restart_t0, args.restart_t_mult, args.restart_warmup_steps,
                            unit=f"scheduler steps of {unit} optimizer steps")
        return RestartScheduler(optimizer, t_0=args.restart_t0, t_mult=args.restart_t_mult, eta_min=args.eta_min,
                                warmup_steps=args.restart_warmup_steps)
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup" if args.warmup_steps else "constant"}.get(
        args.lr_scheduler, args.lr_scheduler)
    kwargs = {"power": args.polynomial_power, "lr_end": args.eta_min} if name == "polynomial" else None
    return get_scheduler(name, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=max(total, 1),
                         scheduler_specific_kwargs=kwargs)


# ------------------------------------------------------------------------------------------------------ checkpoints
def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(output_dir):
    found = [(int(p.name.split("-")[1]), p) for p in Path(output_dir).glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.pt").exists()]
    return [p for _, p in sorted(found)]


def save_checkpoint(args, dist, model, tokenizer, optimizer, scheduler, state):
    """OUTPUT_DIR/checkpoint-STEP (written to a temp folder, then renamed); rank 0 writes, RNG per rank."""
    step = state["step"]
    final = Path(args.output_dir) / f"checkpoint-{step}"
    tmp = Path(args.output_dir) / f".checkpoint-{step}.tmp"
    rngs = [None] * dist.world
    if dist.world > 1:
        torch.distributed.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        unwrap(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({"state": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rngs, "args": vars(args)}, tmp / "trainer_state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(args.output_dir)[:-args.save_total_limit] if args.save_total_limit else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def truncate_csv(path, max_step):
    """Keep the header and the rows up to max_step (a resumed run rewrites what followed its checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
        fields = rows and list(rows[0]) or None
    if fields is None:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= max_step)


class CsvLog:
    def __init__(self, path, fields):
        self.path, self.fields = Path(path), fields
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.handle = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=fields)
        if new:
            self.writer.writeheader()

    def write(self, row):
        self.writer.writerow({k: row.get(k) for k in self.fields})
        self.handle.flush()

    def close(self):
        self.handle.close()


# ------------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(args, model, tokenizer, dataset, device, autocast, step):
    model = unwrap(model)
    was_training = model.training
    model.eval()
    start = time.time()
    order = np.argsort(-np.asarray(dataset["source_length"]), kind="stable")
    predictions = [None] * len(dataset)
    generation = {"max_new_tokens": args.generation_max_new_tokens, "num_beams": args.generation_num_beams,
                  "do_sample": False}
    for begin in range(0, len(order), args.per_device_eval_batch_size):
        idx = order[begin:begin + args.per_device_eval_batch_size].tolist()
        rows = dataset[idx]
        batch = collate(rows["input_ids"], rows["labels"], tokenizer.pad_token_id)
        extra = {"tasks": rows["task"]} if args.model == "hyperdecoder" else {}
        with autocast():
            output = model.generate(input_ids=batch["input_ids"].to(device),
                                    attention_mask=batch["attention_mask"].to(device), **generation, **extra)
        for i, text in zip(idx, tokenizer.batch_decode(output, skip_special_tokens=True)):
            predictions[i] = text
    references, tasks = dataset["targets"], dataset["task"]
    result = rouge_l(predictions, references, tasks)
    scores = result.pop("scores")
    result.update(step=step, eval_seconds=round(time.time() - start, 3), generation=generation,
                  metric="rouge_score RougeScorer(['rougeL'], use_stemmer=True) F-measure, mean x 100")
    folder = Path(args.output_dir) / "eval"
    folder.mkdir(exist_ok=True)
    (folder / f"step_{step}.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(folder / f"step_{step}_predictions.jsonl", "w") as handle:
        for task, ref, pred, score in zip(tasks, references, predictions, scores):
            handle.write(json.dumps({"task": task, "target": ref, "prediction": pred, "rougeL": score}) + "\n")
    if was_training:
        model.train()
    return result


# ------------------------------------------------------------------------------------------------------ training
def main(argv=None):
    args = parse_args(argv)
    dist = Dist()
    device = dist.device
    layout = args.batch_layout
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported() and args.bf16 != "no"
    if args.bf16 == "yes" and not use_bf16:
        logger.warning("--bf16 yes: no bf16-capable GPU here; training in float32")
    if device.type == "cuda" and args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16) if device.type == "cuda" \
            else torch.autocast("cpu", enabled=False)

    resume_from = checkpoints(output_dir)[-1] if args.resume == "auto" and checkpoints(output_dir) else None
    from transformers import AutoTokenizer, set_seed

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    data = load_data(args, tokenizer)
    train, evalset = data["train"], data.get(args.eval_split)
    tasks = sorted(set(train.unique("task")) | (set(evalset.unique("task")) if evalset is not None else set()))
    model = load_model(args, str(resume_from or args.model_name_or_path), tokenizer, tasks).to(device)
    model.train()
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=args.model == "hyperdecoder")
    optimizer = build_optimizer(args, model)
    scheduler = build_scheduler(args, optimizer)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "scheduler_steps": 0}
    if resume_from:
        saved = torch.load(resume_from / "trainer_state.pt", map_location="cpu", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        set_rng_state(saved["rng"][dist.rank] if len(saved["rng"]) > dist.rank else saved["rng"][0])
        logger.info("resumed from %s at step %d", resume_from, state["step"])
    if dist.main:
        truncate_csv(output_dir / "train_log.csv", state["step"])
        truncate_csv(output_dir / "eval_log.csv", state["step"])
        run_info = {"args": vars(args), "world_size": dist.world, "batch_layout": layout, "device": str(device),
                    "bf16": use_bf16,
                    "train_rows": len(train), "eval_rows": len(evalset) if evalset is not None else 0,
                    "num_parameters": sum(p.numel() for p in model.parameters()),
                    "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        (output_dir / "run_config.json").write_text(json.dumps(run_info, indent=1, default=str) + "\n")
    train_log = CsvLog(output_dir / "train_log.csv", TRAIN_LOG_FIELDS) if dist.main else None
    eval_log = CsvLog(output_dir / "eval_log.csv", EVAL_LOG_FIELDS) if dist.main else None
    reporters = make_reporters(args, output_dir) if dist.main else []
    logger.info("global batch %d examples per optimizer step: %d process(es) x %d micro-batch(es) of %d",
                layout["global_batch"], dist.world, layout["accumulation"], layout["micro_batch"])

    def run_eval(step):
        if evalset is not None and dist.main:
            result = evaluate(args, model, tokenizer, evalset, device, autocast, step)
            eval_log.write(result)
            for report in reporters:
                report({"eval/rougeL_micro": result["rougeL_micro"], "eval/rougeL_macro": result["rougeL_macro"]}, step)
            logger.info("step %d: Rouge-L micro %.3f macro %.3f (%d examples)", step, result["rougeL_micro"],
                        result["rougeL_macro"], result["num_examples"])
        dist.barrier()

    if state["step"] == 0 and args.eval_at_start:
        run_eval(0)

    lengths = np.asarray(train["source_length"])
    pad_multiple = 8 if device.type == "cuda" else 1
    end_step = min(args.max_steps, args.stop_at_step or args.max_steps)
    bar = None
    if args.progress and dist.main:
        from tqdm import tqdm
        bar = tqdm(total=end_step, initial=state["step"], desc=f"p3 {args.model} {args.lr_scheduler}", unit="step")
    started, tokens_since, time_since = time.time(), 0, time.time()

    def step_batches():
        while True:
            batches = epoch_batches(lengths, args.train_batch_size, state["epoch"], args.seed, args.group_by_length,
                                    args.length_group_size)
            loader = torch.utils.data.DataLoader(
                Batches(train, batches, state["batch_in_epoch"], layout, dist.rank, tokenizer.pad_token_id,
                        pad_multiple),
                batch_size=None, shuffle=False, num_workers=args.dataloader_num_workers,
                # its own generator: creating the iterator must not draw from the global RNG (exact resume)
                generator=torch.Generator().manual_seed(args.seed + state["epoch"]))
            for group in loader:
                state["batch_in_epoch"] += 1
                yield group
            state["epoch"] += 1
            state["batch_in_epoch"] = 0

    stream = step_batches()
    while state["step"] < end_step:
        group = next(stream)
        # the loss is the token-weighted mean over the global batch; DDP averages gradients over processes, so each
        # process scales its sum by world / (the global batch's target tokens)
        total_tokens = max(int(dist.sum(sum(int((b["labels"] != -100).sum()) for b in group))[0]), 1)
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = 0.0
        for i, batch in enumerate(group):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = dist.world == 1 or i == len(group) - 1
            context = model.no_sync() if not sync else _null()
            with context, autocast():
                out = model(**batch, use_cache=False)  # teacher forcing needs no cache (and the adapter T5 breaks with one)
                n_tokens = int((batch["labels"] != -100).sum())
                loss = out.loss.float() * n_tokens / total_tokens
            (loss * dist.world).backward()
            loss_sum += float(loss.detach())
        if args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        if state["step"] % args.scheduler_step_unit == 0:
            scheduler.step()
            state["scheduler_steps"] += 1
        loss_sum, source_tokens, padded, examples = dist.sum(
            loss_sum, sum(int(b["attention_mask"].sum()) for b in group),
            sum(b["input_ids"].numel() + b["labels"].numel() for b in group), sum(len(b["input_ids"]) for b in group))
        source_tokens, padded, examples, target_tokens = int(source_tokens), int(padded), int(examples), total_tokens
        tokens_since += source_tokens + target_tokens
        if dist.main:
            now = time.time()
            row = {"step": state["step"], "epoch": state["epoch"], "loss": loss_sum, "lr": lr,
                   "scheduler_steps": state["scheduler_steps"], "target_tokens": target_tokens,
                   "source_tokens": source_tokens, "nonpad_fraction": (source_tokens + target_tokens) / padded,
                   "tokens_per_s": tokens_since / max(now - time_since, 1e-9), "elapsed_s": now - started,
                   "examples": examples}
            train_log.write(row)
            if state["step"] % args.logging_steps == 0 or state["step"] == end_step:
                for report in reporters:
                    report({"train/loss": loss_sum, "train/lr": lr, "train/tokens_per_s": row["tokens_per_s"]},
                           state["step"])
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{lr:.3g}", tok_s=f"{row['tokens_per_s']:.0f}")
                tokens_since, time_since = 0, now
            if bar is not None:
                bar.update()
        if (args.eval_steps and state["step"] % args.eval_steps == 0) or \
                (args.eval_at_end and state["step"] == args.max_steps):
            run_eval(state["step"])
        if (args.save_steps and state["step"] % args.save_steps == 0) or state["step"] == end_step:
            save_checkpoint(args, dist, model, tokenizer, optimizer, scheduler, state)
    if bar is not None:
        bar.close()
    if dist.main and state["step"] >= args.max_steps:
        unwrap(model).save_pretrained(output_dir / "final_model", safe_serialization=True)
        tokenizer.save_pretrained(output_dir / "final_model")
    for close in reporters + [train_log, eval_log]:
        getattr(close, "close", lambda: None)()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_reporters(args, output_dir):
    wanted = {name.strip() for name in args.report_to.split(",") if name.strip() and name.strip() != "none"}
    unknown = wanted - {"tensorboard", "wandb"}
    if unknown:
        raise SystemExit(f"--report_to: unknown {sorted(unknown)} (use tensorboard, wandb, none)")
    reporters = []
    if "tensorboard" in wanted:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "tensorboard"))

        def tensorboard(values, step):
            for key, value in values.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        tensorboard.close = writer.close
        reporters.append(tensorboard)
    if "wandb" in wanted:
        import wandb

        run = wandb.init(name=args.run_name, config=vars(args), dir=str(output_dir), resume="allow")

        def report_wandb(values, step):
            run.log(values, step=step)
        report_wandb.close = run.finish
        reporters.append(report_wandb)
    return reporters


if __name__ == "__main__":
    # configured here, not in main(): a caller in the same process (tests, notebooks) keeps its own logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())

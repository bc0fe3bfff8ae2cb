"""A P3 run as a short sequence of named steps (main), and the training loop with its periodic evaluation and
checkpoints."""
import logging
import time
from pathlib import Path

import torch

from .arguments import parse_args
from .checkpoints import detect_checkpoint, restore, save_checkpoint, unwrap
from .data import Batches, TrainStream, load_data
from .distributed import Dist, NullContext
from .evaluation import evaluate
from .logs import EVAL_LOG_FIELDS, TRAIN_LOG_FIELDS, CsvLog, make_reporters, truncate_csv, write_run_config
from .model import build_optimizer, load_model
from .schedules import build_scheduler

logger = logging.getLogger("p3_trainer")


class Run:
    """What the steps of one run share: options, processes, data, model, optimizer, training state, logs."""

    def __init__(self, args):
        self.args = args
        self.output_dir = Path(args.output_dir)
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "scheduler_steps": 0}
        self.train_log = self.eval_log = None
        self.reporters = []
        self.diagnostics = None


def main(argv=None):
    """Parse, set up, detect a checkpoint, load data, load the model, evaluate at step 0, train (evaluating and
    saving on the way), save the final model."""
    run = Run(parse_args(argv))
    set_up(run)
    checkpoint = detect_checkpoint(run.args)
    load_tokenizer_and_data(run)
    load_model_and_optimizer(run, checkpoint)
    run.state["data_stream"] = run.stream.describe
    if checkpoint:
        run.state = restore(checkpoint, run.optimizer, run.scheduler, run.dist.rank, run.args)
        check_stream(checkpoint, run.state, run.stream)
    open_logs(run)
    make_diagnostics(run, checkpoint)
    if run.state["step"] == 0 and run.args.eval_at_start:
        run_evaluation(run, 0)
    train(run)
    save_final_model(run)
    close(run)
    return 0


def set_up(run):
    """Processes and device, precision (bf16 autocast, TF32 where the GPU has them)."""
    args = run.args
    run.dist = Dist()
    run.device = device = run.dist.device
    run.use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported() and args.bf16 != "no"
    if args.bf16 == "yes" and not run.use_bf16:
        logger.warning("--bf16 yes: no bf16-capable GPU here; training in float32")
    if device.type == "cuda" and args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(run):
    """bf16 autocast on a GPU that has it; nothing on the CPU."""
    if run.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.use_bf16)
    return torch.autocast("cpu", enabled=False)


def load_tokenizer_and_data(run):
    """Seed everything, then the tokenizer and the tokenized train and eval splits."""
    args = run.args
    logger.info("loading the tokenizer and data (%s)", args.data_dir)
    from transformers import AutoTokenizer, set_seed

    set_seed(args.seed)
    run.tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    data = load_data(args, run.tokenizer)
    run.train, run.evalset = data["train"], data.get(args.eval_split)
    run.stream = TrainStream(args, run.train)
    logger.info("training data: %s", run.stream.describe)


def check_stream(checkpoint, state, stream):
    """A resume continues the stream its checkpoint was cut from (same data, same --mixing), or stops in one line."""
    saved = state.setdefault("data_stream", "epochs: every train row once per epoch")  # older checkpoints: epochs
    if saved != stream.describe:
        raise SystemExit(f"{checkpoint} was saved training on [{saved}], but this run would train on "
                         f"[{stream.describe}]; resume with the same data and --mixing, or start a new --output_dir")


def load_model_and_optimizer(run, checkpoint):
    """The model (from the checkpoint when resuming), wrapped in DDP under several processes; optimizer, scheduler."""
    args = run.args
    logger.info("loading the model (%s)", checkpoint or args.model_name_or_path)
    tasks = set(run.train.unique("task")) | (set(run.evalset.unique("task")) if run.evalset is not None else set())
    model = load_model(args, str(checkpoint or args.model_name_or_path), run.tokenizer, sorted(tasks))
    model = model.to(run.device)
    model.train()
    if run.dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.dist.local_rank] if run.device.type == "cuda" else None,
            find_unused_parameters=args.model == "hyperdecoder")
    run.model = model
    run.optimizer = build_optimizer(args, model)
    run.scheduler = build_scheduler(args, run.optimizer)


def open_logs(run):
    """The output folder (made only now, once the data and model loaded: a run that fails earlier leaves none); rank
    0: logs cut back to the resumed step, run_config.json, CSV logs, TensorBoard/wandb."""
    args, dist, layout = run.args, run.dist, run.args.batch_layout
    run.output_dir.mkdir(parents=True, exist_ok=True)
    if dist.main:
        truncate_csv(run.output_dir / "train_log.csv", run.state["step"])
        truncate_csv(run.output_dir / "eval_log.csv", run.state["step"])
        write_run_config(run.output_dir, args, dist, run.device, run.use_bf16, run.train, run.evalset, run.model)
        run.train_log = CsvLog(run.output_dir / "train_log.csv", TRAIN_LOG_FIELDS)
        run.eval_log = CsvLog(run.output_dir / "eval_log.csv", EVAL_LOG_FIELDS)
        run.reporters = make_reporters(args, run.output_dir)
    logger.info("global batch %d examples per optimizer step: %d process(es) x %d micro-batch(es) of %d",
                layout["global_batch"], dist.world, layout["accumulation"], layout["micro_batch"])


def make_diagnostics(run, checkpoint):
    """Per-step, per-parameter-space diagnostics (trainer_hooks, as in the upstream trainers), written by rank 0."""
    if not run.args.step_diagnostics:
        return
    from .schedules import trainer_hooks

    run.diagnostics = trainer_hooks().make_diagnostics(
        unwrap(run.model), run.optimizer, run.scheduler, run.args, str(run.output_dir), run.state["step"],
        run.dist.main, str(checkpoint) if checkpoint else None)


def run_evaluation(run, step):
    """Rank 0 evaluates (eval_log.csv, reporters, one log line); every process waits for it."""
    if run.evalset is not None and run.dist.main:
        logger.info("step %d: evaluating (%d examples)", step, len(run.evalset))
        result = evaluate(run.args, run.model, run.tokenizer, run.evalset, run.device, lambda: autocast(run), step)
        run.eval_log.write(result)
        for report in run.reporters:
            report({"eval/rougeL_micro": result["rougeL_micro"], "eval/rougeL_macro": result["rougeL_macro"]}, step)
        logger.info("step %d: Rouge-L micro %.3f macro %.3f (%d examples)", step, result["rougeL_micro"],
                    result["rougeL_macro"], result["num_examples"])
    run.dist.barrier()


def step_batches(run):
    """This process's micro-batches of each optimizer step, epoch after epoch (under mixing: block after block of the
    mixture), from the saved data position."""
    args, state = run.args, run.state
    pad_multiple = 8 if run.device.type == "cuda" else 1
    while True:
        batches = run.stream.batches(state["epoch"])
        loader = torch.utils.data.DataLoader(
            Batches(run.train, batches, state["batch_in_epoch"], args.batch_layout, run.dist.rank,
                    run.tokenizer.pad_token_id, pad_multiple),
            batch_size=None, shuffle=False, num_workers=args.dataloader_num_workers,
            # its own generator: creating the iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(args.seed + state["epoch"]))
        for group in loader:
            state["batch_in_epoch"] += 1
            yield group
        state["epoch"] += 1
        state["batch_in_epoch"] = 0


def optimizer_step(run, group):
    """One optimizer step on the global batch (this process's micro-batches `group`); returns the training-log row
    values summed over processes: (loss, lr, target, source and padded tokens, examples)."""
    dist, model, optimizer = run.dist, run.model, run.optimizer
    # the loss is the token-weighted mean over the global batch; DDP averages gradients over processes, so each
    # process scales its sum by world / (the global batch's target tokens)
    total_tokens = max(int(dist.sum(sum(int((b["labels"] != -100).sum()) for b in group))[0]), 1)
    lr = optimizer.param_groups[0]["lr"]
    loss_sum = 0.0
    for i, batch in enumerate(group):
        batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
        sync = dist.world == 1 or i == len(group) - 1
        context = model.no_sync() if not sync else NullContext()
        with context, autocast(run):
            out = model(**batch, use_cache=False)  # teacher forcing needs no cache (and the adapter T5 breaks with one)
            n_tokens = int((batch["labels"] != -100).sum())
            loss = out.loss.float() * n_tokens / total_tokens
        (loss * dist.world).backward()
        loss_sum += float(loss.detach())
    loss_sum, source_tokens, padded, examples = dist.sum(
        loss_sum, sum(int(b["attention_mask"].sum()) for b in group),
        sum(b["input_ids"].numel() + b["labels"].numel() for b in group), sum(len(b["input_ids"]) for b in group))
    if run.diagnostics is not None:  # gradients final, before clipping
        run.diagnostics.on_gradients()
    if run.args.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.args.max_grad_norm)
    optimizer.step()
    unit, step = run.args.scheduler_step_unit, run.state["step"] + 1
    if run.diagnostics is not None or getattr(run.scheduler, "observes", ()):
        from .schedules import trainer_hooks

        # the restart mark on the first optimizer step of a scheduler step; an adaptive restart observes the
        # optimizer step that ends a scheduler step
        trainer_hooks().observe_step(run.diagnostics, run.scheduler, step, torch.tensor(float(loss_sum)),
                                   feed=step % unit == 0, mark=(step - 1) % unit == 0)
    optimizer.zero_grad(set_to_none=True)
    run.state["step"] = step
    if step % unit == 0:
        run.scheduler.step()
        run.state["scheduler_steps"] += 1
    return loss_sum, lr, total_tokens, int(source_tokens), int(padded), int(examples)


def train(run):
    """Optimizer steps up to --max_steps (or --stop_at_step): every step logged, evaluated every --eval_steps and at
    --max_steps, a checkpoint every --save_steps and at the last step."""
    args, state, dist = run.args, run.state, run.dist
    end_step = min(args.max_steps, args.stop_at_step or args.max_steps)
    bar = None
    if args.progress and dist.main:
        from tqdm import tqdm
        bar = tqdm(total=end_step, initial=state["step"], desc=f"p3 {args.model} {args.lr_scheduler}", unit="step")
    started, tokens_since, time_since = time.time(), 0, time.time()
    stream = step_batches(run)
    while state["step"] < end_step:
        loss_sum, lr, target_tokens, source_tokens, padded, examples = optimizer_step(run, next(stream))
        tokens_since += source_tokens + target_tokens
        if dist.main:
            now = time.time()
            row = {"step": state["step"], "epoch": state["epoch"], "loss": loss_sum, "lr": lr,
                   "scheduler_steps": state["scheduler_steps"], "target_tokens": target_tokens,
                   "source_tokens": source_tokens, "nonpad_fraction": (source_tokens + target_tokens) / padded,
                   "tokens_per_s": tokens_since / max(now - time_since, 1e-9), "elapsed_s": now - started,
                   "examples": examples}
            run.train_log.write(row)
            if state["step"] % args.logging_steps == 0 or state["step"] == end_step:
                for report in run.reporters:
                    report({"train/loss": loss_sum, "train/lr": lr, "train/tokens_per_s": row["tokens_per_s"]},
                           state["step"])
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{lr:.3g}", tok_s=f"{row['tokens_per_s']:.0f}")
                tokens_since, time_since = 0, now
            if bar is not None:
                bar.update()
        if (args.eval_steps and state["step"] % args.eval_steps == 0) or \
                (args.eval_at_end and state["step"] == args.max_steps):
            run_evaluation(run, state["step"])
        if (args.save_steps and state["step"] % args.save_steps == 0) or state["step"] == end_step:
            save_checkpoint(args, dist, run.model, run.tokenizer, run.optimizer, run.scheduler, state,
                            run.diagnostics)
    if bar is not None:
        bar.close()


def save_final_model(run):
    """OUTPUT_DIR/final_model once the run reached --max_steps (rank 0)."""
    if run.dist.main and run.state["step"] >= run.args.max_steps:
        logger.info("saving the final model (%s)", run.output_dir / "final_model")
        unwrap(run.model).save_pretrained(run.output_dir / "final_model", safe_serialization=True)
        run.tokenizer.save_pretrained(run.output_dir / "final_model")


def close(run):
    """Close the logs and reporters; leave the process group."""
    for item in run.reporters + [run.train_log, run.eval_log, run.diagnostics]:
        getattr(item, "close", lambda: None)()
    if run.dist.world > 1:
        torch.distributed.destroy_process_group()

#!/usr/bin/env python
"""P3 instruction tuning with or without the restart schedule (Zhang et al., NAACL 2025, Sec. 4.1, Table 2, Fig. 4/5).

A hyperrestart overlay file, dropped into hyperdecoders as hyperdecoder/p3_trainer.py so `--model hyperdecoder` can use
that tree's adapter T5 (modeling/adapter_t5.py); `--model t5` is plain T5ForConditionalGeneration and runs anywhere.

    python p3_trainer.py --data_dir P3_PREPARED --model_name_or_path google/flan-t5-base --model t5 \
        --lr_scheduler cosine_annual_w_restarts --output_dir runs/t5_restart \
        [--config configs/p3/table2_t5_restart.json]    (or: python p3_trainer.py ARGS.json)

Training: real batches (length-grouped, padded to the batch's longest), gradient accumulation, token-weighted loss,
bf16 autocast + TF32 on GPUs that have them, DDP under torchrun. The lr scheduler is stepped once every
`--scheduler_step_unit` optimizer steps (the released runner: 10,000 batch-1 steps). Evaluation (at step 0, every
`--eval_steps` and at the last step): greedy generation, Rouge-L exactly as the paper (rouge_score, rougeL, stemmer,
F-measure, mean x 100), micro and per-task macro.

Any number of processes (torchrun --nproc_per_node N) trains the same recipe (not bit-identical losses: dropout
masks and the order of sums differ; see README): the batch is GLOBAL. One optimizer step
consumes --train_batch_size examples (default: per_device_train_batch_size x gradient_accumulation_steps, so a config
written for one process keeps its meaning), split evenly over the N processes; each process runs its share in
micro-batches of at most --per_device_train_batch_size with gradient accumulation making up the rest. The loss is the
token-weighted mean over the whole global batch. --max_steps, --scheduler_step_unit, --eval_steps and --save_steps
count optimizer steps of that global batch, so they (and the lr sequence) are the same for any N. The global batch
must be divisible by N, and each process's share by its micro-batch (an error says so). The logged loss and token
counts are over all processes. Checkpoints resume exactly: model, optimizer, scheduler, RNG states and data position.
Logs: OUTPUT_DIR/train_log.csv, eval_log.csv, eval/step_N.json(l), TensorBoard; wandb only with --report_to wandb.

This file is the entry script; the runner's parts are the package p3_runner/ beside it (arguments, schedules, data,
model, checkpoints, evaluation, logs, train, batching, mixing). `python p3_trainer.py --help` lists the options.
"""
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # loaded by path (hyperrestart.p3.runner), not run as a script: find p3_runner/
    sys.path.append(str(HERE))

from p3_runner.lifeline import guard_worker  # noqa: E402

if __name__ == "__main__":
    guard_worker()  # first: a torchrun worker must not outlive its launcher, even while it imports torch

from p3_runner.arguments import batch_layout, build_parser, parse_args  # noqa: E402
from p3_runner.data import collate, epoch_batches, load_data  # noqa: E402
from p3_runner.evaluation import rouge_l  # noqa: E402
from p3_runner.model import HDCONFIG_ADAPTER_DEFAULTS  # noqa: E402
from p3_runner.schedules import build_scheduler  # noqa: E402
from p3_runner.train import main  # noqa: E402

__all__ = ["HDCONFIG_ADAPTER_DEFAULTS", "batch_layout", "build_parser", "build_scheduler", "collate", "epoch_batches",
           "load_data", "main", "parse_args", "rouge_l"]

if __name__ == "__main__":
    # configured here, not in main(): a caller in the same process (tests, notebooks) keeps its own logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge_score: "Using default tokenizer." at every evaluation
    sys.exit(main())

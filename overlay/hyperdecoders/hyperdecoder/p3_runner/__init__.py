"""The P3 runner's parts, one concern each; p3_trainer.py (beside this folder) is the entry script.

arguments   the options: ModelArguments / DataArguments / P3TrainingArguments read by HfArgumentParser
schedules   the lr schedule (the restart scheduler's one name table, transformers' schedules)
distributed the processes (torchrun/DDP) and their all-reduce
lifeline    every process dies with the one that started it (parent-death signal)
data        prepared P3 -> tokenized splits, the train stream (epochs or T0 mixing), collation
batching    which rows form each global batch: every row once per epoch, or T0's mixture; length-grouped
mixing      T0's examples-proportional sampler and the checks of a manifest's mixing rates
model       T5 or hyperdecoders' adapter T5, the optimizer
checkpoints checkpoint folders, RNG states, exact resume
resume_changes  what a resume may change (--resume_allowed_changes; PBT exploits)
evaluation  greedy generation and the paper's Rouge-L
logs        train/eval CSV logs, run_config.json, TensorBoard / wandb
train       main(): the named steps of a run, and the training loop
"""

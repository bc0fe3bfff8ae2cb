"""`hyperrestart analyse` inside an upstream tree: `python hyperrestart_analyse.py JOB.json` (cwd: the script's
folder, PYTHONPATH: the tree's and hyperrestart's checkout).

It runs the upstream's own training script on the run's config with the Trainer's `train` replaced: the model is
built, loaded and frozen exactly as in the run, the batches are the run's first training batches (its seed, sampler
and collator), the loss is the trainer's own training loss (label smoothing included) with dropout off; then
hyperrestart.analysis.worker does the job. Under torchrun each process runs the script as a single process (the
launcher's variables are removed first) and takes its share of the landscape's grid points.
"""
import importlib
import itertools
import os
import sys

SCRIPTS = {  # upstream -> (training script module, module of its T5Trainer)
    "hyperdecoders": ("finetune_trainer", "third_party.trainers.t5_trainer"),
    "hyperformer": ("hyperformer.finetune_t5_trainer", "hyperformer.third_party.trainers.t5_trainer"),
}
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                      "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                      "TORCHELASTIC_USE_AGENT_STORE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")


class _Analysed(Exception):
    """Raised by the replaced `train` once the job is done, ending the training script there."""


def single_process():
    """(rank, world) from torchrun's variables, which are then removed; on a GPU node each process keeps one GPU."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    for key in LAUNCHER_VARIABLES:
        os.environ.pop(key, None)
    if world > 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            import torch
            if torch.cuda.device_count() > 1:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(local % torch.cuda.device_count())
        elif visible.strip():
            devices = [d for d in visible.split(",") if d.strip()]
            os.environ["CUDA_VISIBLE_DEVICES"] = devices[local % len(devices)]
    return rank, world


def p3_job(job, rank, world):
    """The P3 runner's run (hyperdecoders tree): its model, tokenizer and data built as p3_runner.train does (same
    seed and order), batches = the micro-batches of its first optimizer steps, loss = the model's loss."""
    import argparse
    import json
    import numpy as np
    import torch
    from p3_runner.data import Batches, epoch_batches, load_data
    from p3_runner.model import load_model
    from transformers import AutoTokenizer, set_seed
    from hyperrestart.analysis import worker
    with open(job["config_file"], encoding="utf-8") as handle:
        args = argparse.Namespace(**json.load(handle))
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    data = load_data(args, tokenizer)
    train, evalset = data["train"], data.get(args.eval_split)
    tasks = sorted(set(train.unique("task")) | (set(evalset.unique("task")) if evalset is not None else set()))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args, str(args.model_name_or_path), tokenizer, tasks).to(device)
    order = epoch_batches(np.asarray(train["source_length"]), args.train_batch_size, 0, args.seed,
                                     args.group_by_length, args.length_group_size)
    layout = {"world_size": 1, "micro_batch": args.per_device_train_batch_size}
    steps = Batches(train, order, 0, layout, 0, tokenizer.pad_token_id, 1)
    batches = []
    for i in range(len(steps)):
        batches += [{k: v.to(device) for k, v in micro.items()} for micro in steps[i]]
        if len(batches) >= int(job["batches"]):
            break
    worker.run(job, model, lambda m, batch: m(**batch, use_cache=False).loss, batches[:int(job["batches"])], rank,
               world)
    return 0


def main(job_path):
    rank, world = single_process()
    from hyperrestart.analysis import worker
    job = worker.load_job(job_path)
    if job["upstream"] == "p3":
        return p3_job(job, rank, world)
    script_module, trainer_module = SCRIPTS[job["upstream"]]
    trainer_class = importlib.import_module(trainer_module).T5Trainer

    def analyse(self, *args, **kwargs):
        loader = self.get_train_dataloader()
        batches = [self._prepare_inputs(batch) for batch in itertools.islice(loader, int(job["batches"]))]
        worker.run(job, self.model, lambda model, batch: self.compute_loss(model, dict(batch)), batches, rank, world)
        raise _Analysed()

    trainer_class.train = analyse
    sys.argv = [script_module.split(".")[-1] + ".py", job["config_file"]]
    try:
        importlib.import_module(script_module).main()
    except _Analysed:
        return 0
    sys.stderr.write("hyperrestart_analyse: the training script ended without calling train() "
                     "(is do_train false in the run's config?)\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

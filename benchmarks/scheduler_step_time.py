"""Per-step cost of the restart scheduler: a tiny-T5 training step (forward, backward, AdamW, scheduler.step) with
RestartScheduler vs transformers' constant schedule. Same model, data and seed; the two arms are stepped alternately
(A B B A ...) so machine load hits both alike, over several repeats; each repeat's median step time is taken. Target: ratio restart/constant <= 1.01.

    python benchmarks/scheduler_step_time.py [--steps 100] [--repeats 6] [--device cpu|cuda] [--threads 1]

Also prints the cost of scheduler.step() alone (what the restart scheduler adds to a step).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_batch(tokenizer, device, batch_size=16):
    import datasets
    from hyperrestart.upstream.tiny import tiny_glue_dir
    rows = datasets.load_dataset(str(tiny_glue_dir() / "glue"), "rte", split="train").select(range(batch_size))
    sources = [f"rte sentence1: {r['sentence1']} sentence2: {r['sentence2']}" for r in rows]
    batch = tokenizer(sources, padding=True, truncation=True, max_length=64, return_tensors="pt")
    batch["labels"] = tokenizer([str(r["label"]) for r in rows], padding=True, return_tensors="pt").input_ids
    return {k: v.to(device) for k, v in batch.items()}


def make_scheduler(kind, optimizer):
    if kind == "restart":
        from hyperrestart.upstream.scheduler import RestartScheduler
        return RestartScheduler(optimizer, t_0=1, t_mult=2, eta_min=1e-6)
    from transformers import get_constant_schedule
    return get_constant_schedule(optimizer)


class Arm:
    """One training setup: its own copy of the model (same initial weights), AdamW and scheduler."""

    def __init__(self, kind, model_dir, initial, device):
        import torch
        from transformers import T5ForConditionalGeneration
        self.kind = kind
        self.model = T5ForConditionalGeneration.from_pretrained(str(model_dir)).to(device).train()
        self.model.load_state_dict(initial)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-4)
        self.scheduler = make_scheduler(kind, self.optimizer)
        self.times = []

    def step(self, batch, sync, record=True):
        sync()
        start = time.perf_counter()
        loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync()
        if record:
            self.times.append(time.perf_counter() - start)
        self.loss = loss.item()


def run_repeat(model_dir, initial, batch, steps, warmup, device):
    """Both arms from the same start, stepped alternately (A B B A ...) so load changes hit both alike."""
    import torch
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    arms = [Arm("restart", model_dir, initial, device), Arm("constant", model_dir, initial, device)]
    for i in range(warmup + steps):
        for arm in (arms if i % 2 == 0 else arms[::-1]):
            arm.step(batch, sync, record=i >= warmup)
    return {arm.kind: (statistics.median(arm.times), arm.loss) for arm in arms}


def scheduler_only(kind, n=20000):
    import torch
    import warnings
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    scheduler = make_scheduler(kind, optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        for _ in range(n):
            scheduler.step()
    return (time.perf_counter() - start) / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per arm and repeat")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noise; 0: torch default)")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    from hyperrestart.upstream.tiny import tiny_model_dir
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = T5ForConditionalGeneration.from_pretrained(str(model_dir))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batch(tokenizer, args.device)

    medians = {"restart": [], "constant": []}
    losses = {}
    for _ in range(args.repeats):
        for kind, (median, loss) in run_repeat(model_dir, initial, batch, args.steps, args.warmup,
                                               args.device).items():
            medians[kind].append(median)
            losses[kind] = loss
    restart, constant = statistics.median(medians["restart"]), statistics.median(medians["constant"])
    pair_ratios = [r / c for r, c in zip(medians["restart"], medians["constant"])]
    sched_r, sched_c = scheduler_only("restart"), scheduler_only("constant")
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"tiny T5 ({sum(p.numel() for p in model.parameters())} params), batch {batch['input_ids'].shape[0]}x"
          f"{batch['input_ids'].shape[1]}, {args.steps} timed steps x {args.repeats} interleaved repeats")
    print(f"median step time  restart  {restart * 1e3:8.3f} ms")
    print(f"median step time  constant {constant * 1e3:8.3f} ms")
    print(f"ratio restart/constant: {restart / constant:.4f} (per-repeat ratios: median "
          f"{statistics.median(pair_ratios):.4f}, min {min(pair_ratios):.4f}, max {max(pair_ratios):.4f}); "
          f"target <= 1.01")
    print(f"scheduler.step() alone: restart {sched_r * 1e6:.1f} us, constant {sched_c * 1e6:.1f} us "
          f"(+{(sched_r - sched_c) * 1e6:.1f} us = {(sched_r - sched_c) / constant * 100:.3f}% of a step)")
    print(f"final losses (sanity): restart {losses['restart']:.4f}, constant {losses['constant']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

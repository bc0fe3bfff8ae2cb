"""Cost of the per-group restart scheduler and the per-step diagnostics, as a ratio to the plain run's step time,
measured in one run.

plain: AdamW over the trainer's two groups (weight decay / none) and the paper's RestartScheduler (SGDR over every
group), no diagnostics. per-group + diagnostics: the same parameters split into hypernetwork / backbone groups (four
groups), GroupScheduler with restart_scope hypernetwork (the backbone on a constant schedule), and StepDiagnostics
each step (gradient norms before clipping, parameter snapshot, update norms, applied lrs, loss; CSV and TensorBoard
written every 50 steps, as the trainers do with logging_steps 50). Same model, initial weights and batch; the two arms
are stepped alternately (A B B A ...) so machine load hits both alike; each repeat's median step time is taken.
The arms differ only after the backward pass, so that part is also timed on its own: its difference is the added
cost, a few ms against a whole step whose repeat-to-repeat noise can be larger than the cost itself.
A random T5 stands in for the hyperdecoders model: its decoder is tagged "hypernetwork" (the cost depends on the
number and size of the tensors, not on their role). --trainable encoder-frozen freezes the encoder (the paper's
GLUE runs train far fewer parameters than they run through: the diagnostics cost follows the trainable ones).
On a CPU the clock is the process's CPU time (other processes on a shared machine do not count; TensorBoard's writer
thread does); on a GPU wall time after synchronising. Target: ratio <= 1.01.

    python benchmarks/group_scheduler_diagnostics.py [--size tiny|small|base] [--device cpu|cuda] [--steps 60]
        [--repeats 5] [--batch 16] [--length 64] [--accumulation 1] [--threads 1] [--diagnostics-every 50] [--trainable all|encoder-frozen]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {  # T5 shapes: the tiny default of hyperrestart.tiny, t5-small, t5-base (random weights, no download)
    "tiny": dict(d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=2, vocab_size=800),
    "small": dict(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=6, num_heads=8),
    "base": dict(d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12),
}


def build_model(size, device, trainable="all"):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    shape = dict({"vocab_size": 32128}, **SIZES[size])
    config = T5Config(dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **shape)
    model = T5ForConditionalGeneration(config).to(device).train()
    if trainable == "encoder-frozen":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        model.shared.weight.requires_grad_(True)  # tied with the decoder's embedding and the lm head
    return model


def base_groups(model):
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0}]


def spaces_of(model):
    named = list(model.named_parameters())
    return {"hypernetwork": [(n, p) for n, p in named if n.startswith("decoder.")],
            "backbone": [(n, p) for n, p in named if not n.startswith("decoder.")]}


class Arm:
    def __init__(self, kind, size, initial, device, out_dir, every, trainable="all"):
        import torch
        from hyperrestart.upstream import scheduler as rs
        from hyperrestart.core.overlay_import import load_overlay_module
        from hyperrestart.core.paths import OVERLAY_DIR
        self.kind, self.times, self.after_backward = kind, [], []
        self.model = build_model(size, device, trainable)
        self.model.load_state_dict(initial)
        groups = base_groups(self.model)
        self.diagnostics = None
        if kind == "plain":
            self.optimizer = torch.optim.AdamW(groups, lr=3e-4)
            self.scheduler = rs.RestartScheduler(self.optimizer, t_0=1, t_mult=2, eta_min=1e-6)
        else:
            spaces = spaces_of(self.model)
            self.optimizer = torch.optim.AdamW(rs._module.split_by_space(groups, spaces), lr=3e-4)
            self.scheduler = rs.GroupScheduler(self.optimizer, rs.SGDR(1, 2, 1e-6), rs.Constant(), "hypernetwork")
            diag = load_overlay_module("hyperrestart._step_diagnostics", OVERLAY_DIR / "common" / "step_diagnostics.py")
            trained = {k: [p for _, p in v if p.requires_grad] for k, v in spaces.items()}
            self.diagnostics = diag.StepDiagnostics(trained, self.optimizer, out_dir, flush_every=every)

    def step(self, batch, sync, step, clock, record=True, accumulation=1):
        import torch
        sync()
        start = clock()
        for _ in range(accumulation):  # the trainers' gradient accumulation: diagnostics once per optimizer step
            loss = self.model(**batch).loss / accumulation
            loss.backward()
        sync()
        backward_done = clock()
        if self.diagnostics is not None:
            self.diagnostics.on_gradients()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        if self.diagnostics is not None:
            self.diagnostics.on_update(step, loss.detach(), self.scheduler)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync()
        end = clock()
        if record:
            self.times.append(end - start)
            self.after_backward.append(end - backward_done)  # everything the two arms do differently


def run_repeat(args, initial, batch, sync, clock, out_dir):
    arms = [Arm(kind, args.size, initial, args.device, out_dir, args.diagnostics_every, args.trainable)
            for kind in ("plain", "per-group + diagnostics")]
    for i in range(args.warmup + args.steps):
        for arm in (arms if i % 2 == 0 else arms[::-1]):
            arm.step(batch, sync, i + 1, clock, record=i >= args.warmup, accumulation=args.accumulation)
    arms[1].diagnostics.close()
    return [statistics.median(arm.times) for arm in arms], [statistics.median(arm.after_backward) for arm in arms]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per arm and repeat")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64, help="input tokens (targets: a quarter)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--diagnostics-every", type=int, default=50, help="steps between CSV/TensorBoard writes")
    parser.add_argument("--accumulation", type=int, default=1,
                        help="forward/backward passes per optimizer step (the GLUE configs use 4, P3 1)")
    parser.add_argument("--trainable", choices=("all", "encoder-frozen"), default="all")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    clock = time.perf_counter if gpu else time.process_time
    model = build_model(args.size, args.device, args.trainable)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    gen = torch.Generator().manual_seed(0)
    vocab = dict({"vocab_size": 32128}, **SIZES[args.size])["vocab_size"]
    batch = {"input_ids": torch.randint(2, vocab, (args.batch, args.length), generator=gen).to(args.device),
             "labels": torch.randint(2, vocab, (args.batch, max(1, args.length // 4)), generator=gen).to(args.device)}
    plain, full, added = [], [], []
    with tempfile.TemporaryDirectory() as out_dir:
        for _ in tqdm(range(args.repeats), desc="repeats", file=sys.stderr):
            (p, f), (p_after, f_after) = run_repeat(args, initial, batch, sync, clock, out_dir)
            plain.append(p)
            full.append(f)
            added.append(f_after - p_after)
    ratios = [f / p for p, f in zip(plain, full)]
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, T5 {args.size} "
          f"({params / 1e6:.1f}M params, {trained / 1e6:.1f}M trained), batch {args.batch}x{args.length} "
          f"x {args.accumulation} accumulated, "
          f"{args.steps} timed steps x {args.repeats} interleaved repeats, clock: "
          f"{'wall' if gpu else 'process CPU time'}")
    print(f"median step time  plain                    {statistics.median(plain) * 1e3:9.3f} ms")
    print(f"median step time  per-group + diagnostics  {statistics.median(full) * 1e3:9.3f} ms")
    print(f"ratio per-group+diagnostics / plain: {statistics.median(full) / statistics.median(plain):.4f} "
          f"(per-repeat ratios: median {statistics.median(ratios):.4f}, min {min(ratios):.4f}, "
          f"max {max(ratios):.4f}); target <= 1.01")
    share = statistics.median(added) / statistics.median(plain)
    print(f"added after the backward pass (diagnostics + per-group optimizer and scheduler, the only code that "
          f"differs): {statistics.median(added) * 1e3:.3f} ms per step = {share:.2%} of the plain step "
          f"(per-repeat {min(added) * 1e3:.3f} to {max(added) * 1e3:.3f} ms): the cost estimate that whole-step "
          f"noise does not swamp; target <= 1%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

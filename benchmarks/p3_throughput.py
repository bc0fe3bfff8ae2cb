"""P3 runner batching vs the released runner's loop: tokens/s and fraction of non-pad tokens.

Released hp_t5_trainer.py: batch size 1, every example padded to 512 source / 32 target tokens. The runner: batches of
--batch-size rows grouped by length and padded to the batch's longest (multiple of 8 on GPU). Both train the same
model (tiny random T5 by default; `--size base` = a random T5 with t5-base dimensions) with AdamW on the same
synthetic P3 data for --seconds each; "tokens" = real (non-pad) source + target tokens.

    python benchmarks/p3_throughput.py [--size tiny|base] [--batch-size 32] [--seconds 20] [--device cpu|cuda]
"""
import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hyperrestart.p3.metrics import runner_module  # noqa: E402
from hyperrestart.p3.prepare import prepare  # noqa: E402
from hyperrestart.p3.synthetic import SYNTHETIC_TASKS, tiny_t5_dir, write_synthetic_p3  # noqa: E402


def make_model(size, model_dir, device):
    from transformers import T5Config, T5ForConditionalGeneration

    if size == "tiny":
        model = T5ForConditionalGeneration.from_pretrained(model_dir)
    else:
        vocab = T5Config.from_pretrained(model_dir).vocab_size
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=768, d_ff=3072, d_kv=64, num_layers=12,
                                                    num_heads=12, decoder_start_token_id=0, pad_token_id=0,
                                                    eos_token_id=1))
    return model.to(device).train()


def measure(model, batches, device, seconds, autocast):
    """Train on batches until `seconds` elapse (after 5 warm-up steps); returns (tokens/s, non-pad fraction, steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    real = padded = steps = 0
    start = None
    for i, batch in enumerate(batches):
        if i == 5:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, real, padded, steps = time.time(), 0, 0, 0
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
        padded += batch["input_ids"].numel() + batch["labels"].numel()
        steps += 1
        if start is not None and steps % 4 == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            if time.time() - start >= seconds:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.time() - start
    return real / elapsed, real / padded, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rows-per-task", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: stable figures on a shared machine; 0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runner = runner_module()
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tasks = tmp / "tasks.txt"
        tasks.write_text("\n".join(SYNTHETIC_TASKS))
        write_synthetic_p3(tmp / "src", "parquet", count=args.rows_per_task)
        prepare(tmp / "src", tmp / "data", tasks_file=tasks, holdout=0, progress=False)
        model_dir = tiny_t5_dir(tmp / "tiny")
        run_args = runner.parse_args(["--data_dir", str(tmp / "data"), "--output_dir", str(tmp / "o"),
                                      "--model_name_or_path", str(model_dir), "--eval_steps", "0",
                                      "--eval_at_start", "false", "--eval_at_end", "false"])
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train = runner.load_data(run_args, tokenizer)["train"]
        lengths = np.asarray(train["source_length"])
        pad = tokenizer.pad_token_id
        multiple = 8 if device.type == "cuda" else 1

        def runner_batches():
            epoch = 0
            while True:
                for rows in runner.epoch_batches(lengths, args.batch_size, epoch, 0, True, 50):
                    data = train[rows]
                    yield runner.collate(data["input_ids"], data["labels"], pad, multiple)
                epoch += 1

        def naive_batches():  # the released loop: one example, padded to max_source/max_target length
            while True:
                for i in np.random.default_rng(0).permutation(len(train)).tolist():
                    row = train[i]
                    source = row["input_ids"] + [pad] * (512 - len(row["input_ids"]))
                    target = row["labels"] + [-100] * (32 - len(row["labels"]))
                    yield {"input_ids": torch.tensor([source]),
                           "attention_mask": torch.tensor([[1] * len(row["input_ids"]) + [0] * (512 - len(row["input_ids"]))]),
                           "labels": torch.tensor([target])}

        def epoch_nonpad(batches, count):
            real = padded = 0
            for _, batch in zip(range(count), batches):
                real += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
                padded += batch["input_ids"].numel() + batch["labels"].numel()
            return real / padded

        full_epoch = math.ceil(len(train) / args.batch_size)
        print(f"non-pad over one epoch: runner {100 * epoch_nonpad(runner_batches(), full_epoch):.1f}%, "
              f"naive {100 * epoch_nonpad(naive_batches(), len(train)):.1f}%")
        mean_len = float(np.mean(lengths))
        print(f"model {args.size}, device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
              f"bf16 {use_bf16}, {torch.get_num_threads()} CPU thread(s), {len(train)} rows, mean source length {mean_len:.1f} tokens, {args.seconds:.0f}s each")
        naive = measure(make_model(args.size, model_dir, device), naive_batches(), device, args.seconds, autocast)
        ours = measure(make_model(args.size, model_dir, device), runner_batches(), device, args.seconds, autocast)
        print(f"naive (batch 1, pad to 512/32): {naive[0]:10.0f} tokens/s  non-pad {100 * naive[1]:5.1f}%  "
              f"({naive[2]} steps)")
        print(f"runner (batch {args.batch_size}, length-grouped): {ours[0]:10.0f} tokens/s  non-pad {100 * ours[1]:5.1f}%  "
              f"({ours[2]} steps)")
        print(f"ratio tokens/s: {ours[0] / naive[0]:.1f}x (target >= 3x); runner non-pad {100 * ours[1]:.1f}% "
              f"(target >= 90%)")


if __name__ == "__main__":
    main()

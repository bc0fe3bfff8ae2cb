"""What a run records: train_log.csv (every step), eval_log.csv, run_config.json, TensorBoard / wandb."""
import csv
import json
from pathlib import Path

TRAIN_LOG_FIELDS = ("step", "epoch", "loss", "lr", "scheduler_steps", "target_tokens", "source_tokens",
                    "nonpad_fraction", "tokens_per_s", "elapsed_s", "examples")
EVAL_LOG_FIELDS = ("step", "rougeL_micro", "rougeL_macro", "num_examples", "num_tasks", "eval_seconds")


def truncate_csv(path, max_step):
    """Keep the header and the rows up to max_step (a resumed run rewrites what followed its checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        fields = rows and list(rows[0]) or None
    if fields is None:
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= max_step)


class CsvLog:
    """A CSV file appended one row at a time (flushed), its header written when the file is new."""

    def __init__(self, path, fields):
        self.path, self.fields = Path(path), fields
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.handle = open(self.path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, fieldnames=fields)
        if new:
            self.writer.writeheader()

    def write(self, row):
        self.writer.writerow({k: row.get(k) for k in self.fields})
        self.handle.flush()

    def close(self):
        self.handle.close()


def make_reporters(args, output_dir):
    """[report(values, step)] for --report_to: TensorBoard under OUTPUT_DIR/tensorboard, wandb; each has .close()."""
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


def write_run_config(output_dir, args, dist, device, use_bf16, train, evalset, model):
    """OUTPUT_DIR/run_config.json: the options, processes, batch layout, device, precision, data and model sizes."""
    info = {"args": vars(args), "world_size": dist.world, "batch_layout": args.batch_layout, "device": str(device),
            "bf16": use_bf16, "train_rows": len(train), "eval_rows": len(evalset) if evalset is not None else 0,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    (Path(output_dir) / "run_config.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")

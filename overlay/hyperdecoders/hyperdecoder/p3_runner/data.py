"""The prepared P3 folder -> tokenized splits; where each epoch's global batches come from (every row once, or T0's
mixture); this process's collated micro-batches of each optimizer step (from any position, for exact resume)."""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from .batching import epoch_batches, mixture_epoch  # noqa: F401 - the runner's batch order, re-exported
from .mixing import block_steps_for, check_rates, declared_rates


def load_data(args, tokenizer):
    """{split: tokenized dataset} of train and --eval_split (the released runner's 0.2% fallback when the folder has
    only a train split); columns task, targets, input_ids, labels, source_length."""
    import datasets

    data = datasets.load_dataset(args.data_dir)
    if "train" not in data:
        raise SystemExit(f"{args.data_dir}: no train split (found {list(data)}); prepare it with "
                         "hyperrestart prepare-p3")
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


MANIFEST = "manifest.json"


class TrainStream:
    """Where each epoch's global batches come from. Epochs: every train row once per epoch (epoch_batches). T0
    mixing (--mixing rates, or auto when the data folder's manifest records mixing_rates): an epoch is sum(rates)
    rows drawn in proportion to the rates (mixture_epoch). `describe` names the stream; a checkpoint records it."""

    def __init__(self, args, train):
        self.args = args
        self.lengths = np.asarray(train["source_length"])
        names, codes = task_codes(train) if args.mixing != "off" else ([], None)
        self.rates = None if args.mixing == "off" else mixing_rates(args, names, codes)
        if self.rates is None:
            self.describe = "epochs: every train row once per epoch"
            return
        self.task_rows = {task: np.flatnonzero(codes == names.index(task)) for task in self.rates}
        digest = hashlib.sha256(json.dumps(sorted(self.rates.items())).encode()).hexdigest()[:12]
        self.describe = (f"T0 mixing: {len(self.rates)} tasks, rates sha256 {digest}, "
                         f"{block_steps_for(self.rates, args.train_batch_size)} global batches per epoch")

    def batches(self, epoch):
        args = self.args
        if self.rates is None:
            return epoch_batches(self.lengths, args.train_batch_size, epoch, args.seed, args.group_by_length,
                                 args.length_group_size)
        return mixture_epoch(self.lengths, self.task_rows, self.rates, args.train_batch_size, epoch, args.seed,
                             args.group_by_length, args.length_group_size)


def task_codes(train):
    """(task names, each row's index into them) of a split, through Arrow (no python string per row: P3 has
    millions of rows)."""
    column = train.with_format("arrow")["task"]
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    encoded = column.dictionary_encode()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def mixing_rates(args, names, codes):
    """{task: rate} when the run mixes (--mixing rates, or auto and DATA/manifest.json records rates), else None;
    the rates checked against the train rows of each task (names, codes: task_codes; one line naming what is
    wrong)."""
    path = Path(args.data_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        manifest = {}
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read it as JSON ({exc}); prepare the data again with hyperrestart prepare-p3")
    try:
        rates = declared_rates(manifest, args.mixing, path)
        if rates is None:
            return None
        counts = np.bincount(codes, minlength=len(names))
        return check_rates(rates, dict(zip(names, counts.tolist())), path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


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

"""The prepared P3 folder -> tokenized splits; one epoch's length-grouped global batches; this process's collated
micro-batches of each optimizer step (from any position, for exact resume)."""
import math

import numpy as np
import torch


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

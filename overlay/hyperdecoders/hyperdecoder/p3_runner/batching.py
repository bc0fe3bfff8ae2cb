"""Which rows form each global batch of an epoch: every row once (epoch_batches), or T0's examples-proportional
mixture (mixture_epoch: an epoch is sum(rates) drawn rows). Both length-grouped the same way, both a pure function of
(seed, epoch), so every process computes the same batches and a resume continues them exactly. numpy only."""
import math

import numpy as np

from .mixing import MIX_STREAM, block_steps_for, mixture_rows


def group_batches(order, lengths, batch_size, rng, group_by_length, group_size):
    """`order` (row indices) cut into global batches of `batch_size` (an incomplete last one dropped); with
    group_by_length, cut into megabatches of `group_size` batches each sorted by length (so a batch holds similar
    lengths), batch order shuffled by `rng`."""
    if group_by_length:
        mega = batch_size * group_size
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, math.ceil(len(order) / mega)))])
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order) - batch_size + 1, batch_size)]
    if batches and group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_batches(lengths, batch_size, epoch, seed, group_by_length, group_size):
    """One epoch's global batches (lists of `batch_size` row indices; an incomplete last one is dropped): a seeded
    permutation of every row, length-grouped (group_batches). The same for any number of processes."""
    rng = np.random.default_rng([seed, epoch])
    batches = group_batches(rng.permutation(len(lengths)), lengths, batch_size, rng, group_by_length, group_size)
    if not batches:
        raise SystemExit(f"train split has {len(lengths)} rows: fewer than one global batch of {batch_size}")
    return batches


def mixture_epoch(lengths, task_rows, rates, batch_size, epoch, seed, group_by_length, group_size):
    """One mixing epoch's global batches: block_steps_for(rates) batches of rows drawn in proportion to the rates
    (mixing.mixture_rows; a row may recur), length-grouped as epoch_batches does. The same for any number of
    processes."""
    steps = block_steps_for(rates, batch_size)
    rows = mixture_rows(task_rows, rates, steps * batch_size, epoch, seed)
    rng = np.random.default_rng([seed, epoch, MIX_STREAM, 1])
    return group_batches(rows, lengths, batch_size, rng, group_by_length, group_size)

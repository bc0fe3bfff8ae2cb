"""Examples-proportional mixing, as T0 trains: every row kept, each global batch's rows drawn task by task with
probability proportional to the task's mixing rate (T0: min(task rows, 500_000 // templates) where T0 caps the
dataset, else its rows; hyperrestart.p3.tasks.mixing_rates).

The stream is cut into blocks of `block_steps` global batches; block b is a pure function of (rates, seed, b), so a
run that resumes at (block, batch in block) continues the same stream exactly, on any number of processes, as
epoch_batches' epochs do."""
import numpy as np


def mixture_block(task_rows, rates, batch_size, block, seed, block_steps=1000):
    """Block `block` of the mixture: `block_steps` global batches (lists of `batch_size` row indices into the
    concatenated dataset). task_rows: {task: array of its row indices}; rates: {task: mixing rate > 0}. Tasks are
    drawn i.i.d. with p = rate / sum(rates); within a task, the rows it needs in this block are a seeded sample
    without replacement (cycling through fresh permutations when it needs more rows than it has)."""
    tasks = sorted(task_rows)
    weights = np.array([float(rates[t]) for t in tasks])
    if not len(tasks) or (weights <= 0).any() or not np.isfinite(weights).all():
        raise ValueError("mixing rates must be finite and positive, one per task")
    rng = np.random.default_rng([seed, block, 0x6D6978])  # "mix": independent of epoch_batches' streams
    draws = rng.choice(len(tasks), size=block_steps * batch_size, p=weights / weights.sum())
    rows = np.empty(len(draws), dtype=np.int64)
    for i, task in enumerate(tasks):
        where = np.flatnonzero(draws == i)
        if len(where):
            rows[where] = _take(np.asarray(task_rows[task]), len(where), rng)
    return [rows[i:i + batch_size].tolist() for i in range(0, len(rows), batch_size)]


def _take(pool, count, rng):
    """`count` rows of `pool`: whole seeded permutations, then a seeded part of one more."""
    parts = [rng.permutation(pool) for _ in range(count // len(pool))]
    parts.append(rng.permutation(pool)[:count % len(pool)])
    return np.concatenate(parts)

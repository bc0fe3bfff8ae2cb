"""Examples-proportional mixing, as T0 trains: every row kept, each global batch's rows drawn task by task with
probability proportional to the task's mixing rate (T0: min(task rows, 500_000 // templates) where T0 caps the
dataset, else its rows; hyperrestart.p3.tasks.mixing_rates, recorded by `prepare-p3 --caps-as mixing-rates`).

The stream is cut into blocks of `block_steps` global batches; block b is a pure function of (rates, seed, b), so a
run that resumes at (block, batch in block) continues the same stream exactly, on any number of processes, as
epoch_batches' epochs do. numpy only (the tool imports this file too)."""
import math

import numpy as np

MIX_STREAM = 0x6D6978  # "mix": the sampler's random streams are independent of epoch_batches'


def mixture_rows(task_rows, rates, count, block, seed):
    """`count` row indices (into the concatenated dataset) of block `block`, in draw order. task_rows: {task: array of
    its row indices}; rates: {task: mixing rate > 0}. Tasks are drawn i.i.d. with p = rate / sum(rates); within a
    task, the rows it needs in this block are a seeded sample without replacement (cycling through fresh
    permutations when it needs more rows than it has)."""
    tasks = sorted(task_rows)
    weights = np.array([float(rates[t]) for t in tasks])
    if not len(tasks) or (weights <= 0).any() or not np.isfinite(weights).all():
        raise ValueError("mixing rates must be finite and positive, one per task")
    rng = np.random.default_rng([seed, block, MIX_STREAM])
    draws = rng.choice(len(tasks), size=count, p=weights / weights.sum())
    rows = np.empty(len(draws), dtype=np.int64)
    for i, task in enumerate(tasks):
        where = np.flatnonzero(draws == i)
        if len(where):
            rows[where] = _take(np.asarray(task_rows[task]), len(where), rng)
    return rows


def mixture_block(task_rows, rates, batch_size, block, seed, block_steps=1000):
    """Block `block` of the mixture: `block_steps` global batches (lists of `batch_size` row indices), in draw
    order."""
    rows = mixture_rows(task_rows, rates, block_steps * batch_size, block, seed)
    return [rows[i:i + batch_size].tolist() for i in range(0, len(rows), batch_size)]


def block_steps_for(rates, batch_size):
    """Global batches in one mixing epoch: sum(rates) rows (each task contributes its rate's worth of rows in
    expectation), in whole batches, at least one."""
    return max(1, int(sum(rates.values())) // batch_size)


def _take(pool, count, rng):
    """`count` rows of `pool`: whole seeded permutations, then a seeded part of one more."""
    parts = [rng.permutation(pool) for _ in range(count // len(pool))]
    parts.append(rng.permutation(pool)[:count % len(pool)])
    return np.concatenate(parts)


def declared_rates(manifest, mixing, where):
    """The manifest's mixing_rates (unchecked: see check_rates) when the run mixes: --mixing rates, or auto and the
    manifest declares rates (caps_as mixing-rates or a mixing_rates entry); None for --mixing off, or auto without
    rates. ValueError when --mixing rates finds none."""
    if mixing == "off":
        return None
    if isinstance(manifest, dict) and ("mixing_rates" in manifest or manifest.get("caps_as") == "mixing-rates"):
        rates = manifest.get("mixing_rates")
        return {} if rates is None else rates  # declared but missing: refused by check_rates
    if mixing == "rates":
        raise ValueError(f"--mixing rates: {where} records no mixing rates; prepare the data with `hyperrestart "
                         "prepare-p3 --caps-as mixing-rates`, or use --mixing auto/off")
    return None


def check_rates(rates, train_rows, where):
    """The manifest's rates as {task: float}, checked against {task: rows in the train split}: one rate per task that
    has train rows, each finite and > 0, and no rate for a task without train rows. ValueError, one line naming
    `where` (the manifest) and what to fix."""
    fix = "prepare the data again with `hyperrestart prepare-p3 --caps-as mixing-rates`"
    if not isinstance(rates, dict) or not rates:
        raise ValueError(f"{where}: mixing_rates must be a non-empty object {{task: rate}}; {fix}")
    checked = {}
    for task, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"{where}: task {task!r} has mixing rate {rate!r}, not a finite number >= 0; {fix}")
        if rate == 0:
            raise ValueError(f"{where}: task {task!r} has mixing rate 0, so it would never be sampled; drop the task "
                             f"(prepare-p3 --tasks) or give it a positive rate")
        checked[task] = float(rate)
    for task in sorted(checked):
        if not train_rows.get(task):
            raise ValueError(f"{where}: task {task!r} has mixing rate {rates[task]!r} but no rows in the train split; "
                             f"the rates do not match the data ({fix})")
    missing = sorted(task for task, count in train_rows.items() if count and task not in checked)
    if missing:
        raise ValueError(f"{where}: {len(missing)} task(s) of the train split have no mixing rate ({', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''}); the rates do not match the data ({fix})")
    return checked

"""prepare-p3: a local copy of bigscience/P3 -> the folder the P3 runner trains on (no TensorFlow needed).

The steps: check the arguments and locations, find every task's input files (hyperrestart.p3.readers), claim OUT
(hyperrestart.p3.claim), count the rows and apply T0's caps (hyperrestart.p3.tasks), read the kept rows into staging
files, route every row to its split (hyperrestart.p3.split), write the manifest, move the folder into place.
Output: OUT/data/{train,validation,test}.parquet with columns task, inputs, targets (loadable with
``datasets.load_dataset(OUT)``) + OUT/manifest.json.
"""
import datetime
import shutil
import sys
from pathlib import Path

from hyperrestart import __version__
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json, file_sha256
from hyperrestart.p3.claim import MANIFEST, Claim, check_existing_out, check_locations, check_parent, filesystem_error
from hyperrestart.p3.readers import (CHUNK_ROWS, FORMATS, count_rows, detect_format, expected_location, read_task,
                                     task_files)
from hyperrestart.p3.split import SPLITS, check_split_sizes, split_assignment
from hyperrestart.p3.tasks import dataset_of, load_task_list, mixing_rates, per_task_caps, sample_rows

MANIFEST_VERSION = 2  # 2: caps_as, and mixing_rates under --caps-as mixing-rates
# What T0's caps become: "truncation" keeps a seeded sample of each capped task (same proportions, rows dropped);
# "mixing-rates" keeps every row and records each task's rate, which the P3 runner samples tasks in proportion to.
CAPS_AS = ("truncation", "mixing-rates")


def prepare(source, out, tasks_file=None, fmt="auto", cap_per_dataset=500000, holdout=0.002, seed=0,
            split="train", overwrite=False, hash_inputs=True, progress=True, cap_per_task=None, say=None,
            caps_as="truncation"):
    """Build OUT from SOURCE; returns the manifest (also written to OUT/manifest.json). say: where notes go
    (default: stderr). caps_as: one of CAPS_AS."""
    source, out = Path(source), Path(out)
    say = say or (lambda text: print(text, file=sys.stderr))
    if not source.is_dir():
        raise HyperrestartError(f"P3 source {source} is not a folder; pass the local copy of bigscience/P3 to --source")
    if not 0 <= holdout < 1:
        raise HyperrestartError(f"--holdout must be in [0, 1), got {holdout}")
    for flag, value in (("--cap-per-dataset", cap_per_dataset), ("--cap-per-task", cap_per_task)):
        if value is not None and value < 0:
            raise HyperrestartError(f"{flag} must be >= 0 (0 = no cap), got {value}")
    if caps_as not in CAPS_AS:
        raise HyperrestartError(f"--caps-as must be one of {', '.join(CAPS_AS)}, got {caps_as!r}")
    check_locations(source, out)
    check_parent(out)
    tasks = load_task_list(tasks_file)
    if fmt == "auto":
        fmt = detect_format(source, tasks, split)
    elif fmt not in FORMATS:
        raise HyperrestartError(f"--format must be auto or one of {FORMATS}, got {fmt!r}")
    files = {task: task_files(source, task, fmt, split) for task in tasks}
    missing = [task for task, found in files.items() if not found]
    if missing:
        shown = ", ".join(f"{t} (expected {expected_location(source, t, fmt, split)})" for t in missing[:5])
        raise HyperrestartError(f"{len(missing)} task(s) missing from {source} ({fmt} layout): {shown}"
                                + (" ..." if len(missing) > 5 else "")
                                + "; download them or drop them from the task list (--tasks FILE)")
    try:
        with Claim(out, say) as claim:
            check_existing_out(out, overwrite)
            manifest = build(source, claim.tmp, tasks, files, fmt, split, cap_per_dataset, cap_per_task, holdout,
                             seed, hash_inputs, progress, caps_as)
            claim.publish()
            return manifest
    except OSError as exc:
        raise filesystem_error(exc, source, out) from None


def build(source, tmp, tasks, files, fmt, split, cap_per_dataset, cap_per_task, holdout, seed, hash_inputs,
          progress, caps_as="truncation"):
    """Write the prepared data and manifest into the folder `tmp`; returns the manifest."""
    counts = count_and_cap(tasks, files, fmt, cap_per_dataset, cap_per_task, holdout, caps_as, seed)
    (tmp / "data").mkdir(parents=True)
    schema = _schema()
    staging = tmp / "staging"
    stage_tasks(staging, tasks, files, fmt, counts, seed, schema, progress)
    per_task_split = route_splits(staging, tmp / "data", tasks, counts, holdout, seed, schema, progress)
    manifest = make_manifest(source, tmp, tasks, files, fmt, split, cap_per_dataset, cap_per_task, holdout, seed,
                             hash_inputs, counts, per_task_split)
    atomic_write_json(tmp / MANIFEST, manifest, indent=1)
    return manifest


def count_and_cap(tasks, files, fmt, cap_per_dataset, cap_per_task, holdout, caps_as="truncation", seed=0):
    """Pass 0, before reading any text: every task's rows per file and in all, T0's caps, the rows kept (truncation:
    min(rows, cap); mixing-rates: every row, and each task's rate), the split sizes (refused when too small)."""
    file_rows = {task: [count_rows(path, fmt) for path in files[task]] for task in tasks}
    source_rows = {task: sum(file_rows[task]) for task in tasks}
    empty = [task for task in tasks if source_rows[task] == 0]
    if empty:
        raise HyperrestartError(f"task {empty[0]} is empty: {', '.join(map(str, files[empty[0]]))} hold(s) no "
                                "examples; re-download it or drop it from the task list")
    caps = per_task_caps(source_rows, cap_per_dataset, cap_per_task)
    if caps_as == "mixing-rates":
        kept, rates = dict(source_rows), mixing_rates(source_rows, cap_per_dataset, cap_per_task)
    else:
        kept = {task: min(source_rows[task], caps[task]) if caps[task] is not None else source_rows[task]
                for task in tasks}
        rates = None
    total = sum(kept.values())
    sizes = check_split_sizes(total, holdout)
    if rates is not None:
        check_every_task_trains(tasks, kept, total, holdout, seed)
    return {"file_rows": file_rows, "source_rows": source_rows, "caps": caps, "kept": kept, "total": total,
            "sizes": sizes, "rates": rates}


def check_every_task_trains(tasks, kept, total, holdout, seed):
    """Under mixing rates every task needs a train row (a rate with nothing to sample is refused by the runner):
    refused before any text is read when the held-out split takes all of a task's rows."""
    assignment = split_assignment(total, holdout, seed)
    offset = 0
    for task in tasks:
        if kept[task] and not (assignment[offset:offset + kept[task]] == 0).any():
            raise HyperrestartError(f"--caps-as mixing-rates: every one of task {task}'s {kept[task]} row(s) falls in "
                                    "the held-out split, so it would have a mixing rate but no train rows; drop it "
                                    "(--tasks FILE), lower --holdout or pick another --seed")
        offset += kept[task]


def stage_tasks(staging, tasks, files, fmt, counts, seed, schema, progress):
    """Pass 1: the kept rows of every task (a seeded sample where capped) into staging/NNNNN.parquet, in task order."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    staging.mkdir()
    source_rows, kept = counts["source_rows"], counts["kept"]
    bar = tqdm(total=len(tasks), desc="prepare-p3: read", unit="task", disable=not progress)
    for position, task in enumerate(tasks):
        bar.set_postfix_str(task[:40])
        keep = sample_rows(source_rows[task], kept[task], seed, task) if kept[task] < source_rows[task] else None
        with pq.ParquetWriter(staging / f"{position:05d}.parquet", schema) as writer:
            count, chunk = 0, []
            for pair in read_task(files[task], fmt, keep, counts["file_rows"][task]):
                chunk.append(pair)
                if len(chunk) >= CHUNK_ROWS:
                    writer.write_table(_table(schema, task, chunk))
                    count, chunk = count + len(chunk), []
            if chunk:
                writer.write_table(_table(schema, task, chunk))
                count += len(chunk)
        if count != kept[task]:
            raise HyperrestartError(f"task {task}: read {count} rows but counted {kept[task]} to keep; did "
                                    f"{', '.join(map(str, files[task]))} change while preparing? run again")
        bar.update()
    bar.close()


def route_splits(staging, data_dir, tasks, counts, holdout, seed, schema, progress):
    """Pass 2: route each staged row to its split file (data_dir/{split}.parquet); remove the staging folder.
    Returns {task: {split: rows}}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    total, sizes = counts["total"], counts["sizes"]
    assignment = split_assignment(total, holdout, seed)
    writers = {name: pq.ParquetWriter(data_dir / f"{name}.parquet", schema) for name in SPLITS if sizes[name]}
    per_task_split = {task: dict.fromkeys(SPLITS, 0) for task in tasks}
    offset = 0
    bar = tqdm(total=total, desc="prepare-p3: split", unit="row", disable=not progress)
    for position, task in enumerate(tasks):
        for batch in pq.ParquetFile(staging / f"{position:05d}.parquet").iter_batches(batch_size=CHUNK_ROWS):
            table = pa.Table.from_batches([batch])
            ids = assignment[offset:offset + len(table)]
            for split_id, name in enumerate(SPLITS):
                mask = ids == split_id
                if mask.any():
                    writers[name].write_table(table.filter(pa.array(mask)))
                    per_task_split[task][name] += int(mask.sum())
            offset += len(table)
            bar.update(len(table))
    bar.close()
    for writer in writers.values():
        writer.close()
    shutil.rmtree(staging)
    return per_task_split


def make_manifest(source, tmp, tasks, files, fmt, split, cap_per_dataset, cap_per_task, holdout, seed, hash_inputs,
                  counts, per_task_split):
    """The manifest: how the folder was made (rules, seed, caps), per-task rows, output and input hashes."""
    source_rows, caps, kept, total, sizes, rates = (counts[k] for k in ("source_rows", "caps", "kept", "total", "sizes",
                                                                         "rates"))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created_by": f"hyperrestart {__version__} prepare-p3",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_format": fmt,
        "source_split": split,
        "seed": seed,
        "holdout": holdout,
        "split_rule": "hold out ceil(holdout*N) rows by a seeded permutation (numpy default_rng(seed)); "
                      "validation = floor half, test = ceil half",
        "cap_per_dataset": cap_per_dataset or None,
        "cap_per_task": cap_per_task or None,
        "cap_rule": "T0: a dataset whose train set (its largest task here) holds more than cap_per_dataset rows has "
                    "each task capped at cap_per_dataset // (the dataset's number of templates in P3); then every task "
                    "at most cap_per_task rows. A capped task keeps a uniform sample without replacement, in source "
                    "order: numpy default_rng([seed, first 8 bytes of sha256(task) little-endian]).choice(source_rows, "
                    "cap, replace=False)",
        "caps_as": "mixing-rates" if rates is not None else "truncation",
        **({"mixing_rule": "T0's examples-proportional mixing: every row is kept, and the P3 runner draws each row of "
                           "a global batch from task t with probability mixing_rates[t] / sum(mixing_rates), where "
                           "mixing_rates[t] = min(source_rows, cap) (the source rows when uncapped)",
            "mixing_rates": rates} if rates is not None else {}),
        "tasks": tasks,
        "num_rows": total,
        "splits": sizes,
        "per_task": {task: {"dataset": dataset_of(task), "source_rows": source_rows[task], "cap": caps[task],
                            "rows": kept[task], "capped": kept[task] < source_rows[task],
                            **per_task_split[task]} for task in tasks},
        "columns": {"task": "P3 task name", "inputs": "inputs_pretokenized", "targets": "targets_pretokenized"},
        "outputs": {f"data/{name}.parquet": {"rows": sizes[name],
                                             "sha256": file_sha256(tmp / "data" / f"{name}.parquet")}
                    for name in SPLITS if sizes[name]},
        "inputs": {str(path.relative_to(source)): (file_sha256(path) if hash_inputs else None)
                   for task in tasks for path in files[task]},
    }
    return manifest


def summary(manifest, out):
    """The one-line JSON summary prepare-p3 prints: output folder, tasks, rows, split sizes, input format, what the
    caps became."""
    return {"out": str(out), "tasks": len(manifest["tasks"]), "rows": manifest["num_rows"],
            "splits": manifest["splits"], "format": manifest["source_format"], "caps_as": manifest["caps_as"]}


def _schema():
    import pyarrow as pa

    return pa.schema([("task", pa.string()), ("inputs", pa.string()), ("targets", pa.string())])


def _table(schema, task, pairs):
    import pyarrow as pa

    inputs, targets = zip(*pairs)
    return pa.Table.from_arrays([pa.array([task] * len(pairs), pa.string()), pa.array(inputs, pa.string()),
                                 pa.array(targets, pa.string())], schema=schema)

"""Turn a local copy of bigscience/P3 into the folder the P3 runner trains on (no TensorFlow needed).

Input layouts (``--format auto`` picks the one present):
  tfrecord: SOURCE/data/{task}/{split}.tfrecord-NNNNN-of-NNNNN (+ info.{split}.json), read with the PyPI `tfrecord`
            package's protobuf and CRC-checked record by record;
  parquet:  SOURCE/{task}/{split}/*.parquet (the hub's parquet conversion);
  jsonl:    SOURCE/{task}/{split}.jsonl or SOURCE/{task}/{split}/*.jsonl.
Only the text fields are used (``inputs_pretokenized``/``targets_pretokenized``; for jsonl also plain string
``inputs``/``targets``). Output: OUT/data/{train,validation,test}.parquet with columns task, inputs, targets (loadable
with ``datasets.load_dataset(OUT)``) + OUT/manifest.json. Written into a temporary sibling folder and renamed at the
end, so a failure never leaves a folder that looks complete.
"""
import datetime
import hashlib
import json
import math
import os
import shutil
import struct
from pathlib import Path

from .. import __version__
from ..errors import HyperrestartError
from .tasks import dataset_of, load_task_list, per_task_caps

FORMATS = ("tfrecord", "parquet", "jsonl")
SPLITS = ("train", "validation", "test")
TEXT_FIELDS = ("inputs_pretokenized", "targets_pretokenized")
CHUNK_ROWS = 10000
MANIFEST_VERSION = 1


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- input layouts
def task_files(source, task, fmt, split):
    """The input files of one task in one layout (sorted), or [] when the task is absent in that layout."""
    if fmt == "tfrecord":
        return sorted((source / "data" / task).glob(f"{split}.tfrecord-*-of-*"))
    if fmt == "parquet":
        return sorted((source / task / split).glob("*.parquet"))
    single = source / task / f"{split}.jsonl"
    return [single] if single.is_file() else sorted((source / task / split).glob("*.jsonl"))


def expected_location(source, task, fmt, split):
    return {"tfrecord": source / "data" / task / f"{split}.tfrecord-00000-of-00001",
            "parquet": source / task / split / "0000.parquet",
            "jsonl": source / task / f"{split}.jsonl"}[fmt]


def detect_format(source, tasks, split):
    for task in tasks:
        for fmt in FORMATS:
            if task_files(source, task, fmt, split):
                return fmt
    raise HyperrestartError(
        f"no P3 data found in {source} for split {split!r}: expected e.g. "
        f"{expected_location(source, tasks[0], 'tfrecord', split)} (hub tfrecord layout) or "
        f"{expected_location(source, tasks[0], 'parquet', split)} (parquet conversion); check --source")


def _corrupt(path, index, why):
    return HyperrestartError(f"corrupt tfrecord {path}: record {index}: {why}; re-download this file")


def read_tfrecord(path):
    """Yield (inputs, targets) text per record, verifying each record's length and data CRCs."""
    from tfrecord import example_pb2
    from tfrecord.writer import TFRecordWriter

    with open(path, "rb") as handle:
        index = 0
        while True:
            header = handle.read(8)
            if not header:
                return
            if len(header) < 8:
                raise _corrupt(path, index, "truncated length header")
            if handle.read(4) != TFRecordWriter.masked_crc(header):
                raise _corrupt(path, index, "length CRC mismatch")
            (length,) = struct.unpack("<Q", header)
            data = handle.read(length)
            if len(data) < length:
                raise _corrupt(path, index, f"truncated record ({len(data)} of {length} bytes)")
            if handle.read(4) != TFRecordWriter.masked_crc(data):
                raise _corrupt(path, index, "data CRC mismatch")
            example = example_pb2.Example()
            try:
                example.ParseFromString(data)
            except Exception as exc:  # protobuf's DecodeError
                raise _corrupt(path, index, f"not a tf.train.Example ({exc})")
            features = example.features.feature
            values = []
            for field in TEXT_FIELDS:
                if field not in features or not features[field].bytes_list.value:
                    raise HyperrestartError(f"{path}: record {index} has no text field {field!r} "
                                            f"(fields: {sorted(features)}); this is not a P3 tfrecord")
                values.append(features[field].bytes_list.value[0].decode("utf-8"))
            yield tuple(values)
            index += 1


def read_parquet(path):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        missing = [f for f in TEXT_FIELDS if f not in parquet.schema_arrow.names]
        if missing:
            raise HyperrestartError(f"{path} lacks column(s) {missing} (has {parquet.schema_arrow.names}); "
                                    "expected the P3 parquet conversion")
        for batch in parquet.iter_batches(columns=list(TEXT_FIELDS), batch_size=CHUNK_ROWS):
            yield from zip(*(batch.column(f).to_pylist() for f in TEXT_FIELDS))
    except HyperrestartError:
        raise
    except Exception as exc:  # pyarrow.ArrowInvalid / OSError on a damaged file
        raise HyperrestartError(f"cannot read parquet file {path}: {exc}; re-download this file")


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HyperrestartError(f"{path}:{number}: invalid JSON ({exc.msg})")
            try:
                pair = tuple(row[f] if f in row else row[f.replace("_pretokenized", "")] for f in TEXT_FIELDS)
            except KeyError:
                raise HyperrestartError(f"{path}:{number}: needs fields {TEXT_FIELDS} (or text 'inputs'/'targets')")
            if not all(isinstance(value, str) for value in pair):
                raise HyperrestartError(f"{path}:{number}: inputs/targets must be text, got {row!r:.120}")
            yield pair


READERS = {"tfrecord": read_tfrecord, "parquet": read_parquet, "jsonl": read_jsonl}


def read_task(files, fmt, cap):
    """Yield up to `cap` (inputs, targets) pairs from a task's files (the first ones, as T0 takes them)."""
    count = 0
    for path in files:
        for pair in READERS[fmt](path):
            if cap is not None and count >= cap:
                return
            yield pair
            count += 1


# ---------------------------------------------------------------------------------------------------------- split
def split_sizes(total, holdout):
    """The released runner's rule: hold out ceil(holdout * N) rows (datasets' train_test_split rounding) and halve
    them; validation gets the floor half, test the ceil half (equal for the paper's 3.30M rows: 3301 each)."""
    held = math.ceil(holdout * total) if holdout else 0
    test = math.ceil(held / 2)
    return {"train": total - held, "validation": held - test, "test": test}


def split_assignment(total, holdout, seed):
    """Array of split ids (0 train, 1 validation, 2 test) per global row, from a seeded permutation."""
    import numpy as np

    sizes = split_sizes(total, holdout)
    assignment = np.zeros(total, dtype=np.int8)
    order = np.random.default_rng(seed).permutation(total)
    assignment[order[:sizes["validation"]]] = 1
    assignment[order[sizes["validation"]:sizes["validation"] + sizes["test"]]] = 2
    return assignment


# ---------------------------------------------------------------------------------------------------------- main
def prepare(source, out, tasks_file=None, fmt="auto", cap_per_dataset=500000, holdout=0.002, seed=0,
            split="train", overwrite=False, hash_inputs=True, progress=True):
    """Build OUT from SOURCE; returns the manifest (also written to OUT/manifest.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise HyperrestartError(f"P3 source {source} is not a folder; pass the local copy of bigscience/P3 to --source")
    if not 0 <= holdout < 1:
        raise HyperrestartError(f"--holdout must be in [0, 1), got {holdout}")
    if cap_per_dataset is not None and cap_per_dataset < 0:
        raise HyperrestartError(f"--cap-per-dataset must be >= 0 (0 = no cap), got {cap_per_dataset}")
    if out.exists() and not overwrite:
        raise HyperrestartError(f"output {out} already exists; remove it or pass --overwrite")
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
    caps = per_task_caps(tasks, cap_per_dataset)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    schema = pa.schema([("task", pa.string()), ("inputs", pa.string()), ("targets", pa.string())])
    try:
        # Pass 1: capped rows of every task into staging files, counting them.
        staging, counts = tmp / "staging", {}
        staging.mkdir()
        bar = tqdm(total=len(tasks), desc="prepare-p3: read", unit="task", disable=not progress)
        for position, task in enumerate(tasks):
            bar.set_postfix_str(task[:40])
            with pq.ParquetWriter(staging / f"{position:05d}.parquet", schema) as writer:
                count, chunk = 0, []
                for pair in read_task(files[task], fmt, caps[task]):
                    chunk.append(pair)
                    if len(chunk) >= CHUNK_ROWS:
                        writer.write_table(_table(schema, task, chunk))
                        count, chunk = count + len(chunk), []
                if chunk:
                    writer.write_table(_table(schema, task, chunk))
                    count += len(chunk)
            if count == 0:
                raise HyperrestartError(f"task {task} is empty: {', '.join(map(str, files[task]))} hold(s) no examples; "
                                        "re-download it or drop it from the task list")
            counts[task] = count
            bar.update()
        bar.close()

        # Pass 2: route each global row to its split.
        total = sum(counts.values())
        assignment = split_assignment(total, holdout, seed)
        sizes = split_sizes(total, holdout)
        writers = {name: pq.ParquetWriter(tmp / "data" / f"{name}.parquet", schema)
                   for name in SPLITS if sizes[name]}
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
            "cap_rule": "T0: each dataset capped at cap_per_dataset examples divided evenly over its templates in "
                        "the task list; the first examples of each task are kept",
            "tasks": tasks,
            "num_rows": total,
            "splits": sizes,
            "per_task": {task: {"dataset": dataset_of(task), "cap": caps[task], "rows": counts[task],
                                "capped": caps[task] is not None and counts[task] == caps[task],
                                **per_task_split[task]} for task in tasks},
            "columns": {"task": "P3 task name", "inputs": "inputs_pretokenized", "targets": "targets_pretokenized"},
            "outputs": {f"data/{name}.parquet": {"rows": sizes[name], "sha256": sha256_file(tmp / "data" / f"{name}.parquet")}
                        for name in SPLITS if sizes[name]},
            "inputs": {str(path.relative_to(source)): (sha256_file(path) if hash_inputs else None)
                       for task in tasks for path in files[task]},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _table(schema, task, pairs):
    import pyarrow as pa

    inputs, targets = zip(*pairs)
    return pa.Table.from_arrays([pa.array([task] * len(pairs), pa.string()), pa.array(inputs, pa.string()),
                                 pa.array(targets, pa.string())], schema=schema)

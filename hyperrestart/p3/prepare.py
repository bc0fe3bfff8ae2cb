"""Turn a local copy of bigscience/P3 into the folder the P3 runner trains on (no TensorFlow needed).

Input layouts (``--format auto`` picks the one present):
  tfrecord: SOURCE/data/{task}/{split}.tfrecord-NNNNN-of-NNNNN (+ info.{split}.json), read with the PyPI `tfrecord`
            package's protobuf and CRC-checked record by record;
  parquet:  SOURCE/{task}/{split}/*.parquet (the hub's parquet conversion);
  jsonl:    SOURCE/{task}/{split}.jsonl or SOURCE/{task}/{split}/*.jsonl.
Only the text fields are used (``inputs_pretokenized``/``targets_pretokenized``; for jsonl also plain string
``inputs``/``targets``). Output: OUT/data/{train,validation,test}.parquet with columns task, inputs, targets (loadable
with ``datasets.load_dataset(OUT)``) + OUT/manifest.json.

Safety: OUT is written into a temporary sibling ``.{OUT name}.prepare-p3-tmp-{pid}`` (guarded by a locked
``...-lock-{pid}`` file) and renamed into place at the end, so a failure never leaves a folder that looks complete;
SIGTERM and Ctrl-C remove it, and a later run removes what a killed run left (its lock is no longer held).
``--overwrite`` replaces only a folder that prepare-p3 wrote (its manifest, nothing else in it), never the source,
a folder inside it or one holding it.
"""
import datetime
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import sys
import threading
from pathlib import Path

from hyperrestart import __version__
from hyperrestart.core.files import file_sha256
from hyperrestart.core.errors import BusyError, HyperrestartError
from hyperrestart.p3.tasks import dataset_of, load_task_list, per_task_caps

FORMATS = ("tfrecord", "parquet", "jsonl")
SPLITS = ("train", "validation", "test")
TEXT_FIELDS = ("inputs_pretokenized", "targets_pretokenized")
CHUNK_ROWS = 10000
MANIFEST_VERSION = 1




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


def _tfrecord_records(path, want=None):
    """Yield (index, data or None) per record; data is read and CRC-checked only where want(index) (default: all)."""
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
            if want is not None and not want(index):
                position = handle.seek(length + 4, os.SEEK_CUR)
                if position > os.fstat(handle.fileno()).st_size:
                    raise _corrupt(path, index, "truncated record")
                yield index, None
            else:
                data = handle.read(length)
                if len(data) < length:
                    raise _corrupt(path, index, f"truncated record ({len(data)} of {length} bytes)")
                if handle.read(4) != TFRecordWriter.masked_crc(data):
                    raise _corrupt(path, index, "data CRC mismatch")
                yield index, data
            index += 1


def read_tfrecord(path, want=None):
    """Yield (inputs, targets) text of the records where want(index) (default: every record), each CRC-checked."""
    from tfrecord import example_pb2

    for index, data in _tfrecord_records(path, want):
        if data is None:
            continue
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


def read_parquet(path, want=None):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        missing = [f for f in TEXT_FIELDS if f not in parquet.schema_arrow.names]
        if missing:
            raise HyperrestartError(f"{path} lacks column(s) {missing} (has {parquet.schema_arrow.names}); "
                                    "expected the P3 parquet conversion")
        index = 0
        for batch in parquet.iter_batches(columns=list(TEXT_FIELDS), batch_size=CHUNK_ROWS):
            for pair in zip(*(batch.column(f).to_pylist() for f in TEXT_FIELDS)):
                if want is None or want(index):
                    yield pair
                index += 1
    except HyperrestartError:
        raise
    except Exception as exc:  # pyarrow.ArrowInvalid / OSError on a damaged file
        raise HyperrestartError(f"cannot read parquet file {path}: {exc}; re-download this file")


def read_jsonl(path, want=None):
    index = -1
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            index += 1
            if want is not None and not want(index):
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


def count_rows(path, fmt):
    """Examples in one input file, without decoding them."""
    if fmt == "tfrecord":
        return sum(1 for _ in _tfrecord_records(path, want=lambda index: False))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow.ArrowInvalid / OSError on a damaged file
            raise HyperrestartError(f"cannot read parquet file {path}: {exc}; re-download this file")
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if line.strip())


def sample_rows(total, cap, seed, task):
    """Sorted indices of the `cap` rows kept of a task's `total` (uniform, without replacement, reproducible):
    numpy default_rng([seed, first 8 bytes of sha256(task name) as a little-endian integer])."""
    import numpy as np

    task_key = int.from_bytes(hashlib.sha256(task.encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng([seed, task_key]).choice(total, size=cap, replace=False))


def read_task(files, fmt, keep=None, file_rows=None):
    """Yield a task's (inputs, targets) pairs in source order: every row, or only the rows whose task-wide index is in
    the sorted array `keep` (file_rows: the number of rows of each file)."""
    offset = 0
    for path, rows in zip(files, file_rows or [None] * len(files)):
        want = None
        if keep is not None:
            want = set((keep[(keep >= offset) & (keep < offset + rows)] - offset).tolist()).__contains__
            offset += rows
        yield from READERS[fmt](path, want)


# ---------------------------------------------------------------------------------------------------------- split
def split_sizes(total, holdout):
    """The released runner's rule: hold out ceil(holdout * N) rows (datasets' train_test_split rounding) and halve
    them; validation gets the floor half, test the ceil half (the paper's ~3.30M rows: 3301 each; the paper's 193
    tasks with T0's caps, 6.83M rows: 6829 each)."""
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


def check_split_sizes(total, holdout):
    """split_sizes(), or a HyperrestartError when the held-out part cannot fill one validation row or the train split
    would be empty."""
    sizes = split_sizes(total, holdout)
    if holdout and sizes["validation"] == 0:
        need = max(1, math.floor(1 / holdout))  # the smallest N with ceil(holdout * N) >= 2
        while split_sizes(need, holdout)["validation"] < 1:
            need += 1
        raise HyperrestartError(f"--holdout {holdout} of {total} row(s) holds out {total - sizes['train']} row(s): "
                                f"too few for one validation row (test takes the first); it needs at least {need} "
                                "rows: add tasks or rows, raise --holdout, or pass --holdout 0 for no held-out split")
    if sizes["train"] == 0:
        raise HyperrestartError(f"--holdout {holdout} of {total} row(s) leaves no train rows; lower --holdout")
    return sizes


# ---------------------------------------------------------------------------------------------- output folder safety
MANIFEST = "manifest.json"
TEMP_TAG = "prepare-p3"
TEMP_KINDS = ("lock", "tmp", "old")


class Terminated(HyperrestartError):
    """SIGTERM arrived while preparing; the unfinished output was removed."""

    exit_code = 128 + signal.SIGTERM


class _Signalled(BaseException):
    pass


def _raise_signalled(signum, frame):
    raise _Signalled(signum)


def written_by_prepare(folder):
    """The manifest of a folder prepare-p3 wrote, or None."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and "prepare-p3" in str(manifest.get("created_by", "")) \
            and "manifest_version" in manifest:
        return manifest
    return None


def check_locations(source, out):
    """OUT must not be the source, inside it, or hold it (--overwrite would delete the source)."""
    src, dst = Path(source).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        relation = "is" if dst == src else "is inside" if src in dst.parents else "holds"
        raise HyperrestartError(f"--out {out} {relation} the P3 source {source}; write the prepared data to a folder "
                                "outside the source (e.g. a sibling such as p3_prepared)")


def check_existing_out(out, overwrite):
    """Refuse an OUT that exists unless --overwrite and it is a prepare-p3 output holding nothing else (or empty)."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink():
        raise HyperrestartError(f"--out {out} is a symbolic link (to {os.readlink(out)}); pass the folder itself")
    if not out.is_dir():
        raise HyperrestartError(f"--out {out} exists and is not a folder; pass the path of a folder to create")
    if not overwrite:
        raise HyperrestartError(f"output {out} already exists; remove it or pass --overwrite")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    manifest = written_by_prepare(out)
    if manifest is None:
        raise HyperrestartError(f"--overwrite: {out} is not a prepare-p3 output (no {MANIFEST} written by prepare-p3) "
                                f"and is not empty ({', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}); "
                                "refusing to delete it: pick another --out or remove it yourself")
    ours = {MANIFEST, "data"}
    extra = [name for name in entries if name not in ours]
    data = out / "data"
    if data.is_dir():
        listed = manifest.get("outputs", {})
        extra += [f"data/{p.name}" for p in sorted(data.iterdir()) if f"data/{p.name}" not in listed]
    if extra:
        raise HyperrestartError(f"--overwrite: {out} holds files prepare-p3 did not write ({', '.join(extra[:5])}"
                                f"{' ...' if len(extra) > 5 else ''}); move them out first, or pick another --out")


def temp_path(out, kind, pid=None):
    return out.parent / f".{out.name}.{TEMP_TAG}-{kind}-{os.getpid() if pid is None else pid}"


def _lock_held(path):
    import fcntl

    try:
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def clean_stale(out, say):
    """Remove the temporary siblings of OUT left by prepare-p3 runs that died (their lock is free); a replaced OUT
    they had set aside (``-old-``) is put back when OUT is missing. A live run's lock is a BusyError."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.{TEMP_TAG}-({'|'.join(TEMP_KINDS)})-(\d+)$")
    found = {}
    for entry in out.parent.iterdir():
        match = pattern.match(entry.name)
        if match:
            found.setdefault(int(match.group(2)), {})[match.group(1)] = entry
    for pid, paths in sorted(found.items()):
        lock = paths.get("lock")
        if lock is not None and _lock_held(lock):
            raise BusyError(f"another prepare-p3 (pid {pid}) is writing {out} now (lock {lock}); wait for it to "
                            "finish, or stop it")
        old = paths.get("old")
        if old is not None:
            if not (out.exists() or out.is_symlink()) and written_by_prepare(old):
                old.rename(out)
                say(f"prepare-p3: restored {out} from {old.name}, set aside by an interrupted run (pid {pid})")
            else:
                shutil.rmtree(old)
                say(f"prepare-p3: removed {old}, left by an interrupted run (pid {pid})")
        if "tmp" in paths:
            shutil.rmtree(paths["tmp"])
            say(f"prepare-p3: removed {paths['tmp']}, left by an interrupted run (pid {pid})")
        if lock is not None:
            lock.unlink(missing_ok=True)


class _Claim:
    """Context: clean stale siblings, hold OUT's lock, catch SIGTERM; on exit remove the temporary folder and lock."""

    def __init__(self, out, say):
        self.out, self.say = out, say
        self.lock_path, self.tmp = temp_path(out, "lock"), temp_path(out, "tmp")

    def __enter__(self):
        import fcntl

        self.out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.out, self.say)
        self.lock = open(self.lock_path, "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lock.write(f"{os.getpid()}\n")
        self.lock.flush()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _raise_signalled)
        return self

    def __exit__(self, kind, exc, tb):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        shutil.rmtree(self.tmp, ignore_errors=True)
        set_aside = temp_path(self.out, "old")
        if set_aside.exists():  # stopped between moving OUT aside and the new one into place: put OUT back
            if self.out.exists() or self.out.is_symlink():
                shutil.rmtree(set_aside, ignore_errors=True)
            else:
                set_aside.rename(self.out)
        self.lock.close()
        self.lock_path.unlink(missing_ok=True)
        if kind is _Signalled:
            raise Terminated(f"terminated by SIGTERM; removed the unfinished output {self.tmp}; "
                             f"{self.out} is as it was") from None
        return False


def check_parent(out):
    """The nearest existing folder above OUT must be a folder (mkdir under a file fails with a puzzling message)."""
    for ancestor in Path(out).absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise HyperrestartError(f"cannot create --out {out}: {ancestor} is a file, not a folder; "
                                        "pick another --out")
            return


def _filesystem_error(exc, source, out):
    where = exc.filename or ""
    if where and Path(source).resolve() in Path(where).resolve().parents:
        what = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) else exc.strerror or str(exc)
        return HyperrestartError(f"cannot read {where}: {what}; check the P3 source {source}")
    what, advice = {errno.ENOSPC: ("the disk is full", "free some space"),
                    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
                    errno.EACCES: ("permission denied", "pick a --out in a folder you can write"),
                    errno.EPERM: ("operation not permitted", "pick a --out in a folder you can write"),
                    errno.EROFS: ("the file system is read-only", "pick a --out on a writable disk")}.get(
        exc.errno, (exc.strerror or str(exc), "fix that"))
    return HyperrestartError(f"cannot write the output {out}{f' ({where})' if where else ''}: {what}; nothing was "
                             f"left behind: {advice}, then run again")


# ---------------------------------------------------------------------------------------------------------- main
def prepare(source, out, tasks_file=None, fmt="auto", cap_per_dataset=500000, holdout=0.002, seed=0,
            split="train", overwrite=False, hash_inputs=True, progress=True, cap_per_task=None, say=None):
    """Build OUT from SOURCE; returns the manifest (also written to OUT/manifest.json). say: where notes go
    (default: stderr)."""
    source, out = Path(source), Path(out)
    say = say or (lambda text: print(text, file=sys.stderr))
    if not source.is_dir():
        raise HyperrestartError(f"P3 source {source} is not a folder; pass the local copy of bigscience/P3 to --source")
    if not 0 <= holdout < 1:
        raise HyperrestartError(f"--holdout must be in [0, 1), got {holdout}")
    for flag, value in (("--cap-per-dataset", cap_per_dataset), ("--cap-per-task", cap_per_task)):
        if value is not None and value < 0:
            raise HyperrestartError(f"{flag} must be >= 0 (0 = no cap), got {value}")
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
        with _Claim(out, say) as claim:
            check_existing_out(out, overwrite)
            return _build(source, out, claim.tmp, tasks, files, fmt, split, cap_per_dataset, cap_per_task, holdout,
                          seed, hash_inputs, progress)
    except OSError as exc:
        raise _filesystem_error(exc, source, out) from None


def _build(source, out, tmp, tasks, files, fmt, split, cap_per_dataset, cap_per_task, holdout, seed, hash_inputs,
           progress):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    # Pass 0: count every task's rows (no decoding), then T0's caps and the split sizes, before reading anything.
    file_rows = {task: [count_rows(path, fmt) for path in files[task]] for task in tasks}
    source_rows = {task: sum(file_rows[task]) for task in tasks}
    empty = [task for task in tasks if source_rows[task] == 0]
    if empty:
        raise HyperrestartError(f"task {empty[0]} is empty: {', '.join(map(str, files[empty[0]]))} hold(s) no "
                                "examples; re-download it or drop it from the task list")
    caps = per_task_caps(source_rows, cap_per_dataset, cap_per_task)
    kept = {task: min(source_rows[task], caps[task]) if caps[task] is not None else source_rows[task] for task in tasks}
    total = sum(kept.values())
    sizes = check_split_sizes(total, holdout)

    (tmp / "data").mkdir(parents=True)
    schema = pa.schema([("task", pa.string()), ("inputs", pa.string()), ("targets", pa.string())])
    # Pass 1: the kept rows of every task (a seeded sample where capped) into staging files.
    staging = tmp / "staging"
    staging.mkdir()
    bar = tqdm(total=len(tasks), desc="prepare-p3: read", unit="task", disable=not progress)
    for position, task in enumerate(tasks):
        bar.set_postfix_str(task[:40])
        keep = sample_rows(source_rows[task], kept[task], seed, task) if kept[task] < source_rows[task] else None
        with pq.ParquetWriter(staging / f"{position:05d}.parquet", schema) as writer:
            count, chunk = 0, []
            for pair in read_task(files[task], fmt, keep, file_rows[task]):
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

    # Pass 2: route each global row to its split.
    assignment = split_assignment(total, holdout, seed)
    writers = {name: pq.ParquetWriter(tmp / "data" / f"{name}.parquet", schema) for name in SPLITS if sizes[name]}
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
        "cap_per_task": cap_per_task or None,
        "cap_rule": "T0: a dataset whose train set (its largest task here) holds more than cap_per_dataset rows has "
                    "each task capped at cap_per_dataset // (the dataset's number of templates in P3); then every task "
                    "at most cap_per_task rows. A capped task keeps a uniform sample without replacement, in source "
                    "order: numpy default_rng([seed, first 8 bytes of sha256(task) little-endian]).choice(source_rows, "
                    "cap, replace=False)",
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
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    if out.exists() or out.is_symlink():
        old = temp_path(out, "old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return manifest


def _table(schema, task, pairs):
    import pyarrow as pa

    inputs, targets = zip(*pairs)
    return pa.Table.from_arrays([pa.array([task] * len(pairs), pa.string()), pa.array(inputs, pa.string()),
                                 pa.array(targets, pa.string())], schema=schema)

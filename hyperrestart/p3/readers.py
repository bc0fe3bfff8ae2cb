"""P3 input layouts and their readers (no TensorFlow needed).

  tfrecord: SOURCE/data/{task}/{split}.tfrecord-NNNNN-of-NNNNN (+ info.{split}.json), read with the PyPI `tfrecord`
            package's protobuf and CRC-checked record by record;
  parquet:  SOURCE/{task}/{split}/*.parquet (the hub's parquet conversion);
  jsonl:    SOURCE/{task}/{split}.jsonl or SOURCE/{task}/{split}/*.jsonl.
Only the text fields are used (``inputs_pretokenized``/``targets_pretokenized``; for jsonl also plain string
``inputs``/``targets``). Every reader yields (inputs, targets) pairs in source order, optionally only some rows.
"""
import json
import os
import struct

from hyperrestart.core.errors import HyperrestartError

FORMATS = ("tfrecord", "parquet", "jsonl")
TEXT_FIELDS = ("inputs_pretokenized", "targets_pretokenized")
CHUNK_ROWS = 10000


def task_files(source, task, fmt, split):
    """The input files of one task in one layout (sorted), or [] when the task is absent in that layout."""
    if fmt == "tfrecord":
        return sorted((source / "data" / task).glob(f"{split}.tfrecord-*-of-*"))
    if fmt == "parquet":
        return sorted((source / task / split).glob("*.parquet"))
    single = source / task / f"{split}.jsonl"
    return [single] if single.is_file() else sorted((source / task / split).glob("*.jsonl"))


def expected_location(source, task, fmt, split):
    """Where one task's first input file would be in a layout (for messages)."""
    return {"tfrecord": source / "data" / task / f"{split}.tfrecord-00000-of-00001",
            "parquet": source / task / split / "0000.parquet",
            "jsonl": source / task / f"{split}.jsonl"}[fmt]


def detect_format(source, tasks, split):
    """The layout of the first task found in any layout; an error naming the expected paths when none is."""
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
    """Yield (inputs, targets) text of the rows where want(index) (default: every row) of a P3 parquet file."""
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
    """Yield (inputs, targets) of the non-blank lines where want(index): *_pretokenized or plain inputs/targets."""
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

"""Hostile and unlucky P3 input (issue 18, rows 10-13, 18, 31-33): bad rows in every prepare-p3 format, missing
model/data paths for `p3`, a second writer on a run folder, and stopping a multi-process run."""
import json
from pathlib import Path

import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.p3.synthetic import SYNTHETIC_TASKS, synthetic_examples, write_synthetic_p3

TASK = SYNTHETIC_TASKS[0]
BAD = 6  # the bad row's 0-based index (jsonl line 7)


@pytest.fixture
def tasks_file(tmp_path):
    path = tmp_path / "tasks.txt"
    path.write_text(TASK + "\n", encoding="utf-8")
    return path


def good_rows(count=40):
    return synthetic_examples(TASK, count, 0)


def prepare_fails(capsys, source, tasks_file, out, fmt):
    """Run prepare-p3; assert exit 1, one line on stderr, no traceback, nothing left; return that line."""
    code = cli_main(["prepare-p3", "--source", str(source), "--out", str(out), "--tasks", str(tasks_file),
                     "--format", fmt, "--holdout", "0.1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists(), "a partial output was left"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []
    return err


# ---------------------------------------------------------------- rows 10 and 11: jsonl
JSONL_BAD = {
    "number": (b"5", "got int"),
    "list": (b"[1, 2]", "got list"),
    "null": (b"null", "got null"),
    "string": (b'"just text"', "got str"),
    "null field": (b'{"inputs_pretokenized": null, "targets_pretokenized": "x"}', "'inputs_pretokenized' is null"),
    "int field": (b'{"inputs_pretokenized": "x", "targets_pretokenized": 7}', "'targets_pretokenized' is int, not text"),
    "list field": (b'{"inputs": ["a"], "targets": "b"}', "'inputs_pretokenized' is list, not text"),
    "bad byte": (b'{"inputs_pretokenized": "caf\xe9", "targets_pretokenized": "x"}', "not UTF-8 text (byte 0xe9"),
    "lone surrogate": (b'{"inputs_pretokenized": "a\\ud800", "targets_pretokenized": "x"}', "not valid Unicode text"),
    "deep nesting": (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    "missing field": (b'{"inputs_pretokenized": "x"}', "missing ['targets_pretokenized']"),
}


@pytest.mark.parametrize("case", sorted(JSONL_BAD))
def test_jsonl_bad_row_named_by_file_and_line(case, tmp_path, tasks_file, capsys):
    line, reason = JSONL_BAD[case]
    source = tmp_path / "src"
    (source / TASK).mkdir(parents=True)
    lines = [json.dumps({"inputs_pretokenized": i, "targets_pretokenized": t}).encode() for i, t in good_rows()]
    lines[BAD] = line
    path = source / TASK / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    err = prepare_fails(capsys, source, tasks_file, tmp_path / "out", "jsonl")
    assert f"{path}:{BAD + 1}: " in err and reason in err, err


def test_jsonl_counts_and_reads_the_same_lines(tmp_path, tasks_file, capsys):
    """A carriage return between a line's JSON tokens, or U+2028 in its text, does not split it (lines end at \\n
    only, as JSON Lines says): every row is read, counted once."""
    source = tmp_path / "src"
    (source / TASK).mkdir(parents=True)
    rows = [(i + "\u2028", t) for i, t in good_rows()]
    (source / TASK / "train.jsonl").write_text(
        "".join(json.dumps({"inputs": i, "targets": t}, ensure_ascii=False).replace(", ", ",\r ") + "\n"
                for i, t in rows),
        encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["prepare-p3", "--source", str(source), "--out", str(out), "--tasks", str(tasks_file),
                     "--format", "jsonl", "--holdout", "0.1", "--quiet"]) == 0, capsys.readouterr().err
    import pyarrow.parquet as pq
    got = sorted(pq.read_table(out / "data" / "train.parquet").column("inputs").to_pylist()
                 + pq.read_table(out / "data" / "validation.parquet").column("inputs").to_pylist()
                 + pq.read_table(out / "data" / "test.parquet").column("inputs").to_pylist())
    assert got == sorted(i for i, _ in rows)


# ---------------------------------------------------------------- rows 12 and 13: parquet
def write_parquet(folder, inputs, targets):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.table({"inputs_pretokenized": inputs, "targets_pretokenized": targets}),
                   folder / "0000.parquet")
    return folder / "0000.parquet"


def _with_bad(values, bad):
    values = list(values)
    values[BAD] = bad
    return values


@pytest.mark.parametrize("case", ["int column", "list column", "null input", "null target", "binary bad utf8"])
def test_parquet_bad_row_named_by_file_and_row(case, tmp_path, tasks_file, capsys):
    inputs, targets = map(list, zip(*good_rows()))
    if case == "int column":
        inputs, reason = list(range(len(inputs))), "'inputs_pretokenized' is int, not text"
        bad_index = 0
    elif case == "list column":
        targets, reason = [[t] for t in targets], "'targets_pretokenized' is list, not text"
        bad_index = 0
    elif case == "null input":
        inputs, reason, bad_index = _with_bad(inputs, None), "'inputs_pretokenized' is null", BAD
    elif case == "null target":
        targets, reason, bad_index = _with_bad(targets, None), "'targets_pretokenized' is null", BAD
    else:
        inputs = _with_bad([i.encode() for i in inputs], b"caf\xe9")
        reason, bad_index = "'inputs_pretokenized' is not UTF-8 text (byte 0xe9", BAD
    path = write_parquet(tmp_path / "src" / TASK / "train", inputs, targets)
    err = prepare_fails(capsys, tmp_path / "src", tasks_file, tmp_path / "out", "parquet")
    assert f"{path}: row {bad_index}: " in err and reason in err, err


# ---------------------------------------------------------------- tfrecord, the same classes
@pytest.mark.parametrize("case", ["bad utf8", "int feature", "empty"])
def test_tfrecord_bad_record_named(case, tmp_path, tasks_file, capsys):
    from tfrecord.writer import TFRecordWriter

    folder = tmp_path / "src" / "data" / TASK
    folder.mkdir(parents=True)
    path = folder / "train.tfrecord-00000-of-00001"
    writer = TFRecordWriter(str(path))
    for index, (inputs, targets) in enumerate(good_rows()):
        record = {"inputs_pretokenized": (inputs.encode(), "byte"), "targets_pretokenized": (targets.encode(), "byte")}
        if index == BAD:
            record["inputs_pretokenized"] = {"bad utf8": (b"caf\xe9", "byte"), "int feature": ([1, 2], "int"),
                                             "empty": ([], "byte")}[case]
        writer.write(record)
    writer.close()
    reason = {"bad utf8": "not UTF-8 text (byte 0xe9", "int feature": "int64_list, not text",
              "empty": "is null"}[case]
    err = prepare_fails(capsys, tmp_path / "src", tasks_file, tmp_path / "out", "tfrecord")
    assert f"{path}: record {BAD}: 'inputs_pretokenized' is " in err, err
    if reason:
        assert reason in err, err


# ---------------------------------------------------------------- row 18: p3 pre-flight
def p3_fails(capsys, *argv, code=1):
    result = cli_main(["p3", *map(str, argv)])
    err = capsys.readouterr().err
    assert result == code, err
    assert "Traceback" not in err, err
    return err.strip().splitlines()


def test_p3_missing_paths_one_line_each_nothing_left(tmp_path, capsys):
    out = tmp_path / "runs" / "out"
    lines = p3_fails(capsys, "--model-name-or-path", "/missing", "--data-dir", "/missing", "--output-dir", out)
    assert len(lines) == 2, lines
    assert "--model-name-or-path /missing does not exist" in lines[0], lines
    assert "--data-dir /missing does not exist" in lines[1] and "prepare-p3" in lines[1], lines
    assert not (tmp_path / "runs").exists()
    lines = p3_fails(capsys, "--model-name-or-path", "/missing", "--data-dir", "/missing")
    assert len(lines) == 3 and "--output-dir is required" in lines[0], lines


def test_p3_layout_checked_before_start(tmp_path, capsys):
    model, data, out = tmp_path / "model", tmp_path / "data", tmp_path / "out"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    data.mkdir()
    (tmp_path / "file").write_text("x", encoding="utf-8")
    lines = p3_fails(capsys, "--model-name-or-path", model, "--data-dir", data, "--output-dir", tmp_path / "file" / "x")
    assert len(lines) == 4, lines
    assert "is not a model folder: no weights" in lines[0] and "holds no tokenizer" in lines[1], lines
    assert "holds no data files" in lines[2] and "is a file, not a folder" in lines[3], lines
    # the runner's own options after `--` are what counts: a good --data_dir there wins over the bad one
    from hyperrestart.p3.synthetic import tiny_p3_data
    lines = p3_fails(capsys, "--model-name-or-path", model, "--data-dir", data, "--output-dir", out,
                     "--", "--data_dir", tiny_p3_data())
    assert not any("--data-dir" in line for line in lines), lines
    assert not out.exists()


def tiny_paths():
    from hyperrestart.p3.synthetic import tiny_p3_data, tiny_t5_dir
    return ["--model-name-or-path", tiny_t5_dir(), "--data-dir", tiny_p3_data()]


def test_p3_runner_failing_at_start_leaves_no_empty_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert cli_main(["p3", *map(str, tiny_paths()), "--output-dir", str(out), "--python", "false"]) == 1
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert cli_main(["p3", *map(str, tiny_paths()), "--output-dir", str(kept), "--python", "false"]) == 1
    assert [p.name for p in kept.iterdir()] == [".hyperrestart-p3.lock"]  # a folder it did not make is kept


# ---------------------------------------------------------------- row 32: one writer per run folder
def test_p3_second_writer_refused_in_one_line(tmp_path, capsys):
    import subprocess
    import sys
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys,time; from hyperrestart.p3.runlock import RunFolderLock\n"
        f"with RunFolderLock({str(out)!r}):\n print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lines = p3_fails(capsys, *tiny_paths(), "--output-dir", out, "--python", "true", code=4)
        assert len(lines) == 1 and f"{out} is being written by another `hyperrestart p3`" in lines[0], lines
        assert f"pid {holder.pid}" in lines[0], lines
    finally:
        holder.kill()
        holder.wait()
    assert cli_main(["p3", *map(str, tiny_paths()), "--output-dir", str(out), "--python", "true"]) == 0


# ---------------------------------------------------------------- row 33: what is equal between 1 and N processes
def test_readme_says_what_is_equal_and_it_is(tmp_path):
    """The README claims equal data per step for any N, and unequal losses (dropout masks, reduction order); the
    first claim is checked here on the runner's own batching."""
    from hyperrestart.core.paths import PROJECT_ROOT
    from hyperrestart.p3.runner import arguments_module, runner_part

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## P3 instruction tuning"):readme.index("## Reproducing the paper")]
    flat = " ".join(section.split())
    assert "trains the same run as one process" not in flat
    for claim in ("**Equal for any N:** the examples of every optimizer step", "the lr at every step",
                  "**Not equal:** the losses", "Dropout draws its masks from each process's own random stream",
                  "order of floating-point sums", "never bit for bit"):
        assert claim in flat, claim

    data = runner_part("data")  # inside its package: data.py imports batching.py
    Batches, batch_layout = data.Batches, arguments_module().batch_layout

    class Rows:
        def __getitem__(self, rows):
            return {"input_ids": [[r + 1] * (r % 5 + 1) for r in rows], "labels": [[r + 1] for r in rows]}

    lengths = __import__("numpy").array([r % 5 + 1 for r in range(96)])
    batches = data.epoch_batches(lengths, 8, 0, 42, True, 4)

    def rows_per_step(world):
        layout = batch_layout(8, world, 2)
        steps = [Batches(Rows(), batches, 0, layout, rank, 0, 1) for rank in range(world)]
        return [sorted(int(v) for rank in steps for micro in rank[i] for v in micro["labels"][:, 0])
                for i in range(len(batches))]

    one = rows_per_step(1)
    assert len(one) == 12 and all(len(step) == 8 for step in one)
    assert rows_per_step(2) == one and rows_per_step(4) == one


# ---------------------------------------------------------------- row 31: stop means stop
def _alive(pid):
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _wait_gone(pids, seconds):
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _processes_with(text):
    """{pid: cmdline} of the processes whose command line holds `text`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found[int(entry.name)] = cmdline
    return found


def _launch(tmp_path, python, *extra):
    import os
    import subprocess
    import sys
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "hyperrestart.cli", "p3", *map(str, tiny_paths()),
                             "--output-dir", str(tmp_path / "run"), "--python", str(python), *extra],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_runner_dies_with_a_killed_launcher(tmp_path):
    """SIGKILL to `hyperrestart p3` alone (not its group): the runner it started gets its parent-death signal."""
    import os
    import signal
    import sys
    import time
    marker = tmp_path / "started"
    fake = tmp_path / "fake-python"
    # a python for the run record's version probe (`-c CODE`), a runner that sleeps otherwise
    fake.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\ntouch {marker}\nexec sleep 300\n',
                    encoding="utf-8")
    fake.chmod(0o755)
    launcher = _launch(tmp_path, fake)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    children = [pid for pid, cmd in _processes_with("sleep 300").items()
                if os.getpgid(pid) == launcher.pid] if marker.exists() else []
    assert children, launcher.stderr.read()
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    assert _wait_gone(children, 10) == [], "the runner outlived its launcher"


def test_worker_whose_launcher_is_gone_stops_at_start(tmp_path):
    """A torchrun worker that starts after its launcher died exits at once (the race the parent-death signal leaves)."""
    import os
    import subprocess
    import sys
    from hyperrestart.p3.runner import RUNNER_PACKAGE
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from lifeline import guard_worker; guard_worker(); "
            "print('ran')")
    env = dict(os.environ, TORCHELASTIC_RUN_ID="x", HYPERRESTART_P3_LAUNCHER_PID="999999999")
    done = subprocess.run([sys.executable, "-c", code, str(RUNNER_PACKAGE)], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "launcher that started this worker is gone" in done.stderr, done
    env["HYPERRESTART_P3_LAUNCHER_PID"] = str(os.getppid())  # this test's parent is the worker's grandparent
    done = subprocess.run([sys.executable, "-c", code, str(RUNNER_PACKAGE)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ran", done


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGKILL", "SIGTERM"])
def test_signal_to_process_group_stops_every_torchrun_worker(signum, tmp_path):
    """`hyperrestart p3 --nproc-per-node 2` (CPU, gloo): a signal to its process group stops the launcher, torchrun
    and both workers, though torchrun puts the workers in sessions of their own."""
    import os
    import signal
    import subprocess
    import sys
    import time
    launcher = _launch(tmp_path, sys.executable, "--tiny", "--nproc-per-node", "2", "--",
                       "--max_steps", "100000", "--eval_at_start", "false", "--eval_steps", "0", "--save_steps", "0")
    run = str(tmp_path / "run")
    workers = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and launcher.poll() is None:
        workers = {pid: cmd for pid, cmd in _processes_with(run).items()
                   if "p3_trainer.py" in cmd and "torch.distributed.run" not in cmd and pid != launcher.pid}
        if len(workers) == 2 and (tmp_path / "run" / "train_log.csv").exists():
            break
        time.sleep(0.5)
    assert len(workers) == 2, (launcher.poll(), launcher.stderr.read() if launcher.poll() is not None else "")
    assert all(os.getpgid(pid) != launcher.pid for pid in workers), "workers share the launcher's group"
    # row 32 on a real run: a second `p3` on the folder that is training is refused in one line
    second = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "p3", "--tiny", "--output-dir", run],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 4 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"another `hyperrestart p3` right now (pid {launcher.pid})" in second.stderr, second.stderr
    everything = list(_processes_with(run))
    os.killpg(launcher.pid, getattr(signal, signum))
    launcher.wait()
    assert _wait_gone(everything, 30) == [], f"still running after {signum} to the group: {everything}"

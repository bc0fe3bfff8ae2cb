"""prepare-p3 on synthetic P3 copies in both hub layouts (tfrecord via the `tfrecord` package, parquet)."""
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.p3 import claim, prepare as prep, split, tasks as p3_tasks
from hyperrestart.p3.synthetic import SYNTHETIC_TASKS, synthetic_examples, write_synthetic_p3
from hyperrestart.p3.tasks import dataset_of, load_task_list, paper_tasks

COUNT = 60


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("p3src")
    tasks = root / "tasks.txt"
    tasks.write_text("# synthetic\n" + "\n".join(SYNTHETIC_TASKS) + "\n")
    return {layout: write_synthetic_p3(root / layout, layout, count=COUNT) for layout in ("tfrecord", "parquet")}, tasks


def run_cli(*argv):
    return cli_main(["prepare-p3", *map(str, argv), "--quiet"])


def leftovers(parent):
    return [p.name for p in Path(parent).iterdir() if p.name.startswith(".")]


def test_paper_task_list_and_dataset_mapping():
    tasks = paper_tasks()
    assert len(tasks) == 193 == len(set(tasks))
    assert all(dataset_of(t) for t in tasks)
    assert dataset_of("adversarial_qa_dbidaf_based_on") == "adversarial_qa_dbidaf"
    assert dataset_of("duorc_SelfRC_title_generation") == "duorc_SelfRC"
    assert dataset_of("cos_e_v1.11_i_think") == "cos_e_v1.11"


def test_split_rule_gives_the_papers_3301_validation_rows():
    assert split.split_sizes(3_301_000, 0.002) == {"train": 3_294_398, "validation": 3301, "test": 3301}
    assert split.split_sizes(1001, 0.002) == {"train": 998, "validation": 1, "test": 2}
    assert split.split_sizes(10, 0) == {"train": 10, "validation": 0, "test": 0}


@pytest.mark.parametrize("layout", ["tfrecord", "parquet"])
def test_prepare_both_layouts(sources, layout, tmp_path):
    srcs, tasks = sources
    out = tmp_path / "out"
    assert run_cli("--source", srcs[layout], "--out", out, "--tasks", tasks, "--holdout", 0.1,
                   "--cap-per-dataset", 50, "--cap-per-task", 9) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_format"] == layout and manifest["seed"] == 0 and manifest["tasks"] == list(SYNTHETIC_TASKS)
    assert manifest["cap_per_dataset"] == 50 and manifest["cap_per_task"] == 9
    # T0 caps: every dataset here has 60 > 50 train rows -> 50 // its templates in P3 (quarel 5, sciq 5, wiqa 8),
    # then at most 9 per task
    per_task = manifest["per_task"]
    assert {t: (per_task[t]["cap"], per_task[t]["rows"], per_task[t]["source_rows"]) for t in SYNTHETIC_TASKS} == {
        "quarel_choose_between": (9, 9, 60), "quarel_logic_test": (9, 9, 60), "sciq_Direct_Question": (9, 9, 60),
        "wiqa_effect_with_string_answer": (6, 6, 60)}
    assert all(per_task[t]["capped"] for t in SYNTHETIC_TASKS)
    assert manifest["splits"] == {"train": 29, "validation": 2, "test": 2}
    for name, entry in manifest["outputs"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]
    for name, digest in manifest["inputs"].items():
        assert hashlib.sha256((srcs[layout] / name).read_bytes()).hexdigest() == digest
    import datasets
    data = datasets.load_dataset(str(out))
    assert {k: len(v) for k, v in data.items()} == {"train": 29, "validation": 2, "test": 2}
    assert data["train"].column_names == ["task", "inputs", "targets"]
    # the capped rows are the seeded sample (not the first rows), in source order
    examples = synthetic_examples("sciq_Direct_Question", COUNT)
    expected = [examples[i] for i in p3_tasks.sample_rows(COUNT, 9, 0, "sciq_Direct_Question")]
    got = [(r["inputs"], r["targets"]) for name in ("train", "validation", "test") for r in data[name]
           if r["task"] == "sciq_Direct_Question"]
    assert sorted(got) == sorted(expected) and expected != examples[:9]
    assert not leftovers(tmp_path)


def test_capped_sample_is_random_and_seeded(tmp_path):
    """A source sorted by label (as some P3 files are) keeps both labels; the sample depends on the seed only."""
    src = tmp_path / "src" / "app_reviews_convert_to_rating"
    src.mkdir(parents=True)
    with open(src / "train.jsonl", "w") as handle:
        for i in range(400):
            handle.write(json.dumps({"inputs": f"review {i}", "targets": "good" if i < 200 else "bad"}) + "\n")
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("app_reviews_convert_to_rating\n")
    kept = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"out-{seed}"
        manifest = prep.prepare(tmp_path / "src", out, tasks_file=tasks, cap_per_dataset=200, holdout=0, seed=seed,
                                overwrite=True, progress=False)
        entry = manifest["per_task"]["app_reviews_convert_to_rating"]
        assert (entry["cap"], entry["rows"], entry["source_rows"], entry["capped"]) == (50, 50, 400, True)
        import pyarrow.parquet as pq
        table = pq.read_table(out / "data" / "train.parquet").to_pydict()
        kept.setdefault(seed, []).append(table["inputs"])
        assert 10 < table["targets"].count("good") < 40  # a uniform sample of 50 of 200 good + 200 bad
        numbers = [int(text.split()[1]) for text in table["inputs"]]
        assert numbers == sorted(numbers) == p3_tasks.sample_rows(400, 50, seed, "app_reviews_convert_to_rating").tolist()
    assert kept[0][0] == kept[0][1] and kept[0][0] != kept[1][0]


def test_layouts_give_identical_outputs_and_seed_matters(sources, tmp_path):
    srcs, tasks = sources
    hashes = {}
    for layout, seed in (("tfrecord", 0), ("parquet", 0), ("parquet", 1)):
        out = tmp_path / f"{layout}-{seed}"
        prep.prepare(srcs[layout], out, tasks_file=tasks, holdout=0.1, seed=seed, cap_per_dataset=50, progress=False)
        hashes[layout, seed] = json.loads((out / "manifest.json").read_text())["outputs"]
    assert hashes["tfrecord", 0] == hashes["parquet", 0]
    assert hashes["parquet", 1]["data/validation.parquet"] != hashes["parquet", 0]["data/validation.parquet"]


def test_existing_output_needs_overwrite(sources, tmp_path):
    srcs, tasks = sources
    out = tmp_path / "out"
    prep.prepare(srcs["parquet"], out, tasks_file=tasks, holdout=0.05, progress=False)
    with pytest.raises(HyperrestartError, match="already exists"):
        prep.prepare(srcs["parquet"], out, tasks_file=tasks, holdout=0.05, progress=False)
    prep.prepare(srcs["parquet"], out, tasks_file=tasks, overwrite=True, holdout=0.1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["splits"]["validation"] == 12  # 0.1 * 240 rows, halved


def copy_source(srcs, layout, tmp_path):
    import shutil
    dst = tmp_path / f"src-{layout}"
    shutil.copytree(srcs[layout], dst)
    return dst


def assert_fails(capsys, argv, *needles, out=None, code=1):
    assert run_cli(*argv, *([] if "--holdout" in argv else ["--holdout", 0.1])) == code
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    if out is not None:
        assert not Path(out).exists() and not leftovers(Path(out).parent)


def test_missing_task_folder(sources, tmp_path, capsys):
    srcs, tasks = sources
    import shutil
    src = copy_source(srcs, "tfrecord", tmp_path)
    shutil.rmtree(src / "data" / "sciq_Direct_Question")
    out = tmp_path / "out"
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks], "1 task(s) missing",
                 "sciq_Direct_Question (expected", "train.tfrecord-00000-of-00001", out=out)


def test_corrupt_tfrecord_leaves_nothing(sources, tmp_path, capsys):
    srcs, tasks = sources
    src = copy_source(srcs, "tfrecord", tmp_path)
    # the last task is corrupt, so the first three have already been read when it fails
    bad = src / "data" / SYNTHETIC_TASKS[-1] / "train.tfrecord-00000-of-00001"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks], "corrupt tfrecord", str(bad),
                 "CRC mismatch", out=out)
    bad.write_bytes(bad.read_bytes()[:-7])  # truncated
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks], str(bad), out=out)


def test_corrupt_parquet(sources, tmp_path, capsys):
    srcs, tasks = sources
    src = copy_source(srcs, "parquet", tmp_path)
    bad = src / "sciq_Direct_Question" / "train" / "0000.parquet"
    bad.write_bytes(b"not a parquet file at all")
    out = tmp_path / "out"
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks], "cannot read parquet file", str(bad),
                 out=out)


def test_empty_task(sources, tmp_path, capsys):
    srcs, tasks = sources
    src = copy_source(srcs, "tfrecord", tmp_path)
    (src / "data" / "quarel_logic_test" / "train.tfrecord-00000-of-00001").write_bytes(b"")
    out = tmp_path / "out"
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks], "task quarel_logic_test is empty", out=out)


def test_unknown_tasks_in_list(sources, tmp_path, capsys):
    srcs, _ = sources
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("quarel_choose_between\nnot_a_p3_task\nquarel_choose_between\n")
    out = tmp_path / "out"
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks], str(tasks),
                 "line 2: unknown task 'not_a_p3_task'", "line 3: 'quarel_choose_between' repeats line 1", out=out)
    tasks.write_text("# nothing\n")
    with pytest.raises(HyperrestartError, match="names no tasks"):
        load_task_list(tasks)


def test_default_task_list_against_partial_copy(sources, tmp_path, capsys):
    srcs, _ = sources
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", tmp_path / "out"], "189 task(s) missing")


def test_console_entry_point(sources, tmp_path):
    srcs, tasks = sources
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "prepare-p3", "--source", str(srcs["parquet"]),
                             "--out", str(out), "--tasks", str(tasks), "--holdout", "0.05", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 4 * COUNT  # default cap 500k: nothing capped
    manifest = json.loads((out / "manifest.json").read_text())
    assert not any(entry["capped"] for entry in manifest["per_task"].values())
    assert {entry["cap"] for entry in manifest["per_task"].values()} == {None}


# --- --out safety (issue 9) -----------------------------------------------------------------------------------------
def tree_listing(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


@pytest.mark.parametrize("where, relation", [("source", "is the P3 source"), ("parent", "holds the P3 source"),
                                             ("inside", "is inside the P3 source")])
def test_out_never_touches_the_source(sources, tmp_path, capsys, where, relation):
    srcs, tasks = sources
    src = copy_source(srcs, "parquet", tmp_path)
    out = {"source": src, "parent": tmp_path, "inside": src / "prepared"}[where]
    before = tree_listing(tmp_path)
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks, "--overwrite"], relation,
                 "outside the source")
    assert tree_listing(tmp_path) == before


def test_overwrite_refuses_folders_prepare_p3_did_not_write(sources, tmp_path, capsys):
    srcs, tasks = sources
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks, "--overwrite"],
                 "is not a prepare-p3 output", "thesis.tex", "refusing to delete it")
    assert (out / "thesis.tex").read_text() == "precious"
    # a folder with a manifest.json of something else is not ours either
    (out / "manifest.json").write_text(json.dumps({"name": "other tool"}))
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks, "--overwrite"],
                 "is not a prepare-p3 output")
    # ours, but with a file added since: refused too
    ours = tmp_path / "ours"
    assert run_cli("--source", srcs["parquet"], "--out", ours, "--tasks", tasks, "--holdout", 0.1) == 0
    (ours / "data" / "notes.txt").write_text("mine")
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", ours, "--tasks", tasks, "--overwrite"],
                 "holds files prepare-p3 did not write", "data/notes.txt")
    (ours / "data" / "notes.txt").unlink()
    assert run_cli("--source", srcs["parquet"], "--out", ours, "--tasks", tasks, "--holdout", 0.2, "--overwrite") == 0
    assert json.loads((ours / "manifest.json").read_text())["holdout"] == 0.2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("--source", srcs["parquet"], "--out", empty, "--tasks", tasks, "--holdout", 0.1, "--overwrite") == 0
    assert not leftovers(tmp_path)


def test_out_is_a_file_or_under_a_file(sources, tmp_path, capsys):
    srcs, tasks = sources
    out = tmp_path / "out.txt"
    out.write_text("x")
    for extra in ([], ["--overwrite"]):
        assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks, *extra],
                     "exists and is not a folder")
    assert out.read_text() == "x"
    link = tmp_path / "link"
    link.symlink_to(srcs["parquet"])
    assert_fails(capsys, ["--source", srcs["tfrecord"], "--out", link, "--tasks", tasks, "--overwrite"],
                 "is a symbolic link")
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", out / "sub", "--tasks", tasks],
                 f"cannot create --out {out / 'sub'}: {out} is a file")


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied")])
def test_filesystem_errors_are_clear_and_leave_nothing(sources, tmp_path, capsys, monkeypatch, code, text):
    import pyarrow.parquet as pq
    srcs, tasks = sources
    out = tmp_path / "out"
    assert run_cli("--source", srcs["parquet"], "--out", out, "--tasks", tasks, "--holdout", 0.1) == 0
    before = (out / "manifest.json").read_text()

    def fail(self, table, *args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail)
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks, "--overwrite"],
                 f"cannot write the output {out}", text, "nothing was left behind")
    assert (out / "manifest.json").read_text() == before and not leftovers(tmp_path)


def test_source_unreadable_is_clear(sources, tmp_path, capsys, monkeypatch):
    srcs, tasks = sources
    src = copy_source(srcs, "tfrecord", tmp_path)
    real_open = open

    def guarded(path, *args, **kwargs):
        if str(path).endswith("train.tfrecord-00000-of-00001") and "sciq" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", guarded)
    out = tmp_path / "out"
    assert_fails(capsys, ["--source", src, "--out", out, "--tasks", tasks], "cannot read", "sciq_Direct_Question",
                 "permission denied", out=out)


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temp_folders_are_removed_and_a_set_aside_output_restored(sources, tmp_path, capsys):
    srcs, tasks = sources
    out = tmp_path / "out"
    pid = dead_pid()
    stale_tmp = claim.temp_path(out, "tmp", pid)
    (stale_tmp / "data").mkdir(parents=True)
    (stale_tmp / "data" / "train.parquet").write_bytes(b"half written")
    claim.temp_path(out, "lock", pid).write_text(f"{pid}\n")
    (tmp_path / ".unrelated.prepare-p3-tmp-1").mkdir()  # another OUT's: not ours to touch
    assert run_cli("--source", srcs["parquet"], "--out", out, "--tasks", tasks, "--holdout", 0.1) == 0
    assert f"removed {stale_tmp}" in capsys.readouterr().err
    assert leftovers(tmp_path) == [".unrelated.prepare-p3-tmp-1"]
    # killed between moving OUT aside and moving the new one in: the next run puts OUT back, losing nothing
    pid = dead_pid()
    out.rename(claim.temp_path(out, "old", pid))
    assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks], "already exists")
    assert claim.written_by_prepare(out) and leftovers(tmp_path) == [".unrelated.prepare-p3-tmp-1"]


def test_a_running_prepare_is_not_disturbed(sources, tmp_path, capsys):
    import fcntl
    srcs, tasks = sources
    out = tmp_path / "out"
    live_tmp = claim.temp_path(out, "tmp", 4242)
    live_tmp.mkdir()
    with open(claim.temp_path(out, "lock", 4242), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert_fails(capsys, ["--source", srcs["parquet"], "--out", out, "--tasks", tasks],
                     "another prepare-p3 (pid 4242) is writing", code=4)
    assert live_tmp.is_dir() and not out.exists()


SIGTERM_SCRIPT = """
import os, signal, sys
from hyperrestart.p3 import readers
real = readers.READERS["parquet"]
def reader(path, want=None):
    for number, pair in enumerate(real(path, want)):
        if "wiqa" in str(path) and number == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        yield pair
readers.READERS["parquet"] = reader
from hyperrestart.cli import main
sys.exit(main(["prepare-p3", *sys.argv[1:]]))
"""


def test_sigterm_removes_the_unfinished_output(sources, tmp_path):
    srcs, tasks = sources
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, "--source", str(srcs["parquet"]), "--out", str(out),
                             "--tasks", str(tasks), "--holdout", "0.1", "--quiet"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 143, result.stderr
    assert "terminated by SIGTERM" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not leftovers(tmp_path)


def test_lock_probe_sees_a_holder_and_creates_nothing(tmp_path):
    """FileLock.held_elsewhere, the probe prepare-p3 uses on another run's lock file (flock conflicts between open
    files, so a second handle in this process stands for another process)."""
    from hyperrestart.core.locks import FileLock

    missing = tmp_path / "missing.lock"
    assert FileLock(missing).held_elsewhere() is False and not missing.exists()
    holder = FileLock(tmp_path / "x.lock")
    holder._open()
    assert holder.try_exclusive()
    assert FileLock(holder.path).held_elsewhere() is True
    holder.__exit__(None, None, None)
    assert FileLock(holder.path).held_elsewhere() is False
    assert FileLock(holder.path).held_elsewhere() is False  # the probe itself leaves nothing held

"""T0's mixing mode, end to end (issue 14): prepare-p3 --caps-as mixing-rates keeps every row and records the rates;
the runner's data path draws global batches in proportion to them, reproducibly by seed, the same on every process,
and exactly on resume; hostile manifests are refused in one line."""
import csv
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.p3 import preflight
from hyperrestart.p3.prepare import prepare
from hyperrestart.p3.runner import runner_part
from hyperrestart.p3.synthetic import SYNTHETIC_TASKS, write_synthetic_p3
from hyperrestart.p3.tasks import mixing_rates

COUNT, CAP = 80, 79  # every synthetic dataset holds 80 > 79 rows per task: rates 79 // templates (quarel/sciq 15, wiqa 9)
RATES = {"quarel_choose_between": 15, "quarel_logic_test": 15, "sciq_Direct_Question": 15,
         "wiqa_effect_with_string_answer": 9}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixsrc")
    (root / "tasks.txt").write_text("\n".join(SYNTHETIC_TASKS) + "\n", encoding="utf-8")
    return write_synthetic_p3(root / "src", "jsonl", count=COUNT), root / "tasks.txt"


@pytest.fixture(scope="module")
def mixed(source, tmp_path_factory):
    src, tasks = source
    out = tmp_path_factory.mktemp("mixed") / "prepared"
    prepare(src, out, tasks_file=tasks, fmt="jsonl", holdout=0.1, cap_per_dataset=CAP, caps_as="mixing-rates",
            progress=False, say=lambda text: None)
    return out


def _rows_per_task(path):
    tasks = pq.read_table(path, columns=["task"]).column("task").to_pylist()
    return {task: tasks.count(task) for task in set(tasks)}


# --- prepare-p3: truncation or mixing rates --------------------------------------------------------------------------
def test_mixing_rates_keep_every_row_and_record_t0s_rates(mixed, source, tmp_path, capsys):
    manifest = json.loads((mixed / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["caps_as"] == "mixing-rates" and manifest["mixing_rates"] == RATES
    assert RATES == mixing_rates({task: COUNT for task in SYNTHETIC_TASKS}, CAP)
    assert manifest["num_rows"] == 4 * COUNT  # every row kept
    assert all(not entry["capped"] and entry["rows"] == COUNT for entry in manifest["per_task"].values())
    rows = {split: _rows_per_task(mixed / "data" / f"{split}.parquet") for split in ("train", "validation", "test")}
    assert sum(sum(r.values()) for r in rows.values()) == 4 * COUNT
    assert {task: manifest["per_task"][task]["train"] for task in RATES} == rows["train"]
    # truncation (the default) drops rows instead and records no rates
    src, tasks = source
    assert cli_main(["prepare-p3", "--source", str(src), "--out", str(tmp_path / "cut"), "--tasks", str(tasks),
                     "--format", "jsonl", "--holdout", "0.1", "--cap-per-dataset", str(CAP), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["caps_as"] == "truncation"
    cut = json.loads((tmp_path / "cut" / "manifest.json").read_text(encoding="utf-8"))
    assert cut["caps_as"] == "truncation" and "mixing_rates" not in cut and cut["num_rows"] == sum(RATES.values())


def test_a_task_all_held_out_is_refused_before_reading(tmp_path):
    from hyperrestart.p3.split import split_assignment
    write_synthetic_p3(tmp_path / "src", "jsonl", tasks=("quarel_choose_between",), count=1)
    src = write_synthetic_p3(tmp_path / "src", "jsonl", tasks=("sciq_Direct_Question",), count=20)
    (tmp_path / "tasks.txt").write_text("quarel_choose_between\nsciq_Direct_Question\n", encoding="utf-8")
    held = next(seed for seed in range(100) if split_assignment(21, 0.5, seed)[0] != 0)  # the one row is held out
    kept = next(seed for seed in range(100) if split_assignment(21, 0.5, seed)[0] == 0)
    with pytest.raises(HyperrestartError, match="every one of task quarel_choose_between's 1 row.s. falls in the held"):
        prepare(src, tmp_path / "out", tasks_file=tmp_path / "tasks.txt", fmt="jsonl", holdout=0.5, seed=held,
                caps_as="mixing-rates", progress=False, say=lambda text: None)
    assert not (tmp_path / "out").exists()
    prepare(src, tmp_path / "out", tasks_file=tmp_path / "tasks.txt", fmt="jsonl", holdout=0.5, seed=kept,
            caps_as="mixing-rates", progress=False, say=lambda text: None)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["mixing_rates"] == {
        "quarel_choose_between": 1, "sciq_Direct_Question": 20}


# --- the runner's data path ------------------------------------------------------------------------------------------
def _task_rows(sizes):
    task_rows, start = {}, 0
    for task, size in sizes.items():
        task_rows[task] = np.arange(start, start + size)
        start += size
    return task_rows, start


def test_the_runners_mixing_epochs_draw_tasks_in_proportion_over_100k_draws():
    batching = runner_part("batching")
    rates = {"a": 55_555, "b": 288_065, "c": 10_000, "d": 1_000}
    task_rows, total = _task_rows({"a": 500, "b": 300, "c": 200, "d": 7})
    lengths = np.random.default_rng(0).integers(1, 500, total)
    batch = 64
    epoch_steps = sum(rates.values()) // batch  # an epoch: sum(rates) drawn rows, in whole batches
    drawn = []
    for epoch in range(2):
        batches = batching.mixture_epoch(lengths, task_rows, rates, batch, epoch, 5, True, 50)
        assert len(batches) == epoch_steps and {len(b) for b in batches} == {batch}
        drawn += [row for b in batches for row in b]
    drawn = np.array(drawn[:100_000])
    owner = np.searchsorted([rows[-1] for rows in task_rows.values()], drawn)
    for i, (task, rate) in enumerate(rates.items()):
        p = rate / sum(rates.values())
        assert abs((owner == i).mean() - p) < 4 * math.sqrt(p * (1 - p) / len(drawn)), task
    # length grouping only reorders the epoch's draws: the same rows, batches of similar lengths
    flat = runner_part("mixing").mixture_rows(task_rows, rates, epoch_steps * batch, 1, 5)
    assert sorted(row for b in batches for row in b) == sorted(flat.tolist())
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    ungrouped = batching.mixture_epoch(lengths, task_rows, rates, batch, 1, 5, False, 50)
    assert spread < np.mean([np.ptp(lengths[b]) for b in ungrouped]) / 3


def test_the_runners_mixing_stream_is_reproducible_and_the_same_on_every_process():
    batching = runner_part("batching")
    task_rows, total = _task_rows({"a": 50, "b": 30})
    lengths = np.arange(total) % 17
    epoch = [batching.mixture_epoch(lengths, task_rows, {"a": 50, "b": 30}, 8, e, 7, True, 4) for e in range(3)]
    assert epoch == [batching.mixture_epoch(lengths, task_rows, {"a": 50, "b": 30}, 8, e, 7, True, 4)
                     for e in range(3)]  # same seed, same order: what every process computes
    assert epoch[0] != batching.mixture_epoch(lengths, task_rows, {"a": 50, "b": 30}, 8, 0, 8, True, 4)
    assert epoch[0] != epoch[1]  # each epoch a new draw
    # rank r of N takes rows r, r+N, ... of each global batch (p3_runner/data.Batches): together, the global batch
    for batch in epoch[0]:
        assert sorted(row for r in range(4) for row in batch[r::4]) == sorted(batch)
    # epochs over every row are what they were before the mixing mode (the same batches, the same rows once)
    rows = batching.epoch_batches(lengths, 8, 0, 7, True, 4)
    assert sorted(row for b in rows for row in b) == list(range(total))


# --- hostile manifests: one line each, before the runner starts --------------------------------------------------------
def _data_with_manifest(tmp_path, mixed, change):
    data = tmp_path / "data"
    (data / "data").mkdir(parents=True)
    for name in ("train", "validation", "test"):
        (data / "data" / f"{name}.parquet").write_bytes((mixed / "data" / f"{name}.parquet").read_bytes())
    manifest = json.loads((mixed / "manifest.json").read_text(encoding="utf-8"))
    change(manifest)
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")  # NaN written as JSON's NaN
    return data


def _set_rate(task, value):
    return lambda manifest: manifest["mixing_rates"].__setitem__(task, value)


HOSTILE = {
    "a rate of 0": (_set_rate("sciq_Direct_Question", 0), "has mixing rate 0, so it would never be sampled"),
    "a NaN rate": (_set_rate("sciq_Direct_Question", float("nan")), "has mixing rate nan, not a finite number"),
    "a negative rate": (_set_rate("sciq_Direct_Question", -3), "has mixing rate -3, not a finite number"),
    "an infinite rate": (_set_rate("sciq_Direct_Question", float("inf")), "has mixing rate inf, not a finite"),
    "a text rate": (_set_rate("sciq_Direct_Question", "15"), "has mixing rate '15', not a finite number"),
    "missing rates": (lambda m: m.pop("mixing_rates"), "mixing_rates must be a non-empty object"),
    "a task without a rate": (lambda m: m["mixing_rates"].pop("wiqa_effect_with_string_answer"),
                              "1 task(s) of the train split have no mixing rate (wiqa_effect_with_string_answer)"),
    "a rate for a task with 0 rows": (_set_rate("cos_e_v1.11_i_think", 10),
                                      "task 'cos_e_v1.11_i_think' has mixing rate 10 but no rows in the train split"),
    "a task whose train rows are 0": (lambda m: m["per_task"]["quarel_logic_test"].__setitem__("train", 0),
                                      "task 'quarel_logic_test' has mixing rate 15 but no rows in the train split"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_manifest_is_refused_in_one_line(case, mixed, tmp_path):
    change, expected = HOSTILE[case]
    data = _data_with_manifest(tmp_path, mixed, change)
    found = preflight.mixing_problems(str(data), "auto")
    assert len(found) == 1 and expected in found[0] and "\n" not in found[0], found
    assert preflight.mixing_problems(str(data), "off") == []  # --mixing off trains on every row, no rates read


def test_mixing_rates_asked_of_data_without_rates_is_refused(mixed, tmp_path):
    data = _data_with_manifest(tmp_path, mixed, lambda m: (m.pop("mixing_rates"), m.update(caps_as="truncation")))
    assert preflight.mixing_problems(str(data), "auto") == []  # truncated data: epochs
    found = preflight.mixing_problems(str(data), "rates")
    assert len(found) == 1 and "records no mixing rates" in found[0]
    assert preflight.mixing_problems(str(mixed), "rates") == []


def test_p3_refuses_a_hostile_manifest_before_starting(mixed, tmp_path, capsys):
    from hyperrestart.p3.synthetic import tiny_t5_dir
    data = _data_with_manifest(tmp_path, mixed, _set_rate("sciq_Direct_Question", float("nan")))
    code = cli_main(["p3", "--data-dir", str(data), "--model-name-or-path", str(tiny_t5_dir()), "--output-dir",
                     str(tmp_path / "run"), "--python", "/nonexistent/python"])
    err = capsys.readouterr().err
    assert code != 0 and "has mixing rate nan" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --- a real tiny run: mixing, stopped at a checkpoint and resumed ------------------------------------------------------
def _read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # three short P3 runner trainings (~30-60 s on a busy CPU)
def test_a_mixing_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(mixed, tmp_path):
    import test_p3_runner
    from hyperrestart.p3.synthetic import tiny_t5_dir
    setup = {"data": mixed, "model": tiny_t5_dir()}
    full = tmp_path / "full"
    log = test_p3_runner.train(setup, full)
    assert "training data: T0 mixing: 4 tasks" in log and "6 global batches per epoch" in log  # 54 // 8
    stopped = tmp_path / "stopped"
    test_p3_runner.train(setup, stopped, "--stop_at_step", 15)  # mid-epoch: 15 = 2 x 6 + 3
    assert (stopped / "checkpoint-15").is_dir() and len(_read(stopped / "train_log.csv")) == 15
    log = test_p3_runner.train(setup, stopped)
    assert "resumed from" in log and "at step 15" in log
    for key in ("step", "epoch", "loss", "lr", "scheduler_steps", "target_tokens", "source_tokens", "examples"):
        assert [r[key] for r in _read(stopped / "train_log.csv")] == [r[key] for r in _read(full / "train_log.csv")], key
    assert [r["epoch"] for r in _read(full / "train_log.csv")][5:7] == ["0", "1"]  # 6 batches per mixing epoch
    keep = ("step", "rougeL_micro", "rougeL_macro")
    assert [{k: r[k] for k in keep} for r in _read(stopped / "eval_log.csv")] == \
           [{k: r[k] for k in keep} for r in _read(full / "eval_log.csv")]
    # the runner itself refuses hostile rates in one line (a run started without `hyperrestart p3`'s pre-flight)
    hostile = _data_with_manifest(tmp_path, mixed, _set_rate("sciq_Direct_Question", 0))
    with pytest.raises(SystemExit, match="has mixing rate 0, so it would never be sampled"):
        test_p3_runner.train({"data": hostile, "model": setup["model"]}, tmp_path / "hostile")
    with pytest.raises(SystemExit, match="--mixing rates: .* records no mixing rates"):
        test_p3_runner.train({"data": _data_with_manifest(tmp_path / "cut", mixed, lambda m: (
            m.pop("mixing_rates"), m.update(caps_as="truncation"))), "model": setup["model"]}, tmp_path / "asked",
            "--mixing", "rates")
    # the same data without mixing is another stream: other batches, and a checkpoint of one does not resume the other
    off = tmp_path / "off"
    test_p3_runner.train(setup, off, "--mixing", "off", "--stop_at_step", 10)
    assert [r["loss"] for r in _read(off / "train_log.csv")] != [r["loss"] for r in _read(full / "train_log.csv")][:10]
    with pytest.raises(SystemExit, match=r"was saved training on \[epochs: every train row once per epoch\], but "
                                         r"this run would train on \[T0 mixing"):
        test_p3_runner.train(setup, off)

"""Synthetic P3 data: P3-shaped copies in the hub's layouts (tfrecord, parquet, jsonl) for tests and benchmarks, and
the tiny learnable P3 default behind `hyperrestart p3 --tiny` and `hyperrestart sweep --tiny`.

`synthetic_examples`: toy mappings (e.g. name the first word) with inputs of 3 to 120 words, for I/O, batching and
throughput checks. `tiny_examples`: four tasks with one short deterministic rule each (copy, reverse, first word, last
word of 2-5 words), named by a prefix in the input, that the tiny T5 (d_model 32) learns in a few hundred CPU steps.
"""
import json
import random
from pathlib import Path

WORDS = ("red green blue yellow black white cat dog bird fish tree river stone cloud house road book lamp chair "
         "table apple bread water fire wind snow rain sun moon star ship car train plane door window").split()
SYNTHETIC_TASKS = ("quarel_choose_between", "quarel_logic_test", "sciq_Direct_Question", "wiqa_effect_with_string_answer")

# --- the tiny learnable default -----------------------------------------------------------------------------------
# Bump when tiny_examples, TINY_ROWS_PER_TASK or TINY_HOLDOUT change: the cache key includes it.
TINY_VERSION = "p3-tiny-v3"  # v3: 1000 rows per task, 800 validation rows (v2: 400, 40)
# Words that are single pieces of the tiny T5's vocabulary (hyperrestart.upstream.tiny), so a rule is one token per word.
TINY_WORDS = "cat car buy read see like love help find move open close take sell write visit".split()
TINY_RULES = {  # task -> (prefix naming the rule, rule over the word list)
    "quarel_choose_between": ("copy:", lambda words: words),
    "quarel_logic_test": ("reverse:", lambda words: words[::-1]),
    "sciq_Direct_Question": ("first word:", lambda words: words[:1]),
    "wiqa_effect_with_string_answer": ("last word:", lambda words: words[-1:]),
}
# 4000 rows: 800 validation (all evaluated), 800 test, 2400 train. 800 evaluation examples keep the eval noise of a
# Rouge-L (its standard error over examples) well below its spread over seeds; 40 did not (README "P3 ... --tiny").
TINY_ROWS_PER_TASK, TINY_HOLDOUT = 1000, 0.4
# The tiny data's per-dataset cap under --tiny-mixing: all three datasets hold 1000 rows per task, more than 999, so
# T0's rule gives each task the rate 999 // (its dataset's templates in P3): quarel and sciq 199 (5 templates), wiqa
# 124 (8): the "last word" task is drawn 124/721 = 17% of the time instead of 25%, every row still kept.
TINY_MIXING_CAP = 999
# P3 runner options of the tiny default: 255 steps = 1+2+...+128 (a restart cycle end with one scheduler step per
# optimizer step, restarts after steps 1, 3, 7, ..., 127), an evaluation at 0 and every 51 steps (6 points), ~30 s of
# training on one CPU core. Every value can still be overridden (--set / runner arguments).
# One thread per tiny run (OMP_NUM_THREADS unless set): on a busy 2-core machine two threads per process made a tiny
# run ~7x slower (3m40s instead of 30s).
TINY_THREADS = "1"
TINY_SETTINGS = {
    "max_steps": 255, "scheduler_step_unit": 1, "eval_steps": 51, "eval_at_start": True, "learning_rate": 3e-3,
    "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64, "max_source_length": 32,
    "max_target_length": 8, "generation_max_new_tokens": 8, "max_eval_samples": 800, "save_steps": 0,
    "save_total_limit": 1, "progress": True, "report_to": "none", "bf16": "no", "logging_steps": 1,
}

# What a tiny P3 run's Rouge-L means (printed after a tiny sweep; the README says the same); measured: see the README.
TINY_EXPECTATION = (
    "what to expect: a tiny P3 run learns its four rules partly in 255 steps: final Rouge-L about 28, spread about 3 "
    "over seeds (restart arm, seeds 1-4: 33.3, 27.4, 27.0, 25.9); the eval noise of one score (standard error over "
    "its 800 evaluation examples) is about 1.3. A difference between arms within the seed spread is no finding: "
    "the tiny sweep checks the pipeline; the paper's runs compare the schedules.")


def tiny_examples(task, count, seed=0):
    """(inputs, targets) pairs of one tiny task: '{prefix} w1 .. wn' -> the rule applied to w1 .. wn (n in 2..5)."""
    if task not in TINY_RULES:
        raise ValueError(f"no tiny rule for task {task!r}; tiny tasks: {', '.join(TINY_RULES)}")
    prefix, rule = TINY_RULES[task]
    rng = random.Random(f"{task}-{seed}")
    rows = []
    for _ in range(count):
        words = [rng.choice(TINY_WORDS) for _ in range(rng.randint(2, 5))]
        rows.append((f"{prefix} {' '.join(words)}", " ".join(rule(words))))
    return rows


def tiny_p3_data(cache_dir=None, mixing=False):
    """The prepared tiny P3 folder (prepare-p3 output over tiny_examples in the jsonl layout); generated once, cached
    under <cache>/tiny/TINY_VERSION[-mixing]. mixing: prepared with --caps-as mixing-rates and a per-dataset cap of
    TINY_MIXING_CAP, so every row is kept and the runner samples the tasks by T0's rates."""
    from hyperrestart.upstream.tiny import _build_once, _tiny_root

    def build(folder):
        from hyperrestart.p3.prepare import prepare

        write_synthetic_p3(folder / "source", "jsonl", tasks=tuple(TINY_RULES), count=TINY_ROWS_PER_TASK,
                           examples=tiny_examples)
        (folder / "tasks.txt").write_text("\n".join(TINY_RULES) + "\n", encoding="utf-8")
        prepare(folder / "source", folder / "prepared", tasks_file=folder / "tasks.txt", fmt="jsonl",
                holdout=TINY_HOLDOUT, seed=0, progress=False, say=lambda text: None,
                **({"caps_as": "mixing-rates", "cap_per_dataset": TINY_MIXING_CAP} if mixing else {}))

    name, what = (f"{TINY_VERSION}-mixing", "the tiny P3 data with T0 mixing rates") if mixing else \
        (TINY_VERSION, "the tiny P3 data")
    return _build_once(_tiny_root(cache_dir) / name, build, what) / "prepared"


# --- P3-shaped data -----------------------------------------------------------------------------------------------
def synthetic_examples(task, count, seed=0):
    """(inputs, targets) pairs for one synthetic task; lengths vary from 3 to ~120 words."""
    rng = random.Random(f"{task}-{seed}")
    rows = []
    for _ in range(count):
        length = rng.choice((3, 5, 8, 12, 20, 40, 80, 120))
        words = [rng.choice(WORDS) for _ in range(length)]
        if task.endswith("choose_between") or task.startswith("quarel"):
            target = words[0]
            prompt = f"Which word comes first? {' '.join(words)}"
        elif task.startswith("sciq"):
            target = words[-1]
            prompt = f"Name the last word: {' '.join(words)}"
        else:
            target = " ".join(words[:2])
            prompt = f"Repeat the first two words. {' '.join(words)}"
        rows.append((prompt, target))
    return rows


def write_synthetic_p3(root, layout, tasks=SYNTHETIC_TASKS, count=60, split="train", seed=0,
                       examples=synthetic_examples):
    """Write `count` examples per task (from examples(task, count, seed)) under root in the given hub layout;
    returns root."""
    root = Path(root)
    for task in tasks:
        rows = examples(task, count, seed)
        if layout == "tfrecord":
            from tfrecord.writer import TFRecordWriter

            folder = root / "data" / task
            folder.mkdir(parents=True, exist_ok=True)
            writer = TFRecordWriter(str(folder / f"{split}.tfrecord-00000-of-00001"))
            for inputs, targets in rows:
                writer.write({
                    "inputs": ([ord(c) % 255 for c in inputs[:50]], "int"),
                    "inputs_pretokenized": (inputs.encode(), "byte"),
                    "targets": ([ord(c) % 255 for c in targets], "int"),
                    "targets_pretokenized": (targets.encode(), "byte"),
                })
            writer.close()
            info = {"features": {name: {"dtype": "int32" if name in ("inputs", "targets") else "string",
                                        "shape": [None] if name in ("inputs", "targets") else []}
                                 for name in ("inputs", "inputs_pretokenized", "targets", "targets_pretokenized")}}
            (folder / f"info.{split}.json").write_text(json.dumps(info))
        elif layout == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            folder = root / task / split
            folder.mkdir(parents=True, exist_ok=True)
            inputs, targets = zip(*rows)
            table = pa.table({"inputs": [[ord(c) % 255 for c in s[:50]] for s in inputs],
                              "inputs_pretokenized": list(inputs),
                              "targets": [[ord(c) % 255 for c in s] for s in targets],
                              "targets_pretokenized": list(targets)})
            pq.write_table(table, folder / "0000.parquet")
        elif layout == "jsonl":
            folder = root / task
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"{split}.jsonl", "w") as handle:
                for inputs, targets in rows:
                    handle.write(json.dumps({"inputs_pretokenized": inputs, "targets_pretokenized": targets}) + "\n")
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return root


def tiny_t5_dir(path=None):
    """The tiny random T5 + SentencePiece tokenizer of hyperrestart.upstream.tiny (generated once, cached); `path` is not used
    (the model lives in the shared cache)."""
    from hyperrestart.upstream.tiny import tiny_model_dir

    return Path(tiny_model_dir())

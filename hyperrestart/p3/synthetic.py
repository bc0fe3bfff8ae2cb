"""Synthetic P3-shaped data in the hub's layouts (tfrecord, parquet, jsonl), for tests and benchmarks.

Each task is a learnable toy mapping (e.g. copy the first word, name the colour) with inputs of varied length, so a
tiny model's loss falls within a few dozen steps.
"""
import json
import random
from pathlib import Path

WORDS = ("red green blue yellow black white cat dog bird fish tree river stone cloud house road book lamp chair "
         "table apple bread water fire wind snow rain sun moon star ship car train plane door window").split()
SYNTHETIC_TASKS = ("quarel_choose_between", "quarel_logic_test", "sciq_Direct_Question", "wiqa_effect_with_string_answer")


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


def write_synthetic_p3(root, layout, tasks=SYNTHETIC_TASKS, count=60, split="train", seed=0):
    """Write `count` examples per task under root in the given hub layout; returns root."""
    root = Path(root)
    for task in tasks:
        rows = synthetic_examples(task, count, seed)
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
    """A tiny random T5 + SentencePiece tokenizer in HF format: hyperrestart.tiny's when available, else one built here
    (a stand-in until hyperrestart/tiny.py lands)."""
    try:
        from ..tiny import tiny_model_dir
    except ImportError:
        tiny_model_dir = None
    if tiny_model_dir is not None:
        return Path(tiny_model_dir())
    return _build_tiny_t5(Path(path))


def _build_tiny_t5(path):
    if (path / "config.json").exists():
        return path
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    corpus = path / "corpus.txt"
    lines = [f"{a} {b}" for task in SYNTHETIC_TASKS for a, b in synthetic_examples(task, 50)]
    corpus.write_text("\n".join(lines + ["inputs: Which word comes first? Name the last word: Repeat the first two"]))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(path / "spiece"), vocab_size=160,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    corpus.unlink()
    tokenizer = T5TokenizerFast(vocab_file=str(path / "spiece.model"), extra_ids=0, legacy=False, from_slow=True)
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.1)
    T5ForConditionalGeneration(config).save_pretrained(path)
    (path / "spiece.vocab").unlink(missing_ok=True)
    return path

"""The tiny T5 and tiny GLUE data load offline with today's transformers/datasets and are cached."""
import json
import math

import pytest

from hyperrestart.upstream import tiny


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def model_dir(tiny_cache):
    return tiny.tiny_model_dir(tiny_cache)


@pytest.fixture(scope="session")
def glue_dir(tiny_cache):
    return tiny.tiny_glue_dir(tiny_cache)


@pytest.mark.slow  # generates the tiny T5 in a fresh cache (~14 s); every tiny training run in -m slow loads it too
def test_model_files_are_readable_by_old_and_new_transformers(model_dir):
    for name in ("config.json", "spiece.model", "pytorch_model.bin", "model.safetensors", "tokenizer_config.json",
                 "special_tokens_map.json"):
        assert (model_dir / name).stat().st_size > 0, name
    assert not (model_dir / "added_tokens.json").exists()  # transformers 3.5.1 refuses it (non-consecutive ids)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "t5"
    assert (config["d_model"], config["d_ff"], config["num_layers"], config["num_heads"]) == (32, 64, 2, 2)
    assert config["pad_token_id"] == 0 and config["eos_token_id"] == 1 and config["decoder_start_token_id"] == 0


@pytest.mark.slow
def test_tokenizer_round_trip_offline(model_dir):
    from transformers import AutoTokenizer, T5Tokenizer
    text = "the happy cat sees the dog in the park today ."
    for cls in (AutoTokenizer, T5Tokenizer):
        tokenizer = cls.from_pretrained(str(model_dir))
        ids = tokenizer(text).input_ids
        assert ids[-1] == tokenizer.eos_token_id == 1
        assert tokenizer.pad_token_id == 0
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
        assert 500 <= len(tokenizer) <= 1200


@pytest.mark.slow  # needs the generated tiny T5 (~14 s)
def test_forward_pass_gives_finite_loss(model_dir):
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = T5ForConditionalGeneration.from_pretrained(str(model_dir))
    assert model.config.vocab_size == len(tokenizer)
    batch = tokenizer(["rte sentence1: the cat sees the dog .", "sst2 sentence: a good book ."],
                      padding=True, return_tensors="pt")
    labels = tokenizer(["0", "1"], return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss
    assert math.isfinite(loss.item()) and loss.item() > 0
    generated = model.generate(**batch, max_new_tokens=3)
    assert generated.shape[0] == 2


@pytest.mark.slow  # builds a second model (SentencePiece training)
def test_model_is_deterministic(model_dir, tmp_path):
    import torch
    from transformers import T5ForConditionalGeneration
    again = tiny.tiny_model_dir(tmp_path)
    a = T5ForConditionalGeneration.from_pretrained(str(model_dir)).state_dict()
    b = T5ForConditionalGeneration.from_pretrained(str(again)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (model_dir / "spiece.model").read_bytes() == (again / "spiece.model").read_bytes()


EXPECTED_COLUMNS = {
    "rte": ["sentence1", "sentence2", "label", "idx"], "mrpc": ["sentence1", "sentence2", "label", "idx"],
    "stsb": ["sentence1", "sentence2", "label", "idx"], "cola": ["sentence", "label", "idx"],
    "sst2": ["sentence", "label", "idx"], "qqp": ["question1", "question2", "label", "idx"],
    "mnli": ["premise", "hypothesis", "label", "idx"], "qnli": ["question", "sentence", "label", "idx"],
}


@pytest.mark.parametrize("task", sorted(EXPECTED_COLUMNS))
def test_glue_task_loads_with_hub_columns_and_counts(glue_dir, task):
    import datasets
    splits = tiny.MNLI_SPLITS if task == "mnli" else ("train", "validation", "test")
    loaded = datasets.load_dataset(str(glue_dir / "glue"), task)
    assert sorted(loaded) == sorted(splits)
    for split in splits:
        ds = datasets.load_dataset(str(glue_dir / "glue"), task, split=split)
        assert ds.column_names == EXPECTED_COLUMNS[task]
        assert len(ds) == tiny.expected_rows(task, split)
        labels = ds["label"]
        if split.startswith("test"):
            assert set(labels) == {-1}
        elif task == "stsb":
            assert all(0.0 <= x <= 5.0 for x in labels) and len(set(labels)) > 5
        else:
            assert set(labels) == set(range(ds.features["label"].num_classes))
    if task in tiny.LARGE_TASKS:  # upstream's split_validation_test takes 1000 train rows as validation
        assert len(loaded["train"]) > 1000


def test_labels_follow_the_text(glue_dir):
    import datasets
    sst2 = datasets.load_dataset(str(glue_dir / "glue"), "sst2", split="train")
    for row in sst2.select(range(50)):
        adjective = row["sentence"].split()[1]
        assert (adjective in tiny.POSITIVE) == (row["label"] == 1)
    mnli = datasets.load_dataset(str(glue_dir / "glue"), "mnli", split="train")
    for row in mnli.select(range(50)):
        assert ("does not" in row["hypothesis"]) == (row["label"] == 2)


@pytest.mark.slow  # needs the generated tiny T5 (~14 s)
def test_second_call_is_cached_not_rebuilt(tiny_cache, model_dir, glue_dir, monkeypatch):
    def refuse(*_):
        raise AssertionError("rebuilt")
    monkeypatch.setattr(tiny, "_build_model", refuse)
    monkeypatch.setattr(tiny, "_build_glue", refuse)
    assert tiny.tiny_model_dir(tiny_cache) == model_dir
    assert tiny.tiny_glue_dir(tiny_cache) == glue_dir
    assert not [p for p in tiny_cache.iterdir() if ".tmp-" in p.name]


def test_default_cache_is_under_hyperrestart_cache(tmp_path, monkeypatch, glue_dir):
    monkeypatch.setenv("HYPERRESTART_CACHE", str(tmp_path))
    path = tiny.tiny_glue_dir(tasks=("rte",), rows={"rte": {"train": 7}})
    assert path.parent == tmp_path / "tiny"
    assert len((path / "glue" / "rte" / "train.jsonl").read_text().splitlines()) == 7
    assert tiny.tiny_glue_dir(tasks=("rte",)) != path  # the key covers tasks and rows


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task.*boolq"):
        tiny.tiny_glue_dir(tmp_path, tasks=("boolq",))
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="session")
def data_dir(tiny_cache):
    return tiny.tiny_data_dir(tiny_cache)


def test_data_dir_holds_glue_and_mrqa_with_the_hub_columns(data_dir, glue_dir):
    import datasets
    assert (data_dir / "glue" / "README.md").read_text().replace(data_dir.name, "") == \
        (glue_dir / "glue" / "README.md").read_text().replace(glue_dir.name, "")
    assert not (glue_dir / "mrqa").exists() and data_dir != glue_dir
    loaded = datasets.load_dataset(str(data_dir / "mrqa"))
    assert {split: len(loaded[split]) for split in loaded} == tiny.MRQA_ROWS
    train = loaded["train"]
    assert set(train.column_names) == {"subset", "context", "qid", "question", "answers", "detected_answers"}
    assert set(train["subset"]) == set(tiny.MRQA_SUBSETS) and len(set(train["qid"])) == len(train)
    for row in train:
        span = row["detected_answers"]["char_spans"][0]
        start, end = span["start"][0], span["end"][0]  # MRQA spans: end inclusive
        assert row["context"][start:end + 1] == row["answers"][0] == row["detected_answers"]["text"][0]
        tokens = row["detected_answers"]["token_spans"][0]
        words = row["context"].split()[tokens["start"][0]:tokens["end"][0] + 1]
        assert " ".join(words) == row["answers"][0]
        assert row["question"].split()[0] in ("what", "who")


MRQA_LOADER = """
import json, sys
from transformers import AutoTokenizer
from data.utils import set_tokenizer
from data.tasks import AutoTask, set_data_dir
set_tokenizer(AutoTokenizer.from_pretrained(sys.argv[1]))
set_data_dir(sys.argv[2])
for split in ("train", "validation", "test"):
    ds = AutoTask.get("mrqa").get_dataset(split=split)
    print(json.dumps({"split": split, "rows": len(ds), "columns": ds.column_names, "tasks": list(ds["task"]),
                      "answers": list(ds["answer"])}))
"""


@pytest.mark.slow  # imports the upstream's stack in its env and tokenizes every question (~40 s on a busy CPU)
def test_mrqa_loads_through_the_hyperdecoders_loader(model_dir, data_dir, tmp_path):
    import subprocess
    from hyperrestart.upstream import envs
    from hyperrestart.upstream import registry
    from hyperrestart.core.errors import HyperrestartError
    from hyperrestart.core.paths import DEFAULT_DEST
    upstream = registry.UPSTREAMS["hyperdecoders"]
    try:
        tree, python = registry.tree_dir(upstream), envs.python_for("hyperdecoders")
    except HyperrestartError as exc:
        pytest.skip(str(exc))
    env = dict(registry.process_env(upstream, tree), HF_HOME=str(tmp_path), HF_DATASETS_CACHE=str(tmp_path / "d"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([str(python), "-c", MRQA_LOADER, str(model_dir), str(data_dir)], capture_output=True,
                            text=True, cwd=DEFAULT_DEST / "hyperdecoders" / upstream.workdir, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # one chunk per question (short contexts), the hub columns turned into the trainer's
    assert [(d["split"], d["rows"]) for d in loaded] == list(tiny.MRQA_ROWS.items())
    for d in loaded:
        assert {"answer", "id", "input_ids", "task"} <= set(d["columns"])
        assert set(d["tasks"]) == set(tiny.MRQA_SUBSETS)
        assert all(answer.startswith("the ") for answer in d["answers"])  # every chunk holds its answer

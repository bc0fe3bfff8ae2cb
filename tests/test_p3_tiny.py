"""The tiny learnable P3 default (hyperrestart.p3.synthetic): deterministic, rule-shaped data that fits the tiny T5,
and `hyperrestart p3 --tiny`, which learns (Rouge-L > 0) in well under a minute on a CPU."""
import csv
import json
import shlex
import subprocess
import sys

import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.p3.synthetic import (TINY_RULES, TINY_SETTINGS, TINY_WORDS, tiny_examples, tiny_p3_data,
                                       tiny_t5_dir)
from hyperrestart.core.paths import PROJECT_ROOT


def test_tiny_examples_are_deterministic_and_follow_their_rule():
    prefixes = set()
    for task, (prefix, _) in TINY_RULES.items():
        rows = tiny_examples(task, 200, seed=0)
        assert rows == tiny_examples(task, 200, seed=0) and rows != tiny_examples(task, 200, seed=1)
        prefixes.add(prefix)
        for inputs, targets in rows:
            assert inputs.startswith(prefix + " ")
            words = inputs[len(prefix) + 1:].split()
            assert 2 <= len(words) <= 5 and set(words) <= set(TINY_WORDS)
            expected = {"copy:": words, "reverse:": words[::-1], "first word:": words[:1],
                        "last word:": words[-1:]}[prefix]
            assert targets == " ".join(expected)
    assert len(prefixes) == len(TINY_RULES)  # the input names its task
    with pytest.raises(ValueError, match="no tiny rule"):
        tiny_examples("quail_no_prompt_id", 1)


def test_tiny_words_are_single_tokens_and_rows_fit_the_tiny_settings():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_t5_dir()))
    assert all(len(tokenizer.tokenize(word)) == 1 for word in TINY_WORDS)
    for task in TINY_RULES:
        for inputs, targets in tiny_examples(task, 100):
            assert len(tokenizer("inputs: " + inputs)["input_ids"]) <= TINY_SETTINGS["max_source_length"]
            assert len(tokenizer(text_target=targets)["input_ids"]) <= TINY_SETTINGS["max_target_length"]


def test_tiny_p3_data_is_prepared_once_and_reproducible(tmp_path):
    first = tiny_p3_data(tmp_path / "a")
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["tasks"] == list(TINY_RULES)
    assert manifest["splits"] == {"train": 1520, "validation": 40, "test": 40}
    assert manifest["splits"]["validation"] == TINY_SETTINGS["max_eval_samples"]
    assert tiny_p3_data(tmp_path / "a") == first  # cached
    again = json.loads((tiny_p3_data(tmp_path / "b") / "manifest.json").read_text())
    assert again["outputs"] == manifest["outputs"]  # same bytes when built elsewhere


def test_p3_tiny_dry_run_puts_runner_arguments_last(tmp_path, capsys):
    assert cli_main(["p3", "--tiny", "--dry-run", "--output-dir", str(tmp_path / "run"), "--",
                     "--max_steps", "15"]) == 0
    command = shlex.split(capsys.readouterr().out)
    assert "table2_t5_restart.json" in command[command.index("--config") + 1]
    assert command[command.index("--data_dir") + 1] == str(tiny_p3_data())
    assert command[command.index("--model_name_or_path") + 1] == str(tiny_t5_dir())
    steps = [command[i + 1] for i, item in enumerate(command) if item == "--max_steps"]
    assert steps == [str(TINY_SETTINGS["max_steps"]), "15"]  # argparse: the last one wins


@pytest.mark.slow  # a 255-step tiny P3 training run (~20 s)
def test_p3_tiny_learns(tmp_path):
    """hyperrestart p3 --tiny, shortened to 127 steps (a restart cycle end): Rouge-L rises from 0."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "p3", "--tiny", "--output-dir", str(out), "--",
                             "--max_steps", "127", "--eval_steps", "127"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    evals = list(csv.DictReader((out / "eval_log.csv").open()))
    assert [int(r["step"]) for r in evals] == [0, 127]
    assert float(evals[0]["rougeL_micro"]) == 0 and float(evals[1]["rougeL_micro"]) > 0
    assert f"output dir:   {out}" in result.stdout
    assert f"eval log:     {out / 'eval_log.csv'} (2 evaluations; step 127: Rouge-L " in result.stdout
    assert "checkpoints:  checkpoint-127" in result.stdout and (out / "final_model").is_dir()

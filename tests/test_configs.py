"""The paper's configs under configs/: valid JSON, registered schedulers, released values, upstream-known keys."""
import json

import pytest

from hyperrestart.upstream import arguments, registry
from hyperrestart.upstream.envs import python_for
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import CONFIGS_DIR, DEFAULT_DEST
from hyperrestart.upstream.scheduler import SCHEDULER_NAMES, check_alignment

# transformers' names as the upstreams' arg_to_scheduler knows them (plus constant_w_warmup)
UPSTREAM_SCHEDULERS = {"linear", "cosine", "cosine_w_restarts", "polynomial", "constant", "constant_w_warmup"}
EXPECTED = {
    "hyperdecoders": ["glue_constant", "glue_cosine", "glue_linear", "glue_polynomial", "glue_restart",
                      "mrqa_restart"],
    "hyperformer": [f"{v}_{r}" for v in ("adapter", "finetune", "hyperformer", "hyperformer++")
                    for r in ("no_restart", "restart")],
}
CONFIGS = [CONFIGS_DIR / name / f"{stem}.json" for name, stems in EXPECTED.items() for stem in stems]
GLUE = ["rte", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "cola"]


def test_every_expected_config_exists_and_nothing_else():
    for name, stems in EXPECTED.items():
        assert sorted(p.stem for p in (CONFIGS_DIR / name).glob("*.json")) == sorted(stems)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_is_valid_and_its_scheduler_registered(path):
    config = json.loads(path.read_text())
    assert isinstance(config, dict) and config
    scheduler = config["lr_scheduler"]
    assert scheduler in set(SCHEDULER_NAMES) | UPSTREAM_SCHEDULERS
    assert ("restart" in path.stem and "no_restart" not in path.stem) == (scheduler in SCHEDULER_NAMES)
    assert registry.upstream_for_config(path).name == path.parent.name
    assert config["learning_rate"] == 3e-4


def test_released_values_kept():
    hd = json.loads((CONFIGS_DIR / "hyperdecoders/glue_restart.json").read_text())
    assert (hd["max_steps"], hd["warmup_steps"], hd["per_device_train_batch_size"], hd["gradient_accumulation_steps"]) \
        == (65536, 500, 32, 4)
    assert hd["model_name_or_path"] == hd["tokenizer_name"] == "google/t5-base-lm-adapt"
    assert hd["tasks"] == hd["eval_tasks"] == GLUE and hd["lr_scheduler"] == "cosine_annual_w_restarts"
    for stem in ("constant", "cosine", "linear", "polynomial"):
        other = json.loads((CONFIGS_DIR / f"hyperdecoders/glue_{stem}.json").read_text())
        assert {k: v for k, v in other.items() if k not in ("lr_scheduler", "output_dir")} == \
            {k: v for k, v in hd.items() if k not in ("lr_scheduler", "output_dir")}
        assert other["lr_scheduler"] == stem
    mrqa = json.loads((CONFIGS_DIR / "hyperdecoders/mrqa_restart.json").read_text())
    assert (mrqa["max_steps"], mrqa["max_source_length"], mrqa["max_target_length"], mrqa["tasks"]) == \
        (32400, 512, 64, ["mrqa"])
    assert mrqa["do_train"] is True  # released false (an eval config); documented in configs/README.md
    for path in (CONFIGS_DIR / "hyperformer").glob("*.json"):
        config = json.loads(path.read_text())
        assert (config["max_steps"], config["model_name_or_path"]) == (130000, "t5-base")
        expected = "consine_annealing_restart" if path.stem.endswith("_restart") and "no_restart" not in path.stem \
            else "constant"  # the released misspelling is kept: an accepted alias
        assert config["lr_scheduler"] == expected


@pytest.mark.parametrize("path,nearest", [("hyperdecoders/glue_restart.json", "65535 or 131071"),
                                          ("hyperdecoders/mrqa_restart.json", "16383 or 32767"),
                                          ("hyperformer/hyperformer_restart.json", "65535 or 131071")])
def test_restart_configs_are_misaligned_as_documented(path, nearest):
    config = json.loads((CONFIGS_DIR / path).read_text())
    with pytest.warns(UserWarning, match=nearest):
        check_alignment(config["max_steps"], 1, 2)
    assert nearest in (CONFIGS_DIR / "README.md").read_text()


def test_readme_lists_every_config():
    readme = (CONFIGS_DIR / "README.md").read_text()
    for name, stems in EXPECTED.items():
        for stem in stems:
            variant = stem.rsplit("_no_restart", 1)[0].rsplit("_restart", 1)[0] + "_{no_restart,restart}" \
                if name == "hyperformer" else stem
            assert f"{name}/{variant}.json" in readme, stem


def _fields_or_skip(name):
    tree = DEFAULT_DEST / name
    if not tree.is_dir():
        pytest.skip(f"{tree} is not materialised (run `python bootstrap.py`)")
    try:
        python = python_for(name)
    except HyperrestartError as exc:
        pytest.skip(str(exc))
    try:
        return set(arguments.argument_spec(registry.upstream_named(name), tree, python).kinds)
    except HyperrestartError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow  # reads the dataclasses in the upstream's env (~15 s on a fresh tree); the fast counterpart checks
# the configs against the recorded list (test_sweep.test_recorded_upstream_arguments_cover_every_released_config)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_key_is_an_argument_of_the_patched_upstream(name):
    fields = _fields_or_skip(name)
    for stem in EXPECTED[name]:
        config = json.loads((CONFIGS_DIR / name / f"{stem}.json").read_text())
        unknown = sorted(set(config) - fields)
        assert not unknown, f"configs/{name}/{stem}.json: keys the patched {name} does not know: {unknown}"
    assert {"restart_t0", "restart_t_mult", "eta_min", "restart_warmup_steps"} <= fields

"""The P3 runner's options: dataclasses read by HfArgumentParser (command line, --config JSON, a lone JSON file),
the old runner's bool spellings, one-line refusals, the sweep's option kinds, and the one scheduler-name table."""
import json
import re
import subprocess
import sys

import pytest

from hyperrestart.core.paths import CONFIGS_DIR
from hyperrestart.p3.options import runner_option_kinds
from hyperrestart.p3.runner import RUNNER_FILE, arguments_module, runner_module

REQUIRED = {"data_dir": "d", "output_dir": "o", "model_name_or_path": "m"}
# one value of each kind of option: str, Literal, int, float, Optional[int], bool (default true and false)
VALUES = {"model": "hyperdecoder", "optimizer": "adafactor", "learning_rate": 0.0003, "eta_min": 0.0,
          "max_steps": 63, "scheduler_step_unit": 3, "stop_at_step": 9, "max_eval_samples": 5,
          "source_prefix": "x: ", "lr_scheduler": "cosine", "warmup_steps": 2, "bf16": "no", "report_to": "none",
          "group_by_length": False, "paper_optimizer_pairing": True, "tf32": False, "eval_at_end": False}


def as_flags(options):
    flags = []
    for key, value in options.items():
        flags += [f"--{key}", json.dumps(value) if isinstance(value, bool) else str(value)]
    return flags


def parsed(argv):
    return vars(runner_module().parse_args(argv))


def without_config(args):
    return {k: v for k, v in args.items() if k != "config"}


@pytest.mark.slow  # 2-3 s (Ray import, plotting, parser round trips); kept out of the 90 s default suite
def test_json_file_and_command_line_give_the_same_arguments(tmp_path):
    path = tmp_path / "options.json"
    path.write_text(json.dumps({**REQUIRED, **VALUES, "_comment": "ignored"}), encoding="utf-8")
    from_cli = parsed(as_flags({**REQUIRED, **VALUES}))
    from_config = parsed(["--config", str(path)])
    from_lone_file = parsed([str(path)])  # the Hugging Face examples' `run_x.py args.json`
    assert without_config(from_config) == without_config(from_cli) == without_config(from_lone_file)
    assert from_config["config"] == from_lone_file["config"] == str(path) and from_cli["config"] is None
    for key, value in VALUES.items():
        if key != "optimizer":  # --paper_optimizer_pairing picks it: Adafactor without restart
            assert from_cli[key] == value, key
    assert from_cli["optimizer"] == "adafactor" and from_cli["train_batch_size"] == 32
    # command-line flags override the file
    assert parsed(["--config", str(path), "--max_steps", "7", "--group-by-length"])["max_steps"] == 7
    assert parsed(["--config", str(path), "--group-by-length"])["group_by_length"] is True


@pytest.mark.parametrize("text,value", [("true", True), ("on", True), ("yes", True), ("1", True), ("T", True),
                                        ("false", False), ("OFF", False), ("no", False), ("0", False), ("n", False)])
def test_bool_options_take_the_old_spellings(text, value):
    args = parsed(as_flags(REQUIRED) + ["--eval_at_start", text, "--progress", text])
    assert (args["eval_at_start"], args["progress"]) == (value, value)


def test_bare_and_negated_bool_flags():
    args = parsed(as_flags(REQUIRED) + ["--paper_optimizer_pairing", "--no_tf32", "--no-progress"])
    assert (args["paper_optimizer_pairing"], args["tf32"], args["progress"]) == (True, False, False)
    defaults = parsed(as_flags(REQUIRED))
    assert (defaults["paper_optimizer_pairing"], defaults["tf32"], defaults["group_by_length"]) == (False, True, True)


@pytest.mark.parametrize("argv,message", [
    (["--config", "{file}"], "unknown option(s) ['lerning_rate']"),
    (["--lerning_rate", "1"], "unrecognized arguments: --lerning_rate 1"),
    (["--tf32", "maybe"], "argument --tf32: expected true/false, got 'maybe'"),
    (["--model", "t6"], "argument --model: invalid choice"),
    (["--lr_scheduler", "cosin"], "--lr_scheduler 'cosin': choose one of cosine_annual_w_restarts"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, capsys, argv, message):
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"lerning_rate": 1e-4}), encoding="utf-8")
    argv = [a.format(file=config) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        runner_module().parse_args(as_flags(REQUIRED) + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_missing_required_option_and_unreadable_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        runner_module().parse_args(["--data_dir", "d", "--output_dir", "o"])
    assert capsys.readouterr().err.strip().endswith("--model_name_or_path is required (on the command line or in "
                                                    "--config)")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SystemExit):
        runner_module().parse_args(["--config", str(tmp_path / "list.json")])
    assert "expected a JSON object of option names, got list" in capsys.readouterr().err


def test_every_p3_config_parses():
    for path in sorted((CONFIGS_DIR / "p3").glob("*.json")):
        if path.name != "hdconfig.json":
            assert parsed(as_flags(REQUIRED) + ["--config", str(path)])["lr_scheduler"] in (
                "cosine_annual_w_restarts", "constant")


@pytest.mark.slow  # a fresh interpreter imports torch and transformers (~5-30 s)
def test_the_script_refuses_an_unknown_key_in_one_line(tmp_path):
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({**REQUIRED, "max_step": 3}), encoding="utf-8")
    result = subprocess.run([sys.executable, str(RUNNER_FILE), str(config)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"p3_trainer.py: error: {config}: unknown option(s) ['max_step']; `p3_trainer.py --help` lists the options"]


def test_runner_option_kinds_are_the_dataclass_fields():
    kinds = runner_option_kinds()
    fields = set(arguments_module().option_fields())
    assert set(kinds) == fields and "config" not in kinds and len(kinds) == 67  # 52 + 13 restart-family, scope, diagnostics + mixing + resume_allowed_changes
    assert kinds["learning_rate"] == {"float"} and kinds["max_steps"] == {"int"}
    assert kinds["stop_at_step"] == {"int", "null"} and kinds["tf32"] == {"bool"}
    assert kinds["model"] == {"str"} and kinds["data_dir"] == {"null", "str"}
    assert kinds["resume_allowed_changes"] == {"null", "str"}
    # every option the runner's parser takes (besides --config and --help) is a field, and the other way round
    parser = runner_module().build_parser()
    flags = set(re.findall(r"\[--([a-z0-9_]+)", parser.format_usage())) - {"config"}
    assert {f for f in flags if not f.startswith("no_")} == fields


def test_runner_option_kinds_import_neither_torch_nor_transformers():
    code = ("import sys; from hyperrestart.p3.options import runner_option_kinds; runner_option_kinds(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_one_scheduler_table_for_p3_and_the_upstreams():
    from hyperrestart.upstream import scheduler as upstream_scheduler
    from p3_runner import schedules  # importable once runner_module() loaded the entry script

    runner_module()
    assert schedules.restart_scheduler() is upstream_scheduler._module  # the same file, loaded once
    assert schedules.scheduler_names() == upstream_scheduler.ALL_SCHEDULER_NAMES
    assert set(upstream_scheduler.ALL_SCHEDULER_NAMES) == set(upstream_scheduler.FAMILY_NAMES) | set(
        upstream_scheduler.HF_SCHEDULERS)
    assert set(upstream_scheduler.HF_SCHEDULERS) == {"linear", "cosine", "cosine_w_restarts", "polynomial",
                                                     "constant", "constant_w_warmup"}
    assert upstream_scheduler.SCHEDULER_NAMES == ("cosine_annual_w_restarts", "consine_annealing_restart", "restart")
    for name in upstream_scheduler.ALL_SCHEDULER_NAMES:  # every name the upstream trainers take, the runner takes
        expected = "cosine_annual_w_restarts" if name in upstream_scheduler.SCHEDULER_NAMES else name
        assert parsed(as_flags(REQUIRED) + ["--lr_scheduler", name])["lr_scheduler"] == expected


@pytest.mark.slow  # imports each patched trainer in its env (~10 s each)
@pytest.mark.parametrize("name", ["hyperdecoders", "hyperformer"])
def test_the_patched_trainers_take_exactly_the_table(name):
    """The trees' own arg_to_scheduler (read in the upstream's env) holds the same names as the P3 runner takes."""
    from hyperrestart.core.errors import HyperrestartError
    from hyperrestart.core.paths import DEFAULT_DEST
    from hyperrestart.upstream import arguments, registry
    from hyperrestart.upstream.envs import python_for
    from hyperrestart.upstream.scheduler import ALL_SCHEDULER_NAMES

    tree = DEFAULT_DEST / name
    if not tree.is_dir():
        pytest.skip(f"{tree} is not materialised (run `python bootstrap.py`)")
    try:
        spec = arguments.argument_spec(registry.upstream_named(name), tree, python_for(name))
    except HyperrestartError as exc:
        pytest.skip(str(exc))
    assert set(spec.schedulers) == set(ALL_SCHEDULER_NAMES)

"""Sweep specs as a hostile user writes them (issue 18): alias bombs, huge grids, mistyped values, long names,
oversized or deeply nested specs. Each is refused when the spec is read, in one message, before anything is built."""
import time

import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.limits import name_max
from hyperrestart.sweep import jobs as sweep_jobs
from hyperrestart.sweep import spec as sweep_spec

BASE = "configs/p3/table2_t5_restart.json"
RUN_BASE = "configs/hyperdecoders/glue_restart.json"


def write_spec(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- row 8: YAML aliases ------------------------------------------------------------------------------------------
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)) + f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path, capsys):
    path = write_spec(tmp_path, ALIAS_BOMB)
    assert path.stat().st_size < 1500
    started = time.monotonic()
    assert cli_main(["sweep", str(path), "--list"]) == 1
    err = capsys.readouterr().err
    assert "alias *a; a sweep spec may not use YAML aliases" in err and "line 2" in err
    assert time.monotonic() - started < 5


def test_anchors_without_aliases_are_fine(tmp_path):
    spec = sweep_spec.parse_spec(write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: &s [1, 2]}}\n"))
    assert [run.seed for run in spec.runs] == [1, 2]


# --- row 9: grid size counted before the grid is built --------------------------------------------------------------
MILLION = f"runner: p3\nconfig: {BASE}\ngrid:\n" + "".join(
    f"  ax{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" for i in range(6))


def test_a_grid_over_the_limit_is_refused_before_it_is_built(tmp_path, capsys):
    path = write_spec(tmp_path, MILLION)
    started = time.monotonic()
    assert cli_main(["sweep", str(path), "--list"]) == 1
    err = capsys.readouterr().err
    assert "the grid has 1,000,000 runs (10 x 10 x 10 x 10 x 10 x 10), over the limit of 10,000 runs" in err
    assert "--max-runs N" in err and time.monotonic() - started < 5
    with pytest.raises(HyperrestartError, match="over the limit of 999,999 runs"):
        sweep_spec.parse_spec(path, max_runs=999_999)


def test_max_runs_raises_and_lowers_the_limit(tmp_path, capsys):
    path = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1, 2, 3]}}\n")
    assert cli_main(["sweep", str(path), "--list", "--max-runs", "2"]) == 1
    assert "the grid has 3 runs (3), over the limit of 2 runs" in capsys.readouterr().err
    assert cli_main(["sweep", str(path), "--list", "--max-runs", "3"]) == 0


# --- row 16: grid values typed when the spec is read --------------------------------------------------------------
@pytest.mark.parametrize("grid,message", [
    ('{seed: ["1", "two"]}', "grid.seed: seed '1' is not an integer"),
    ("{seed: [1, true]}", "grid.seed: seed True is not an integer"),
    ("{seed: [1.5]}", "grid.seed: seed 1.5 is not an integer"),
    ('{learning_rate: ["fast"]}', "grid.learning_rate: learning_rate is 'fast'; it must be a finite number > 0"),
    ("{restart_t_mult: [0, 2]}", "grid.restart_t_mult: restart_t_mult is 0; it must be an integer >= 1"),
    ("{arm: {a: {max_steps: -5}}}", "grid.arm.a: max_steps is -5; it must be an integer >= 1"),
])
def test_mistyped_grid_values_are_refused_when_read(tmp_path, grid, message):
    path = write_spec(tmp_path, f"runner: run\nconfig: {RUN_BASE}\ngrid: {grid}\n")
    with pytest.raises(HyperrestartError, match="grid value") as info:
        sweep_spec.parse_spec(path)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_spec_values_are_refused(tmp_path, value):
    path = write_spec(tmp_path, f"runner: run\nconfig: {RUN_BASE}\nset: {{eta_min: {value}}}\ngrid: {{seed: [1]}}\n")
    with pytest.raises(HyperrestartError, match="set.eta_min is .*NaN and infinite values are refused"):
        sweep_spec.parse_spec(path)


# --- row 27: names checked against the filesystem's limit --------------------------------------------------------
def test_a_label_longer_than_the_filesystem_allows_is_refused_when_read(tmp_path, capsys):
    limit = name_max(tmp_path)
    long_label = "x" * 300
    path = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{arm: {{{long_label}: {{}}}}}}\n")
    assert cli_main(["sweep", str(path), "--list"]) == 1
    err = capsys.readouterr().err
    assert f"is 300 bytes long, over the file-name limit of {limit} bytes" in err and "Traceback" not in err
    named = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\nrun_name: '{'y' * 280}{{seed}}'\n",
                       name="named.yaml")
    with pytest.raises(HyperrestartError, match="over the file-name limit"):
        sweep_spec.parse_spec(named)


def test_run_names_are_checked_against_the_output_roots_filesystem(tmp_path, monkeypatch):
    spec = sweep_spec.parse_spec(write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\n"))
    monkeypatch.setattr("hyperrestart.core.limits.os.pathconf", lambda folder, name: 4)
    with pytest.raises(HyperrestartError, match="run 0's name seed-1... is 6 bytes long, over the file-name limit "
                                                "of 4"):
        sweep_jobs.make_jobs(spec, tmp_path / "out")


# --- row 26 (specs): size and depth ---------------------------------------------------------------------------------
def test_huge_and_deep_specs_are_refused_with_the_limit(tmp_path):
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(90 * 1024 * 1024)
    with pytest.raises(HyperrestartError, match="over the limit of 4,194,304 bytes for a sweep spec"):
        sweep_spec.parse_spec(huge)
    deep = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\ndescription: "
                      + "[" * 50 + "]" * 50 + "\n", name="deep.yaml")
    with pytest.raises(HyperrestartError, match="more than 32 levels deep"):
        sweep_spec.parse_spec(deep)
    deeper = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\ndescription: "
                        + "[" * 100_000 + "]" * 100_000 + "\n", name="deeper.yaml")
    with pytest.raises(HyperrestartError, match="nested too deeply|more than 32 levels deep"):
        sweep_spec.parse_spec(deeper)

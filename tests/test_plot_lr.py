"""`hyperrestart plot-lr`: a valid PNG, the right lrs, and the right alignment verdict."""
import json

import pytest

from hyperrestart import cli
from hyperrestart.upstream import lr_plot as plot_lr
from hyperrestart.core.paths import CONFIGS_DIR, PROJECT_ROOT
from hyperrestart.upstream.scheduler import lr_schedule

RESTART = CONFIGS_DIR / "hyperdecoders" / "glue_restart.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    import matplotlib.image
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(str(path)).shape[:2]
    assert (width, height) == (1000, 460)


@pytest.mark.slow  # seconds of plotting / importing Ray; kept out of the 90 s default suite
def test_restart_config_65536_is_misaligned(tmp_path, capsys):
    out = tmp_path / "plots" / "restart.png"
    assert cli.main(["plot-lr", str(RESTART), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max_steps=65536 does NOT end at a cycle end (T_0=1, T_mult=2, restart_warmup_steps=0)" in printed
    assert "Nearest aligned max_steps: 65535 or 131071." in printed
    assert "last step's lr: 0.0003 " in printed  # the released run ends at the maximum lr
    assert_png(out)
    assert not list(out.parent.glob("*.tmp.png"))


@pytest.mark.slow  # 2-3 s (Ray import, plotting, parser round trips); kept out of the 90 s default suite
def test_aligned_override_ends_at_a_cycle_end(tmp_path, capsys):
    out = tmp_path / "aligned.png"
    assert cli.main(["plot-lr", str(RESTART), "--set", "max_steps=65535", "--out", str(out), "--x-scale",
                     "linear"]) == 0
    printed = capsys.readouterr().out
    assert "max_steps=65535 ends at a cycle end (T_0=1, T_mult=2, restart_warmup_steps=0): cycle 16" in printed
    assert "NOT" not in printed and "last step's lr: 1e-06 " in printed
    assert_png(out)


def test_max_steps_flag_and_restart_settings(tmp_path, capsys):
    out = tmp_path / "short.png"
    assert cli.main(["plot-lr", str(RESTART), "--max-steps", "100", "--set", "restart_t0=10",
                     "--set", "restart_t_mult=1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max_steps=100 ends at a cycle end (T_0=10, T_mult=1, restart_warmup_steps=0): cycle 10" in printed
    assert cli.main(["plot-lr", str(RESTART), "--max-steps", "505", "--set", "restart_warmup_steps=500",
                     "--out", str(out)]) == 0
    assert "Nearest aligned max_steps: 503 or 507." in capsys.readouterr().out


def test_learning_rates_are_the_lr_each_step_uses():
    config = json.loads(RESTART.read_text())
    lrs = lr_schedule(config, 16)
    # step k uses the lr logged at step k-1 (UPSTREAM-FACTS trace, shifted by one; step 1 uses the initial lr)
    assert lrs == pytest.approx([3e-4, 3e-4, 1.505e-4, 3e-4, 2.562e-4, 1.505e-4, 4.479e-5, 3e-4, 2.886e-4, 2.562e-4,
                                 2.077e-4, 1.505e-4, 9.329e-5, 4.479e-5, 1.238e-5, 3e-4], rel=1e-3)
    linear = lr_schedule(dict(config, lr_scheduler="linear", warmup_steps=4), 12)
    assert linear == pytest.approx([0, 7.5e-5, 1.5e-4, 2.25e-4, 3e-4] + [3e-4 * (12 - n) / 8 for n in range(5, 12)])
    assert lr_schedule(dict(config, lr_scheduler="constant"), 5) == [3e-4] * 5


@pytest.mark.parametrize("name", ["constant", "cosine", "linear", "polynomial"])
def test_other_schedulers_have_nothing_to_align(name, tmp_path, capsys):
    out = tmp_path / f"{name}.png"
    assert cli.main(["plot-lr", str(CONFIGS_DIR / "hyperdecoders" / f"glue_{name}.json"), "--max-steps", "2000",
                     "--out", str(out)]) == 0
    assert f"lr_scheduler={name} has no restart cycles" in capsys.readouterr().out
    assert_png(out)


@pytest.mark.slow  # imports torch (~4 s)
def test_hyperformer_alias_is_plotted_as_restart(tmp_path, capsys):
    out = tmp_path / "hf.png"
    assert cli.main(["plot-lr", str(CONFIGS_DIR / "hyperformer" / "hyperformer_restart.json"), "--max-steps", "130000",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Nearest aligned max_steps: 65535 or 131071." in printed and "last step's lr: 1.197e-06" in printed


def test_default_png_goes_to_runs_plots_and_is_printed(tmp_path, capsys, monkeypatch):
    assert plot_lr.PLOTS_DIR == PROJECT_ROOT / "runs" / "plots"
    monkeypatch.setattr(plot_lr, "PLOTS_DIR", tmp_path / "runs" / "plots")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plot-lr", str(RESTART), "--max-steps", "100"]) == 0
    out = tmp_path / "runs" / "plots" / "glue_restart.png"
    assert f"wrote {out}" in capsys.readouterr().out
    assert_png(out)
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # nothing in the working directory


@pytest.mark.parametrize("sets,error", [(["max_steps=-1"], "max_steps is -1"),
                                        (["max_steps=\"x\""], "max_steps takes an integer"),
                                        (["learning_rate=1e-3x"], "learning_rate takes a number, e.g. 3e-4"),
                                        (["lr_scheduler=cosine_annealing"], "lr_scheduler 'cosine_annealing' is not")])
def test_bad_input_is_refused_and_writes_nothing(sets, error, tmp_path, capsys):
    out = tmp_path / "bad.png"
    argv = ["plot-lr", str(RESTART), "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert cli.main(argv) == 1
    assert error in capsys.readouterr().err
    assert not out.exists()

"""The P3 runner's narrow resume with changed settings (what a PBT exploit needs): --resume_allowed_changes lets
exactly the named settings differ from the checkpoint's, the lr after the resume follows the new values, and any
other difference is refused in one line."""
import pytest

from hyperrestart.core.overlay_import import load_overlay_module
from hyperrestart.p3.runner import RUNNER_PACKAGE

from test_p3_runner import ETA_MIN, LR, STEPS, UNIT, eq5_lr, read_csv, setup, train  # noqa: F401 (fixture)


def changes_module():
    return load_overlay_module("hyperrestart._p3_runner_resume_changes", RUNNER_PACKAGE / "resume_changes.py")


def test_allowed_keys_parse_and_refuse_what_the_runner_cannot_change():
    module = changes_module()
    assert module.parse_allowed(None) is None
    assert module.parse_allowed("") == () and module.parse_allowed("none") == ()
    assert module.parse_allowed("learning_rate, eta_min") == ("learning_rate", "eta_min")
    with pytest.raises(ValueError, match="max_steps cannot change on resume"):
        module.parse_allowed("learning_rate,max_steps")


def test_only_the_allowed_changes_pass():
    module = changes_module()
    saved = {"learning_rate": 1e-3, "eta_min": 1e-6, "seed": 1, "output_dir": "donor", "stop_at_step": 102}
    same_but_neutral = dict(saved, output_dir="trial", stop_at_step=204)
    assert module.changed_settings(saved, same_but_neutral) == {}
    changed = module.changed_settings(saved, dict(saved, learning_rate=2e-3, seed=2))
    assert changed == {"learning_rate": (1e-3, 2e-3), "seed": (1, 2)}
    line = module.refusal(changed, ("learning_rate", "eta_min"))
    assert "\n" not in line and "seed 1 -> 2" in line and "learning_rate" not in line.split("(")[1].split(")")[0]
    assert module.refusal({"learning_rate": (1e-3, 2e-3)}, ("learning_rate",)) is None
    assert "only no setting may change" in module.refusal({"eta_min": (0, 1e-6)}, ())


@pytest.mark.slow  # two short P3 runner runs (~15 s)
def test_resume_with_an_allowed_change_follows_the_new_lr(setup, tmp_path):
    out = tmp_path / "run"
    train(setup, out, "--stop_at_step", 15)
    new_lr, new_eta = 2 * LR, 3 * ETA_MIN
    log = train(setup, out, "--learning_rate", new_lr, "--eta_min", new_eta,
                "--resume_allowed_changes", "learning_rate,eta_min")
    assert "resumed from" in log and "resumed with changed settings" in log
    rows = read_csv(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    for r in rows:
        step = int(r["step"])
        expected = eq5_lr(step) if step <= 15 else eq5_lr(step, eta_max=new_lr, eta_min=new_eta)
        assert float(r["lr"]) == pytest.approx(expected, rel=1e-9, abs=1e-15), r
    assert float(rows[15]["lr"]) != pytest.approx(eq5_lr(16))  # the perturbation shows in the trace


@pytest.mark.slow  # one short P3 runner run and a refused resume (~10 s)
def test_resume_with_a_change_not_allowed_is_refused_in_one_line(setup, tmp_path):
    out = tmp_path / "run"
    train(setup, out, "--stop_at_step", 15)
    with pytest.raises(SystemExit) as refused:
        train(setup, out, "--learning_rate", 2 * LR, "--seed", 4, "--resume_allowed_changes", "learning_rate")
    message = str(refused.value)
    assert message.startswith("p3_trainer: error: resume refused") and "\n" not in message
    assert "seed 3 -> 4" in message and "learning_rate" in message.split("only ")[1]
    assert len(read_csv(out / "train_log.csv")) == 15  # nothing written by the refused run

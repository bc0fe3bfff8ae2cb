"""The restart family, restart_scope and the step diagnostics inside both real upstream trainers (tiny T5, CPU).

For each upstream, three runs cover every schedule and every scope: SGDR with warmup, cycle warmup, peak decay and a
cycle limit restarting only the hypernetwork (the backbone on a linear schedule); WSD on the backbone only (the
hypernetwork on cosine); an adaptive restart (loss or gradient criterion) over all groups. Each run's diagnostics.csv
gives the lr every optimizer step applied to each parameter space, checked against the references of
test_schedule_family (written independently of the scheduler); a run resumed from its mid-run checkpoint must write
the same diagnostics rows, bit for bit (loss, gradient and update norms, lrs, restarts), as the uninterrupted run.
A scope the model does not have is refused. All slow (two trainer runs per case).
"""
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_schedule_family as ref  # noqa: E402
import test_upstream_hyperdecoders as hd  # noqa: E402
import test_upstream_hyperformer as hf  # noqa: E402

STEPS, CHECKPOINT, WARMUP = 12, 6, 2

CASES = {
    "sgdr-hypernetwork": dict(lr_scheduler="cosine_annual_w_restarts", restart_t0=2, restart_t_mult=2,
                              restart_warmup_steps=WARMUP, restart_cycle_warmup=1, restart_peak_decay=0.5,
                              restart_cycle_limit=2, restart_after_limit="eta_min", eta_min=1e-6,
                              restart_scope="hypernetwork", base_lr_scheduler="linear"),
    "wsd-backbone": dict(lr_scheduler="wsd", wsd_decay_steps=5, wsd_decay_shape="cosine", eta_min=1e-6,
                         restart_warmup_steps=WARMUP, restart_scope="backbone", base_lr_scheduler="cosine"),
    "adaptive-all": dict(lr_scheduler="adaptive_restart", adaptive_restart_criterion="either",
                         adaptive_restart_window=2, adaptive_restart_min_cycle=3, adaptive_restart_period=6,
                         eta_min=1e-6, restart_scope="all"),
}


def expected_lrs(case, space, base_lr, restarts):
    """lr applied by optimizer steps 1..STEPS to `space` (n = step - 1)."""
    cfg = CASES[case]
    restarted = cfg["restart_scope"] in ("all", space)
    if not restarted:
        factor = ref.hf_factor(cfg["base_lr_scheduler"], cfg.get("restart_warmup_steps", 0), STEPS)
        return [base_lr * factor(n) for n in range(STEPS)]
    if cfg["lr_scheduler"] == "wsd":
        return ref.wsd_reference(STEPS, base_lr, STEPS, cfg["wsd_decay_steps"], WARMUP, cfg["eta_min"],
                                 cfg["wsd_decay_shape"])
    if cfg["lr_scheduler"] == "adaptive_restart":
        return ref.adaptive_expected(STEPS, base_lr, restarts, cfg["adaptive_restart_period"], cfg["eta_min"])
    return ref.sgdr_reference(STEPS, base_lr, cfg["restart_t0"], cfg["restart_t_mult"], cfg["eta_min"], WARMUP,
                              cfg["restart_cycle_warmup"], cfg["restart_peak_decay"], cfg["restart_cycle_limit"],
                              cfg["restart_after_limit"])


def rows(out):
    with open(Path(out) / "diagnostics.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the two upstreams, run the same way
def run_hyperdecoders(tmp, name, overrides, resume_from=None):
    model, data = hd_tiny(tmp)
    out = tmp / name
    cfg = hd._tiny_config(hd._reference_config("glue_restart.json"), model, data, out, n_train=16,
                          gradient_accumulation_steps=2, max_steps=STEPS, save_steps=CHECKPOINT, do_eval=False,
                          do_test=False, evaluation_strategy="no", load_best_model_at_end=False, logging_steps=1,
                          **overrides)
    if resume_from:
        cfg["model_name_or_path"] = str(resume_from)
    hd._run(cfg, tmp, name)
    return out, cfg["learning_rate"]


def hd_tiny(tmp):
    from hyperrestart.upstream.tiny import tiny_glue_dir, tiny_model_dir
    cache = tmp / "tiny"
    return tiny_model_dir(cache), tiny_glue_dir(cache, tasks=hd.TASKS)


def run_hyperformer(tmp, name, overrides, resume_from=None):
    from hyperrestart.upstream.tiny import tiny_glue_dir, tiny_model_dir
    python, _ = hf.hyperformer_python()
    setup = {"root": tmp, "python": python, "model": tiny_model_dir(), "data": tiny_glue_dir(),
             "hf_home": tmp / "hf-home"}
    out = tmp / name
    if resume_from:  # hyperformer resumes from an output_dir holding the checkpoint
        shutil.copytree(resume_from, out)
    cfg = hf.released_config(setup, out, max_steps=STEPS, n_train=4, gradient_accumulation_steps=2,
                             per_device_train_batch_size=4, save_steps=CHECKPOINT, save_total_limit=None,
                             do_eval=False, do_test=False, evaluation_strategy="no", load_best_model_at_end=False,
                             logging_steps=1, **overrides)
    hf.train(setup, cfg, name)
    return out, cfg["learning_rate"]


UPSTREAMS = {
    "hyperdecoders": (run_hyperdecoders, hd.pytestmark),
    "hyperformer": (run_hyperformer, hf.pytestmark),
}
PARAMS = [pytest.param(upstream, case, marks=[UPSTREAMS[upstream][1], pytest.mark.slow], id=f"{upstream}-{case}")
          for upstream in UPSTREAMS for case in CASES]


@pytest.mark.parametrize("upstream,case", PARAMS)
def test_each_schedule_and_scope_applies_its_closed_form_and_resumes_exactly(upstream, case, tmp_path):
    run = UPSTREAMS[upstream][0]
    straight, lr = run(tmp_path, "straight", CASES[case])
    got = rows(straight)
    assert [int(r["step"]) for r in got] == list(range(1, STEPS + 1))
    spaces = [s for s in ("hypernetwork", "backbone") if f"{s}_lr" in got[0]]
    assert spaces == ["hypernetwork", "backbone"], f"{upstream}: both parameter spaces must be trainable here"
    restarts = [int(r["step"]) - 1 for r in got if r["restart"]]  # scheduler step n that starts a cycle
    if case.startswith("adaptive"):
        assert restarts, "the adaptive criterion never fired in 12 steps; the test needs a restart to check"
        assert all(r["restart"].startswith(("loss moving average rose", "gradient opposes the last update"))
                   for r in got if r["restart"])
        assert all(b - a >= 3 for a, b in zip([0] + restarts, restarts))  # min_cycle
    for space in spaces:
        applied = [float(r[f"{space}_lr"]) for r in got]
        assert applied == pytest.approx(expected_lrs(case, space, lr, restarts), rel=1e-12, abs=1e-18), space
        assert all(float(r[f"{space}_grad_norm"]) > 0 for r in got)
        # a step moves the parameters exactly when its lr is not 0 (warmup starts at 0)
        assert [float(r[f"{space}_update_norm"]) > 0 for r in got] == [x > 0 for x in applied]

    resumed, _ = run(tmp_path, "resumed", CASES[case], resume_from=straight / f"checkpoint-{CHECKPOINT}")
    again = rows(resumed)
    assert [int(r["step"]) for r in again] == list(range(CHECKPOINT + 1, STEPS + 1))
    assert again == got[CHECKPOINT:]  # every column, as written (repr of the floats)


@pytest.mark.slow  # one hyperformer start that stops before training (~20 s)
@hf.pytestmark
def test_a_scope_the_model_does_not_have_is_refused(tmp_path):
    """hyperformer's finetune config trains plain T5: there is no hypernetwork to restart."""
    from hyperrestart.upstream.tiny import tiny_glue_dir, tiny_model_dir
    python, _ = hf.hyperformer_python()
    setup = {"root": tmp_path, "python": python, "model": tiny_model_dir(), "data": tiny_glue_dir(),
             "hf_home": tmp_path / "hf-home"}
    config = json.loads((ROOT / "configs" / "hyperformer" / "finetune_restart.json").read_text())
    config.update(model_name_or_path=str(setup["model"]), tokenizer_name=str(setup["model"]),
                  data_dir=str(setup["data"]), output_dir=str(tmp_path / "out"), max_steps=2, do_eval=False,
                  do_test=False, evaluation_strategy="no", load_best_model_at_end=False, n_val=8, n_test=8,
                  restart_scope="hypernetwork")
    with pytest.raises(AssertionError) as failed:
        hf.train(setup, config, "refused")
    assert "restart_scope 'hypernetwork': this model has no trainable hypernetwork parameters" in str(failed.value)
    assert not list((tmp_path / "out").glob("checkpoint-*"))


# ---------------------------------------------------------------- the P3 runner (hyperdecoder arm: both spaces)
import test_p3_runner as p3  # noqa: E402


@pytest.fixture(scope="module")
def p3_setup(tmp_path_factory):
    if not (p3.TREE / "modeling" / "adapter_t5.py").exists():
        pytest.skip(f"{p3.TREE} is missing: run `python bootstrap.py` (the hyperdecoder arm needs its adapter T5)")
    return p3._setup(tmp_path_factory)


def p3_flags(case):
    flags = []
    for key, value in CASES[case].items():
        flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags + ["--max_steps", STEPS, "--scheduler_step_unit", 1, "--save_steps", CHECKPOINT, "--eval_steps", 0,
                    "--eval_at_start", "false", "--eval_at_end", "false", "--hyperdecoders_path", p3.TREE]


@pytest.mark.slow  # three tiny P3 runs per case (~1 min on 2 busy cores)
@pytest.mark.parametrize("case", list(CASES))
def test_p3_runner_applies_each_schedule_and_scope_and_resumes_exactly(p3_setup, case):
    straight = p3_setup["root"] / f"{case}-straight"
    p3.train(p3_setup, straight, *p3_flags(case), model="hyperdecoder")
    got = rows(straight)
    assert [int(r["step"]) for r in got] == list(range(1, STEPS + 1))
    restarts = [int(r["step"]) - 1 for r in got if r["restart"]]
    if case.startswith("adaptive"):
        assert restarts, "the adaptive criterion never fired in 12 steps; the test needs a restart to check"
    for space in ("hypernetwork", "backbone"):
        applied = [float(r[f"{space}_lr"]) for r in got]
        assert applied == pytest.approx(expected_lrs(case, space, p3.LR, restarts), rel=1e-12, abs=1e-18), space
    resumed = p3_setup["root"] / f"{case}-resumed"
    p3.train(p3_setup, resumed, *p3_flags(case), "--stop_at_step", CHECKPOINT, model="hyperdecoder")
    assert [int(r["step"]) for r in rows(resumed)] == list(range(1, CHECKPOINT + 1))
    log = p3.train(p3_setup, resumed, *p3_flags(case), model="hyperdecoder")
    assert f"at step {CHECKPOINT}" in log
    assert rows(resumed) == got  # the rows before the checkpoint kept, the rest rewritten identically


@pytest.mark.slow  # one tiny P3 start
def test_p3_runner_refuses_a_scope_the_model_lacks(p3_setup):
    with pytest.raises(SystemExit, match="restart_scope 'hypernetwork': this model has no trainable hypernetwork"):
        p3.train(p3_setup, p3_setup["root"] / "refused", "--restart_scope", "hypernetwork", model="t5")

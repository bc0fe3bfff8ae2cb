"""The patched rabeehk/hyperformer script, run for real on a tiny random T5 and tiny GLUE data (CPU, offline).

hyperformer stays on transformers 3.5.1 (its own environment, requirements/hyperformer*.txt), so every run is a
subprocess with that environment's python. Checks: the paper's released hyperformer_restart.json, verbatim (misspelled
scheduler name "consine_annealing_restart"), logs eq. 5's learning rate at every optimizer step (computed here,
independently of the scheduler); the generate()-based validation and test write their metric files; a run resumed from
a mid-cycle checkpoint continues the identical lr sequence; the canonical name with other T_0 / T_mult / eta_min and a
warmup follows eq. 5 shifted by the warmup; with dropout on and gradient accumulation, a run resumed from a mid-epoch
checkpoint past the first epoch logs the same losses and ends with the same weights as the uninterrupted run, saving
(and rotating checkpoints, save_total_limit 1) after the resume. The restart run is in the default suite; the others
are marked slow (`pytest -m slow`).

Needs `python bootstrap.py` (profile modern) to have materialised <root>/upstream/hyperformer (or
$HYPERRESTART_UPSTREAM_DEST/hyperformer) and the hyperformer environment: `hyperrestart env hyperformer`, or
$HYPERRESTART_HYPERFORMER_PYTHON naming a python that has requirements/hyperformer*.txt installed.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TREE = Path(os.environ.get("HYPERRESTART_UPSTREAM_DEST") or ROOT / "upstream") / "hyperformer"
SCRIPT_DIR = TREE / "hyperformer"
RELEASED_CONFIG = ROOT / "configs" / "hyperformer" / "hyperformer_restart.json"
MAX_STEPS = 16
# UPSTREAM-FACTS: torch's CosineAnnealingWarmRestarts(T_0=1, T_mult=2, eta_min=1e-6), lr 3e-4, steps 1..16.
MEASURED_SGDR = [3e-4, 1.505e-4, 3e-4, 2.562e-4, 1.505e-4, 4.479e-5, 3e-4, 2.886e-4, 2.562e-4, 2.077e-4,
                 1.505e-4, 9.329e-5, 4.479e-5, 1.238e-5, 3e-4, 2.971e-4]


def hyperformer_python():
    """(python of the hyperformer env, None) or (None, why not)."""
    explicit = os.environ.get("HYPERRESTART_HYPERFORMER_PYTHON")
    if explicit:
        if not Path(explicit).exists():
            return None, f"HYPERRESTART_HYPERFORMER_PYTHON={explicit} does not exist"
        return explicit, None
    try:
        from hyperrestart.upstream import envs
        from hyperrestart.core.errors import HyperrestartError
    except ImportError as exc:
        return None, f"hyperrestart.upstream.envs is not importable ({exc}); set HYPERRESTART_HYPERFORMER_PYTHON"
    try:
        return str(envs.python_for("hyperformer")), None
    except HyperrestartError as exc:
        return None, f"{exc} (or set HYPERRESTART_HYPERFORMER_PYTHON)"


def _skip_reason():
    if not (SCRIPT_DIR / "finetune_t5_trainer.py").exists():
        return f"{TREE} is missing: run `python bootstrap.py` (profile modern) first"
    if not (SCRIPT_DIR / "hf_argparser.py").exists():
        return f"{TREE} lacks the modern-profile patches: run `python bootstrap.py --profile modern --force`"
    python, reason = hyperformer_python()
    if reason:
        return f"no hyperformer environment: {reason}"
    probe = subprocess.run([python, "-c", "from importlib.metadata import version; print(version('transformers'))"],
                           capture_output=True, text=True)
    if probe.returncode or probe.stdout.strip() != "3.5.1":
        return (f"{python} does not import transformers 3.5.1 ({(probe.stdout + probe.stderr).strip()[-200:]}); "
                f"recreate it with `hyperrestart env hyperformer --recreate`")
    return None


SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=str(SKIP_REASON))


def eq5(step, eta_max=3e-4, eta_min=1e-6, t_0=1, t_mult=2, warmup=0):
    """The lr logged after `step` optimizer steps: linear warmup to eta_max over `warmup` steps, then eq. 5 with the
    SGDR clock at step - warmup (T_cur counts steps into cycle i, T_i = T_0 T_mult^i)."""
    if step < warmup:
        return eta_max * step / warmup
    t_cur, t_i = step - warmup, t_0
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * t_mult
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / t_i))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hyperrestart.upstream.tiny import tiny_glue_dir, tiny_model_dir
    root = tmp_path_factory.mktemp("hyperformer")
    python, _ = hyperformer_python()
    model = tiny_model_dir()  # saved without added_tokens.json, so transformers 3.5.1 reads its tokenizer
    assert not (model / "added_tokens.json").exists(), f"{model}: transformers 3.5.1 rejects added_tokens.json"
    return {"root": root, "python": python, "model": model, "data": tiny_glue_dir(), "hf_home": root / "hf-home"}


def released_config(setup, output_dir, **overrides):
    """The paper's hyperformer_restart.json verbatim but for paths, step counts and small eval sets. With its
    load_best_model_at_end, checkpoints are written only when evaluating: eval_steps 10 gives checkpoint-10."""
    config = json.loads(RELEASED_CONFIG.read_text())
    config.update(model_name_or_path=str(setup["model"]), tokenizer_name=str(setup["model"]),
                  data_dir=str(setup["data"]), output_dir=str(output_dir), logging_dir=str(output_dir / "runs"),
                  max_steps=MAX_STEPS, logging_steps=1, eval_steps=10, save_steps=10, n_val=8, n_test=8)
    config.update(overrides)
    return config


def train(setup, config, name):
    """Run finetune_t5_trainer.py on `config` (written to <root>/<name>.json); returns its combined output."""
    config_file = setup["root"] / f"{name}.json"
    config_file.write_text(json.dumps(config, indent=1))
    env = dict(os.environ, PYTHONPATH=str(TREE), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_HOME=str(setup["hf_home"]),
               HF_DATASETS_CACHE=str(setup["hf_home"] / "datasets"), CUDA_VISIBLE_DEVICES="", WANDB_DISABLED="true")
    env.pop("HYPERRESTART_DATA_DIR", None)
    result = subprocess.run([setup["python"], "finetune_t5_trainer.py", str(config_file)], cwd=SCRIPT_DIR, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def logged(output_dir: Path):
    """[(step, lr, loss)] from the run's trainer_state.json log history."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [(e["step"], e["learning_rate"], e["loss"]) for e in state["log_history"] if "learning_rate" in e]


@pytest.fixture(scope="module")
def restart_run(setup):
    out = setup["root"] / "restart"
    output = train(setup, released_config(setup, out), "restart")
    return out, output


@pytest.mark.slow  # a tiny hyperformer training run (~25 s)
def test_released_restart_config_follows_eq5(restart_run):
    out, output = restart_run
    log = logged(out)
    assert [step for step, _, _ in log] == list(range(1, MAX_STEPS + 1))
    lrs = [lr for _, lr, _ in log]
    assert lrs == pytest.approx([eq5(step) for step in range(1, MAX_STEPS + 1)], rel=1e-9, abs=1e-12)
    assert lrs == pytest.approx(MEASURED_SGDR, rel=1e-3)
    assert [step for step in range(1, MAX_STEPS + 1) if lrs[step - 1] == pytest.approx(3e-4)] == [1, 3, 7, 15]
    assert "'consine_annealing_restart' is an alias of 'cosine_annual_w_restarts'" in output
    assert all(math.isfinite(loss) and loss > 0 for _, _, loss in log)


@pytest.mark.slow  # a tiny hyperformer training run (~25 s)
def test_generate_evaluation_writes_metric_files(restart_run):
    out, _ = restart_run
    released = json.loads(RELEASED_CONFIG.read_text())
    for split in ("val", "test"):
        metrics = json.loads((out / f"{split}_results.json").read_text())
        assert "eval_average_metrics" in metrics
        for task in released["eval_tasks"]:
            assert any(key.startswith(f"{task}_eval_") and key != f"{task}_eval_loss" for key in metrics), \
                (split, task, sorted(metrics))
            assert math.isfinite(metrics[f"{task}_eval_loss"])
    assert (out / "pytorch_model.bin").is_file() and (out / "checkpoint-10" / "scheduler.pt").is_file()


@pytest.mark.slow  # a second training run (~15 s on 2 CPU cores)
def test_resume_from_mid_cycle_checkpoint_continues_the_lr_sequence(setup, restart_run):
    out, _ = restart_run
    # Upstream resumes from output_dir itself (model, optimizer.pt, scheduler.pt, trainer_state.json): step 10 lies
    # inside the cycle of steps 7..14.
    resumed = setup["root"] / "resumed"
    shutil.copytree(out / "checkpoint-10", resumed)
    output = train(setup, released_config(setup, resumed), "resumed")
    assert "Continuing training from global step 10" in output
    original, continued = logged(out), logged(resumed)
    assert [step for step, _, _ in continued] == list(range(1, MAX_STEPS + 1))
    assert [lr for _, lr, _ in continued] == [lr for _, lr, _ in original]  # identical floats, not just close
    assert (resumed / "test_results.json").is_file()


@pytest.mark.slow  # a second training run (~12 s on 2 CPU cores)
def test_canonical_name_with_warmup_and_other_cycle_lengths(setup):
    out = setup["root"] / "canonical"
    settings = dict(eta_max=1e-3, eta_min=1e-5, t_0=2, t_mult=3, warmup=3)
    config = released_config(setup, out, lr_scheduler="cosine_annual_w_restarts", learning_rate=settings["eta_max"],
                             eta_min=settings["eta_min"], restart_t0=settings["t_0"], restart_t_mult=settings["t_mult"],
                             restart_warmup_steps=settings["warmup"], max_steps=MAX_STEPS + 2, do_eval=False,
                             do_test=False, evaluation_strategy="no", load_best_model_at_end=False, save_steps=1000)
    train(setup, config, "canonical")
    log = logged(out)
    assert [step for step, _, _ in log] == list(range(1, MAX_STEPS + 3))
    assert [lr for _, lr, _ in log] == pytest.approx([eq5(step, **settings) for step in range(1, MAX_STEPS + 3)],
                                                     rel=1e-9, abs=1e-12)
    # warmup 3 then cycles of 2, 6, 18 steps: the lr is back at its maximum after steps 3, 5 and 11
    assert [step for step, lr, _ in log if lr == pytest.approx(1e-3)] == [3, 5, 11]


@pytest.mark.slow  # two training runs of 12 and 6 steps with evaluations (~90 s on 2 CPU cores)
def test_resume_with_dropout_gives_identical_losses_and_weights(setup):
    import torch
    assert json.loads((setup["model"] / "config.json").read_text())["dropout_rate"] > 0
    steps, checkpoint = 12, 6  # 8 tasks x 4 rows, batch 4, 2 accumulation steps: 4 optimizer steps per epoch
    settings = dict(max_steps=steps, n_train=4, gradient_accumulation_steps=2, per_device_train_batch_size=4,
                    eval_steps=3, save_steps=3, do_test=False)
    straight = setup["root"] / "straight"
    train(setup, released_config(setup, straight, save_total_limit=None, **settings), "straight")
    assert (straight / f"checkpoint-{checkpoint}" / "rng_state.pth").is_file()
    resumed = setup["root"] / "resumed-dropout"
    shutil.copytree(straight / f"checkpoint-{checkpoint}", resumed)
    # the released save_total_limit 1: the first save after resuming rotates with the old run's best checkpoint
    output = train(setup, released_config(setup, resumed, **settings), "resumed-dropout")
    assert f"Continuing training from global step {checkpoint}" in output
    assert (resumed / f"checkpoint-{steps}").is_dir()
    losses = [(step, loss) for step, _, loss in logged(straight)]
    assert [step for step, _ in losses] == list(range(1, steps + 1))
    assert [(step, loss) for step, _, loss in logged(resumed)] == losses
    expected = torch.load(straight / "pytorch_model.bin", map_location="cpu")
    final = torch.load(resumed / "pytorch_model.bin", map_location="cpu")
    assert expected.keys() == final.keys()
    for name in expected:
        assert torch.equal(expected[name], final[name]), f"{name} differs after resuming from step {checkpoint}"

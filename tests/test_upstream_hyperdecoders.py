"""The patched allenai/hyperdecoders script, run for real on a tiny random T5 and tiny GLUE data (CPU, offline).

Checks the logged learning rate at every optimizer step against eq. 5 (computed here, independently of the
scheduler), a second scheduler (linear with warmup) against its formula, the metric files written by the final
generate()-based evaluation and test, and that resuming from a mid-cycle checkpoint continues the same lr sequence.
With dropout on, a run resumed from a checkpoint (mid-epoch past the first epoch, or at an epoch start, with gradient
accumulation) logs the same losses and ends with the same weights as the uninterrupted run, saving after the resume.
`hyperrestart run --tiny --nproc 2` (gloo on CPU) splits the data between the processes, loads the best model and
follows the 1-process lr trace. The restart run is in the default suite; the others are marked slow (`pytest -m slow`).
Needs `python bootstrap.py` (profile modern) to have materialised <root>/upstream/hyperdecoders and transformers 4.57.
"""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The materialised tree: <root>/upstream/hyperdecoders, or <$HYPERRESTART_UPSTREAM_DEST>/hyperdecoders.
TREE = Path(os.environ.get("HYPERRESTART_UPSTREAM_DEST") or ROOT / "upstream") / "hyperdecoders"
SCRIPT_DIR = TREE / "hyperdecoder"
CONFIGS = ROOT / "configs" / "hyperdecoders"
TASKS = ["rte", "stsb"]  # small GLUE tasks: split_validation_test halves their validation split
MAX_STEPS = 16
ETA_MAX, ETA_MIN, T_0, T_MULT = 3e-4, 1e-6, 1, 2
# UPSTREAM-FACTS: torch's CosineAnnealingWarmRestarts(T_0=1, T_mult=2, eta_min=1e-6), lr 3e-4, steps 1..16.
MEASURED_SGDR = [3e-4, 1.505e-4, 3e-4, 2.562e-4, 1.505e-4, 4.479e-5, 3e-4, 2.886e-4, 2.562e-4, 2.077e-4,
                 1.505e-4, 9.329e-5, 4.479e-5, 1.238e-5, 3e-4, 2.971e-4]


def _skip_reason():
    if not (SCRIPT_DIR / "finetune_trainer.py").exists():
        return f"{TREE} is missing: run `python bootstrap.py` (profile modern) first"
    if "def set_data_dir" not in (SCRIPT_DIR / "data" / "tasks.py").read_text():
        return f"{TREE} lacks the modern-profile patches: run `python bootstrap.py --profile modern --force`"
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "transformers is not installed: pip install -r requirements/hyperdecoders.txt"
    if not version.startswith("4.57."):
        return f"transformers {version} installed; these runs need 4.57 (requirements/hyperdecoders.txt)"
    missing = [m for m in ("datasets", "sacrebleu", "rouge_score", "nltk", "sklearn", "scipy", "sentencepiece")
               if importlib.util.find_spec(m) is None]
    if missing:
        return f"hyperdecoders needs {', '.join(missing)}: pip install -r requirements/hyperdecoders.txt"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def eq5(step):
    """eq. 5 learning rate logged after `step` optimizer steps (SGDR clock = step, T_i = T_0 T_mult^i)."""
    t_cur, t_i = step, T_0
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * T_MULT
    return ETA_MIN + 0.5 * (ETA_MAX - ETA_MIN) * (1 + math.cos(math.pi * t_cur / t_i))


def linear_with_warmup(step, warmup, total):
    if step < warmup:
        return ETA_MAX * step / warmup
    return ETA_MAX * max(0.0, (total - step) / (total - warmup))


def _reference_config(name):
    """The project's copy of a released hyperdecoders config (configs/hyperdecoders/)."""
    path = CONFIGS / name
    if not path.exists():
        pytest.skip(f"{path} is missing (the released configs live in configs/hyperdecoders/)")
    return json.loads(path.read_text())


def _tiny_config(base, model, data, out, **overrides):
    cfg = dict(base)
    cfg.update(model_name_or_path=str(model), tokenizer_name=str(model), data_dir=str(data), output_dir=str(out),
               tasks=TASKS, eval_tasks=TASKS, max_steps=MAX_STEPS, logging_steps=1, eval_steps=MAX_STEPS,
               save_steps=8, save_total_limit=None, load_best_model_at_end=False, overwrite_output_dir=True,
               per_device_train_batch_size=4, per_device_eval_batch_size=8, gradient_accumulation_steps=1,
               n_val=8, n_test=8, max_source_length=48, max_target_length=8, val_max_target_length=8,
               test_max_target_length=8, dataloader_num_workers=0, report_to=[], seed=42)
    cfg.update(overrides)
    return cfg


def _run(cfg, tmp_dir: Path, name):
    cfg_path = tmp_dir / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp_dir / "hf-home"), HF_DATASETS_CACHE=str(tmp_dir / "hf-home" / "datasets"),
               HYPERRESTART_DATA_DIR="", PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false",
               CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "finetune_trainer.py", str(cfg_path)], cwd=SCRIPT_DIR, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result


def _logged_lrs(out_dir):
    history = json.loads((Path(out_dir) / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hyperrestart.upstream.tiny import tiny_glue_dir, tiny_model_dir
    cache = tmp_path_factory.mktemp("tiny")
    return tiny_model_dir(cache), tiny_glue_dir(cache, tasks=TASKS)


@pytest.fixture(scope="module")
def restart_run(tiny, tmp_path_factory):
    model, data = tiny
    tmp = tmp_path_factory.mktemp("hd-restart")
    out = tmp / "out"
    cfg = _tiny_config(_reference_config("glue_restart.json"), model, data, out)
    assert cfg["lr_scheduler"] == "cosine_annual_w_restarts"
    result = _run(cfg, tmp, "restart")
    return out, cfg, result, tmp


def test_eq5_reference_values_match_the_measured_sgdr_sequence():
    assert [eq5(s) for s in range(1, MAX_STEPS + 1)] == pytest.approx(MEASURED_SGDR, rel=1e-3)
    restarts = [s for s in range(1, MAX_STEPS + 1) if eq5(s) == pytest.approx(ETA_MAX)]
    assert restarts == [1, 3, 7, 15]


@pytest.mark.slow  # a tiny hyperdecoders training run (~20 s)
def test_restart_run_logs_eq5_at_every_step(restart_run):
    out, _, _, _ = restart_run
    lrs = _logged_lrs(out)
    assert sorted(lrs) == list(range(1, MAX_STEPS + 1))
    for step in range(1, MAX_STEPS + 1):
        assert lrs[step] == pytest.approx(eq5(step), rel=1e-9, abs=1e-15), f"step {step}"


@pytest.mark.slow  # a tiny hyperdecoders training run (~20 s)
def test_restart_run_writes_generate_metrics_and_checkpoints(restart_run):
    out, _, result, _ = restart_run
    for split in ("eval", "test"):
        metrics = json.loads((out / f"{split}_results.json").read_text())
        for key in ("rte_eval_acc", "stsb_eval_pearson_corrcoef", "eval_average_metrics"):
            assert key in metrics, f"{split}_results.json lacks {key}: {sorted(metrics)}"
            assert math.isfinite(metrics[key])
        for task in TASKS:
            assert math.isfinite(metrics[f"{task}_eval_loss"]), f"{split}: {task} loss is not finite"
    losses = [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert len(losses) == MAX_STEPS and all(math.isfinite(x) for x in losses)
    for step in (8, 16):
        assert (out / f"checkpoint-{step}" / "scheduler.pt").exists()
        assert (out / f"checkpoint-{step}" / "optimizer.pt").exists()
    log = (out / "log.txt").read_text()
    assert "Running Evaluation" in log and "Average results" in log


@pytest.mark.slow  # a second training run (~25 s CPU)
def test_resume_from_mid_cycle_checkpoint_continues_the_lr_sequence(restart_run):
    out, cfg, _, tmp = restart_run
    checkpoint = out / "checkpoint-8"  # mid-cycle: the third cycle runs over steps 7..14
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 8
    resumed_out = tmp / "resumed"
    resumed = dict(cfg, model_name_or_path=str(checkpoint), output_dir=str(resumed_out), do_eval=False,
                   do_test=False, evaluation_strategy="no")
    result = _run(resumed, tmp, "resumed")
    assert "Continuing training from global step 8" in result.stdout + result.stderr + \
        (resumed_out / "log.txt").read_text()
    full, again = _logged_lrs(out), _logged_lrs(resumed_out)
    assert sorted(again) == list(range(1, MAX_STEPS + 1))
    for step in range(9, MAX_STEPS + 1):
        assert again[step] == full[step], f"step {step}: resumed {again[step]} != uninterrupted {full[step]}"
        assert again[step] == pytest.approx(eq5(step), rel=1e-9)


@pytest.mark.slow  # a second training run (~20 s CPU)
def test_linear_scheduler_run_without_evaluation(tiny, tmp_path_factory):
    """Another scheduler through the same script; do_eval false with no evaluation strategy (upstream TypeError)."""
    model, data = tiny
    tmp = tmp_path_factory.mktemp("hd-linear")
    out = tmp / "out"
    warmup = 4
    cfg = _tiny_config(_reference_config("glue_linear.json"), model, data, out, warmup_steps=warmup,
                       do_eval=False, do_test=False, evaluation_strategy="no", save_steps=MAX_STEPS)
    assert cfg["lr_scheduler"] == "linear"
    _run(cfg, tmp, "linear")
    lrs = _logged_lrs(out)
    assert sorted(lrs) == list(range(1, MAX_STEPS + 1))
    for step in range(1, MAX_STEPS + 1):
        assert lrs[step] == pytest.approx(linear_with_warmup(step, warmup, MAX_STEPS), rel=1e-9, abs=1e-15)
    assert not (out / "eval_results.json").exists()


def _weights(path):
    from safetensors.torch import load_file
    return load_file(str(path))


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)


def _losses(out_dir):
    history = json.loads((Path(out_dir) / "trainer_state.json").read_text())["log_history"]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


RESUME_STEPS = 12  # 2 x 16 rows, batch 4, 2 accumulation steps: 4 optimizer steps per epoch


@pytest.fixture(scope="module")
def straight_run(tiny, tmp_path_factory):
    """12 steps without interruption, dropout on, a checkpoint every 2 steps."""
    model, data = tiny
    assert json.loads((Path(model) / "config.json").read_text())["dropout_rate"] > 0
    tmp = tmp_path_factory.mktemp("hd-straight")
    out = tmp / "out"
    cfg = _tiny_config(_reference_config("glue_restart.json"), model, data, out, n_train=16,
                       gradient_accumulation_steps=2, max_steps=RESUME_STEPS, save_steps=2, do_eval=False,
                       do_test=False, evaluation_strategy="no", load_best_model_at_end=False)
    _run(cfg, tmp, "straight")
    return out, cfg, tmp


@pytest.mark.slow  # two training runs of 12 and 6 steps (~60 s on 2 CPU cores)
@pytest.mark.parametrize("checkpoint", [6, 8], ids=["mid-epoch", "epoch-start"])
def test_resume_with_dropout_gives_identical_losses_and_weights(straight_run, checkpoint):
    out, cfg, tmp = straight_run
    resumed_out = tmp / f"resumed-{checkpoint}"
    resumed = dict(cfg, model_name_or_path=str(out / f"checkpoint-{checkpoint}"), output_dir=str(resumed_out))
    result = _run(resumed, tmp, f"resumed-{checkpoint}")
    log = result.stdout + result.stderr + (resumed_out / "log.txt").read_text()
    assert f"Continuing training from global step {checkpoint}" in log
    straight_losses, resumed_losses = _losses(out), _losses(resumed_out)
    assert [step for step, _ in straight_losses] == list(range(1, RESUME_STEPS + 1))
    assert resumed_losses == straight_losses
    assert (resumed_out / f"checkpoint-{RESUME_STEPS}").is_dir()  # saved after resuming
    expected, final = _weights(out / "model.safetensors"), _weights(resumed_out / "model.safetensors")
    assert expected.keys() == final.keys()
    for name in expected:
        assert torch_equal(expected[name], final[name]), f"{name} differs after resuming from step {checkpoint}"



def _cli_run(tmp, name, *args):
    out = tmp / name
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("HYPERRESTART_DATA_DIR", None)
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "run",
                             str(CONFIGS / "glue_restart.json"), "--tiny", "--dest", str(TREE.parent),
                             "--python", sys.executable, "--output-dir", str(out), "--quiet", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return out, result


PER_RANK = re.compile(r"Process rank (\d+) of (\d+) trained on (\d+) examples \(input_ids sha1 (\w+)\)")


@pytest.mark.slow  # a 2-process and a 1-process --tiny run (~80 s on 2 CPU cores)
def test_tiny_run_with_two_cpu_processes_splits_the_data(tmp_path):
    two, result2 = _cli_run(tmp_path, "two", "--nproc", "2")
    assert result2.returncode == 0, result2.stdout[-3000:] + result2.stderr[-3000:]
    one, result1 = _cli_run(tmp_path, "one")
    assert result1.returncode == 0, result1.stdout[-3000:] + result1.stderr[-3000:]
    from hyperrestart.upstream.resolve import TINY_SETTINGS
    tiny_steps, per_device = TINY_SETTINGS["max_steps"], 4
    ranks = {int(m[0]): m for m in PER_RANK.findall((two / "train.log").read_text())}
    assert sorted(ranks) == [0, 1] and all(m[1] == "2" for m in ranks.values())
    assert [int(ranks[r][2]) for r in (0, 1)] == [tiny_steps * per_device] * 2
    assert ranks[0][3] != ranks[1][3], "both processes trained on the same batches"
    single = PER_RANK.findall((one / "train.log").read_text())
    assert [(m[0], m[1], m[2]) for m in single] == [("0", "1", str(tiny_steps * per_device))]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in (two / "log.txt").read_text()
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in (one / "log.txt").read_text()
    assert (two / "lr_trace.csv").read_text() == (one / "lr_trace.csv").read_text()
    assert len((two / "lr_trace.csv").read_text().splitlines()) == tiny_steps + 1
    # load_best_model_at_end: the saved final model is the best checkpoint's (tied weights are stored once)
    best = json.loads((two / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert best and Path(best).is_dir()
    final, best_weights = _weights(two / "model.safetensors"), _weights(Path(best) / "model.safetensors")
    assert final.keys() == best_weights.keys()
    assert all(torch_equal(final[k], best_weights[k]) for k in final)
    if Path(best).name != f"checkpoint-{tiny_steps}":
        last = _weights(two / f"checkpoint-{tiny_steps}" / "model.safetensors")
        assert not all(torch_equal(final[k], last[k]) for k in final), "the last weights were kept, not the best"
    for split in ("eval", "test"):
        assert json.loads((two / f"{split}_results.json").read_text()).keys() == \
            json.loads((one / f"{split}_results.json").read_text()).keys()

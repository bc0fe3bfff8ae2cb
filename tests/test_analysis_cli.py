"""`hyperrestart analyse`: reading run folders and its errors (fast), and landscape / hessian / track end to end on a
real tiny hyperdecoders run (slow: trains 3 steps, then runs the jobs in the hyperdecoders environment)."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hyperrestart.analysis import loading
from hyperrestart.cli import main
from hyperrestart.core.errors import HyperrestartError

ROOT = Path(__file__).resolve().parent.parent


def sgdr_applied(steps, eta_max=3e-4, eta_min=1e-6):
    """The lr each optimizer step 1..steps applies with SGDR T_0=1, T_mult=2 (eq. 5 after step - 1 steps)."""
    out = []
    for step in range(1, steps + 1):
        t_cur, t_i = step - 1, 1
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * 2
        out.append(eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)))
    return out


def fake_run(tmp_path, steps=(2, 5), config=None, trace=None):
    run = tmp_path / "run"
    run.mkdir()
    (run / "hyperrestart_config.json").write_text(json.dumps(config or {"decoder_adapter": "generated",
                                                                        "learning_rate": 3e-4}), encoding="utf-8")
    for step in steps:
        (run / f"checkpoint-{step}").mkdir()
        (run / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
    (run / "checkpoint-9").mkdir()  # no weights: not a checkpoint for analysis
    if trace:
        with open(run / "lr_trace.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "lr_applied"])
            writer.writerows((i + 1, lr) for i, lr in enumerate(trace))
    return run


def test_open_run_infers_the_upstream_and_lists_checkpoints_with_weights(tmp_path):
    run = loading.open_run(fake_run(tmp_path))
    assert run.upstream.name == "hyperdecoders" and list(run.checkpoints) == [2, 5]
    assert [c.label for c in loading.select(run, "all")] == ["init", "checkpoint-2", "checkpoint-5"]
    assert [c.step for c in loading.select(run, "last")] == [5]
    assert loading.select(run, "init")[0].path is None and loading.select(run, "0")[0].label == "init"
    with pytest.raises(HyperrestartError, match=r"--checkpoint 9: choose init, last, final, all or a saved step \(2, 5\)"):
        loading.select(run, "9")


def test_final_model_of_the_run_folder(tmp_path):
    run_dir = fake_run(tmp_path, steps=())
    with pytest.raises(HyperrestartError, match="has no checkpoint-N folder with model weights"):
        loading.select(loading.open_run(run_dir), "last")
    (run_dir / "pytorch_model.bin").write_bytes(b"")
    (run_dir / "trainer_state.json").write_text('{"global_step": 4}', encoding="utf-8")
    run = loading.open_run(run_dir)
    assert [(c.label, c.step, c.path) for c in loading.select(run, "last")] == [("final", 4, run_dir)]
    assert [c.label for c in loading.select(run, "all")] == ["init", "final"]
    assert loading.select(run, "4")[0].label == "final"


def test_hyperformer_config_and_ambiguous_configs(tmp_path):
    run = loading.open_run(fake_run(tmp_path, config={"adapter_config_name": "meta-adapter"}))
    assert run.upstream.name == "hyperformer"
    assert loading.infer_upstream({"learning_rate": 1e-3}, "hyperformer").name == "hyperformer"
    with pytest.raises(HyperrestartError, match="both match.*pass --upstream hyperdecoders\\|hyperformer"):
        loading.infer_upstream({"learning_rate": 1e-3})
    with pytest.raises(HyperrestartError, match="no upstream takes all its keys"):
        loading.infer_upstream({"not_an_argument": 1})


def test_track_steps_are_init_cycle_ends_and_the_end(tmp_path):
    run = loading.open_run(fake_run(tmp_path, trace=sgdr_applied(31)))
    # restarts (steps starting a new cycle) at 2, 4, 8, 16: the steps before them end a cycle
    assert loading.track_steps(run) == [0, 1, 3, 7, 15, 31]
    (run.dir / "lr_trace.csv").write_text("step,lr_applied\n" + "".join(f"{i},0.001\n" for i in range(1, 11)),
                                          encoding="utf-8")
    assert loading.track_steps(run) == [0, 10]  # a constant lr: init and the end


def test_errors_are_one_line_with_the_fix(tmp_path, capsys):
    assert main(["analyse", "landscape", str(tmp_path / "missing")]) == 1
    assert "is not a folder; pass the --output-dir of a `hyperrestart run`" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyse", "hessian", str(tmp_path / "empty")]) == 1
    assert "holds no hyperrestart_config.json: it is not a run folder" in capsys.readouterr().err
    run = fake_run(tmp_path)
    assert main(["analyse", "track", str(run)]) == 1
    err = capsys.readouterr().err
    assert "lr_trace.csv is missing" in err and "Traceback" not in err
    assert main(["analyse", "track", str(run), "--steps", "1,x"]) == 1
    assert "--steps 1,x: give optimizer steps" in capsys.readouterr().err
    with open(run / "lr_trace.csv", "w", encoding="utf-8") as handle:
        handle.write("step,lr_applied\n1,0.1\n2,0.05\n")
    assert main(["analyse", "track", str(run), "--steps", "0,2,3"]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint at step(s) 3 (saved: 2, 5)" in err and "save_steps=1" in err
    (run / "lr_trace.csv").write_text("step,lr\n1,x\n", encoding="utf-8")
    assert main(["analyse", "track", str(run)]) == 1
    assert "lr_trace.csv is damaged" in capsys.readouterr().err
    assert main(["analyse", "landscape", str(run), "--resolution", "1"]) == 1
    assert "--resolution must be at least 2" in capsys.readouterr().err
    assert main(["analyse", "landscape", str(run), "--batch-points", "0"]) == 1
    err = capsys.readouterr().err
    assert "--batches and --batch-points at least 1" in err and "Traceback" not in err


# --- end to end on a real tiny hyperdecoders run ----------------------------------------------------------------

def _tiny_run(root):
    from hyperrestart.upstream import envs
    try:
        envs.python_for("hyperdecoders")
    except HyperrestartError as exc:
        pytest.skip(str(exc))
    if not (ROOT / "upstream" / "hyperdecoders" / "hyperdecoder" / "hyperrestart_analyse.py").is_file():
        pytest.skip("upstream/hyperdecoders is not materialised with the analysis entry: run `python bootstrap.py`")
    out = root / "run"
    cmd = [sys.executable, "-m", "hyperrestart.cli", "run", str(ROOT / "configs/hyperdecoders/glue_restart.json"),
           "--tiny", "--quiet", "--output-dir", str(out), "--set", "max_steps=3", "--set", "save_steps=1",
           "--set", "save_total_limit=null", "--set", "load_best_model_at_end=false", "--set", "do_eval=false",
           "--set", "do_test=false"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("analyse"))


def analyse(*args):
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "analyse", *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return result


@pytest.mark.slow
def test_landscape_end_to_end_and_resume_from_its_cache(tiny_run):
    out = tiny_run / "an1"
    result = analyse("landscape", tiny_run, "--checkpoint", "all", "--resolution", "3", "--range", "2",
                     "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Figure 3 layout" in result.stdout and (out / "figure3.png").stat().st_size > 10000
    for label in ("init", "checkpoint-1", "checkpoint-3"):
        centres = []
        for space in ("hypernetwork", "main", "backbone"):
            data = np.load(out / f"landscape-{label}-{space}.npz")
            assert data["surface"].shape == (3, 3) and int(data["seed"]) == 0
            assert data["surface"][1, 1] == data["loss_at_checkpoint"]  # the centre is the unperturbed loss, exactly
            assert data["slice_d1"][1] == data["loss_at_checkpoint"]
            assert np.ptp(data["surface"]) > 0 or (label == "init" and space == "backbone")
            centres.append(float(data["loss_at_checkpoint"]))
        assert len(set(centres)) == 1  # every space perturbs the same checkpoint
        assert (out / f"landscape-{label}.png").is_file()
    with open(out / "landscape-checkpoint-3-main.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 + 3 + 3 and rows[0]["kind"] == "grid" and rows[-1]["kind"] == "slice_d2"
    before = np.load(out / "landscape-checkpoint-3-hypernetwork.npz")["surface"]
    result = analyse("landscape", tiny_run, "--checkpoint", "3", "--resolution", "3", "--range", "2", "--out", out,
                     "--space", "hypernetwork")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(out / "landscape-checkpoint-3-hypernetwork.npz")["surface"], before)


@pytest.mark.slow
def test_landscape_over_two_processes_equals_one(tiny_run):
    one, two = tiny_run / "one", tiny_run / "two"
    for out, nproc in ((one, 1), (two, 2)):
        result = analyse("landscape", tiny_run, "--checkpoint", "last", "--space", "main", "--resolution", "5",
                         "--range", "1", "--out", out, "--nproc", nproc)
        assert result.returncode == 0, result.stdout + result.stderr
    np.testing.assert_array_equal(np.load(one / "landscape-checkpoint-3-main.npz")["surface"],
                                  np.load(two / "landscape-checkpoint-3-main.npz")["surface"])


@pytest.mark.slow
def test_hessian_and_track_end_to_end(tiny_run):
    out = tiny_run / "hess"
    small = ["-k", "2", "--lanczos-steps", "4", "--density-runs", "1", "--trace-samples", "2", "--ratio-vectors", "1"]
    result = analyse("hessian", tiny_run, "--out", out, *small)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "||R v|| / ||H_phi v|| = " in result.stdout and "inertia of hypernetwork and main network" in result.stdout
    data = json.loads((out / "hessian-checkpoint-3.json").read_text(encoding="utf-8"))
    for space in ("hypernetwork", "main", "backbone"):
        spectrum = data["spaces"][space]
        assert len(spectrum["top"]) == 2 and spectrum["top"][0] >= spectrum["top"][1]
        assert spectrum["bottom"][0] <= spectrum["bottom"][1] <= spectrum["top"][0]
    ratio = data["r_term"]["vectors"][0]
    assert 0 < ratio["ratio"] < 10 and ratio["norm_h_phi_v"] > 0
    assert (out / "hessian-checkpoint-3.png").is_file()
    result = analyse("track", tiny_run, "--out", out, "--steps", "0,3", *small)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "track.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["space"]) for r in rows] == [(s, sp) for s in ("0", "3")
                                                       for sp in ("hypernetwork", "main", "backbone")]
    assert (out / "track.png").stat().st_size > 10000


@pytest.mark.slow
def test_hessian_over_two_processes_equals_one(tiny_run):
    small = ["-k", "2", "--lanczos-steps", "4", "--density-runs", "1", "--trace-samples", "2", "--ratio-vectors", "1"]
    files = {}
    for nproc in (1, 2):
        out = tiny_run / f"hessian-nproc{nproc}"
        result = analyse("hessian", tiny_run, "--checkpoint", "all", "--out", out, "--nproc", nproc, *small)
        assert result.returncode == 0, result.stdout + result.stderr
        files[nproc] = {p.name: p.read_bytes() for p in sorted(out.glob("hessian-*.json"))}
        assert not (out / "hessian-parts").exists()
    assert list(files[1]) == ["hessian-checkpoint-1.json", "hessian-checkpoint-2.json", "hessian-checkpoint-3.json",
                              "hessian-init.json"]
    assert files[1] == files[2]


SMALL_HESSIAN = ["-k", "2", "--lanczos-steps", "4", "--density-runs", "1", "--trace-samples", "2",
                 "--ratio-vectors", "1"]


def _train(args):
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", *map(str, args)], capture_output=True,
                            text=True, cwd=ROOT, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def _check_both_tasks(run_dir, trained_label):
    out = run_dir / "an"
    result = analyse("landscape", run_dir, "--checkpoint", "all", "--resolution", "3", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("init", trained_label):
        for space in ("hypernetwork", "main", "backbone"):
            data = np.load(out / f"landscape-{label}-{space}.npz")
            assert data["surface"][1, 1] == data["loss_at_checkpoint"]
    assert (out / "figure3.png").is_file()
    result = analyse("hessian", run_dir, "--out", out, *SMALL_HESSIAN)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((out / f"hessian-{trained_label}.json").read_text(encoding="utf-8"))
    assert set(data["spaces"]) == {"hypernetwork", "main", "backbone"} and all(data["spaces"].values())
    assert np.isfinite(data["r_term"]["ratio_mean"]) and data["r_term"]["ratio_mean"] > 0


@pytest.mark.slow
def test_hyperformer_run_end_to_end(tmp_path):
    from hyperrestart.upstream import envs
    try:
        envs.python_for("hyperformer")
    except HyperrestartError as exc:
        pytest.skip(str(exc))
    run_dir = tmp_path / "hf"
    _train(["run", ROOT / "configs/hyperformer/hyperformer_restart.json", "--tiny", "--quiet", "--output-dir",
            run_dir, "--set", "max_steps=2", "--set", "do_eval=false", "--set", "do_test=false"])
    _check_both_tasks(run_dir, "final")  # hyperformer keeps no checkpoint-N here: the run folder's final model


@pytest.mark.slow
def test_p3_hyperdecoder_run_end_to_end(tmp_path):
    run_dir = tmp_path / "p3"
    _train(["p3", "--tiny", "--config", "table2_hyperdecoder_restart", "--output-dir", run_dir, "--",
            "--max_steps", "2", "--save_steps", "2", "--eval_steps", "0", "--eval_at_start", "false",
            "--eval_at_end", "false"])
    _check_both_tasks(run_dir, "checkpoint-2")

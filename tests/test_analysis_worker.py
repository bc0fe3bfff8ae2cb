"""hyperrestart.analysis.worker on a toy hypernetwork (fast): the landscape, hessian and benchmark jobs write what
the tool reads, checkpoints are loaded in place, and a space the model lacks is skipped."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hyperrestart.analysis import worker
from test_analysis_core import HyperModel, hyper_loss, make_batches


def job(tmp_path, task, checkpoints, **extra):
    base = {"task": task, "spaces": ["hypernetwork", "main", "backbone"], "out": str(tmp_path / "out"),
            "cache": str(tmp_path / "out" / "cache"), "run_id": "toy", "checkpoints": checkpoints, "seed": 0,
            "batches": 2, "range": 1.0, "resolution": 3, "k": 2, "lanczos_steps": 6, "density_runs": 1,
            "trace_samples": 3, "ratio_vectors": 2, "repeats": 1}
    return dict(base, **extra)


def saved_checkpoint(tmp_path, model):
    trained = HyperModel()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.3)
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    state = {k: v.float().contiguous() for k, v in trained.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    return folder, trained


def test_landscape_job_per_checkpoint_and_space(tmp_path):
    torch.manual_seed(0)
    model = HyperModel().float()
    folder, trained = saved_checkpoint(tmp_path, model)
    batches = [{k: v.float() for k, v in b.items()} for b in make_batches()]
    with torch.no_grad():
        init_loss = float(sum(hyper_loss(model, b) for b in batches) / 2)
    checkpoints = [{"label": "init", "step": 0, "path": None}, {"label": "checkpoint-5", "step": 5,
                                                                "path": str(folder)}]
    worker.run(job(tmp_path, "landscape", checkpoints), model, hyper_loss, batches)
    out = tmp_path / "out"
    init = np.load(out / "landscape-init-hypernetwork.npz")
    assert init["surface"].shape == (3, 3) and float(init["loss_at_checkpoint"]) == pytest.approx(init_loss)
    loaded = np.load(out / "landscape-checkpoint-5-main.npz")
    with torch.no_grad():
        trained_loss = float(sum(hyper_loss(trained.float(), b) for b in batches) / 2)
    assert float(loaded["loss_at_checkpoint"]) == pytest.approx(trained_loss, rel=1e-6)
    assert (out / "landscape-checkpoint-5-backbone.csv").read_text(encoding="utf-8").startswith("kind,a,b,loss")
    assert json.loads((out / "progress-rank0.json").read_text(encoding="utf-8"))["done"] == 2 * 3 * 15


@pytest.mark.slow  # Lanczos, trace, density, R-term and timing repeats: seconds
def test_hessian_and_benchmark_jobs(tmp_path):
    torch.manual_seed(0)
    model = HyperModel().float()
    batches = [{k: v.float() for k, v in b.items()} for b in make_batches()]
    init = [{"label": "init", "step": 0, "path": None}]
    worker.run(job(tmp_path, "hessian", init), model, hyper_loss, batches)
    result = json.loads((tmp_path / "out" / "hessian-init.json").read_text(encoding="utf-8"))
    assert result["spaces"]["main"]["size"] == 16 and len(result["spaces"]["hypernetwork"]["top"]) == 2
    assert len(result["r_term"]["vectors"]) == 2 and result["r_term"]["ratio_mean"] > 0
    assert isinstance(result["inertia_agrees"], bool)
    worker.run(job(tmp_path, "benchmark", init), model, hyper_loss, batches)
    bench = json.loads((tmp_path / "out" / "benchmark-init.json").read_text(encoding="utf-8"))
    assert set(bench["spaces"]) == {"hypernetwork", "main", "backbone"}
    assert all(t["hvp_s"] > 0 and t["grid_points_per_s"] > 0 for t in bench["spaces"].values())


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    model = HyperModel().float()
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    save_file({"head.weight": torch.zeros(1, 2)}, str(folder / "model.safetensors"))
    with pytest.raises(RuntimeError, match="checkpoint does not fit the model: missing"):
        worker.load_weights(model, worker.checkpoint_state(folder))
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors or pytorch_model.bin"):
        worker.checkpoint_state(tmp_path)


class DropoutModel(HyperModel):
    """HyperModel with dropout on its hidden layer: the analysis must see it off, at the centre and on the grid."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x, y):
        weight, bias = self.gen()
        hidden = self.drop(torch.tanh(x @ weight.T + bias))
        return ((self.head(hidden).squeeze(-1) - y) ** 2).mean()


def test_the_grid_centre_is_the_checkpoint_loss_in_eval_mode_on_the_same_batches(tmp_path):
    torch.manual_seed(0)
    model = DropoutModel().float()
    batches = [{k: v.float() for k, v in b.items()} for b in make_batches()]
    model.eval()
    with torch.no_grad():
        eval_loss = float(sum(float(hyper_loss(model, b)) for b in batches) / 2)
        model.train()
        train_loss = float(sum(float(hyper_loss(model, b)) for b in batches) / 2)
    assert train_loss != eval_loss
    spec = job(tmp_path, "landscape", [{"label": "init", "step": 0, "path": None}], resolution=5, batch_points=4)
    worker.run(spec, model, hyper_loss, batches)
    for space in ("hypernetwork", "main", "backbone"):
        data = np.load(tmp_path / "out" / f"landscape-init-{space}.npz")
        assert float(data["loss_at_checkpoint"]) == eval_loss
        assert data["surface"][2, 2] == data["loss_at_checkpoint"]  # the grid's centre: same batches, same mode
        assert data["slice_d1"][2] == data["slice_d2"][2] == data["loss_at_checkpoint"]
        assert np.ptp(data["surface"]) > 0

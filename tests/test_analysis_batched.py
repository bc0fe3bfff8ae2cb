"""Landscape grid points evaluated several per forward pass (torch.func.vmap over stacked shifts) equal the one-by-one
evaluation, in every space (generated per model and per example), in float64 and float32, through the chunk cache;
where vmap cannot go the points go one by one, with the reason kept."""
import numpy as np
import pytest
import torch
from test_analysis_core import HyperModel, hyper_loss, make_batches
from torch import nn

from hyperrestart.analysis import directions, landscape
from hyperrestart.analysis.objective import Objective

FLOAT32_RTOL = 1e-6  # float32: a vmapped matmul may sum in another order than the unbatched one
FLOAT64_RTOL = 1e-12


class ParameterGenerator(nn.Module):
    """Per example, like hyperdecoders': a (2, 3) weight for every example, from the example itself."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 6)

    def forward(self, x):
        return self.lin(x).view(-1, 2, 3)


class PerExampleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.gen = ParameterGenerator()
        self.head = nn.Linear(2, 1)

    def forward(self, x, y):
        hidden = torch.tanh(torch.einsum("nij,nj->ni", self.gen(x), x))
        return ((self.head(hidden).squeeze(-1) - y) ** 2).mean()


def setup(model_class, dtype, loss_fn=hyper_loss):
    torch.manual_seed(11)
    model = model_class().to(dtype)
    batches = [{k: v.to(dtype) for k, v in b.items()} for b in make_batches(n_batches=3)]
    return Objective(model, loss_fn, batches)


def plane(objective, space, seed=5):
    d1, d2 = directions.landscape_directions(objective.space(space).reference(), seed)
    return d1, d2


@pytest.mark.parametrize("model_class", [HyperModel, PerExampleModel])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, FLOAT64_RTOL), (torch.float32, FLOAT32_RTOL)])
def test_batched_grid_points_equal_one_by_one_in_every_space(model_class, dtype, rtol):
    objective = setup(model_class, dtype)
    pts = landscape.points(2.0, 5)  # 35 points: the last group of 8 is partial
    assert objective.available == ["hypernetwork", "main", "backbone"]
    for space in objective.available:
        d1, d2 = plane(objective, space)
        one = objective.plane_losses(space, d1, d2, pts, batch_points=1)
        batched = objective.plane_losses(space, d1, d2, pts, batch_points=8)
        assert space not in objective.vmap_failure
        assert len(batched) == len(pts) and np.ptp(one) > 1e-3  # the points differ
        np.testing.assert_allclose(batched, one, rtol=rtol, atol=0)
        assert batched[2 * 5 + 2] == objective.loss()  # the grid centre (row 2, column 2): exactly the checkpoint's
        assert batched[25 + 2] == batched[30 + 2] == objective.loss()  # and the slices' centres
    # the space's tensors are untouched afterwards and hooks are off
    assert objective.loss() == setup(model_class, dtype).loss()


def test_a_model_vmap_cannot_batch_goes_one_by_one_and_says_why():
    def loss_with_item(model, batch):
        loss = model(**batch)
        if loss.item() > 1e30:  # data-dependent Python control flow: vmap cannot batch .item()
            raise AssertionError("unreachable")
        return loss

    objective = setup(HyperModel, torch.float64, loss_with_item)
    pts = landscape.points(1.0, 3)
    for space in ("hypernetwork", "main"):
        d1, d2 = plane(objective, space)
        batched = objective.plane_losses(space, d1, d2, pts, batch_points=4)
        assert "item" in objective.vmap_failure[space]
        assert batched == objective.plane_losses(space, d1, d2, pts, batch_points=1)


def test_batched_chunks_through_the_cache_equal_one_by_one_and_resume(tmp_path):
    objective = setup(PerExampleModel, torch.float64)
    d1, d2 = plane(objective, "main")
    pts = landscape.points(1.5, 7)

    def grid(batch_points, folder):
        cache = landscape.ChunkCache(tmp_path / folder, {"batch_points": batch_points}, len(pts), 16)
        return landscape.compute(None, pts, cache,
                                 many=lambda chunk: objective.plane_losses("main", d1, d2, chunk, batch_points))

    one, batched = grid(1, "one"), grid(8, "batched")
    np.testing.assert_allclose(batched, one, rtol=FLOAT64_RTOL, atol=0)
    np.testing.assert_array_equal(grid(8, "batched"), batched)  # every chunk cached: read back as written


class TiedModel(HyperModel):
    """A backbone weight held under two names (as T5 ties its shared embedding to embed_tokens)."""

    def __init__(self):
        super().__init__()
        self.tail = nn.Linear(2, 1)
        self.tail.weight = self.head.weight

    def forward(self, x, y):
        weight, bias = self.gen()
        hidden = torch.tanh(x @ weight.T + bias)
        return ((self.head(hidden).squeeze(-1) + self.tail(hidden).squeeze(-1) - y) ** 2).mean()


def test_a_space_with_tied_parameters_goes_one_by_one():
    objective = setup(TiedModel, torch.float64)
    pts = landscape.points(1.0, 3)
    d1, d2 = plane(objective, "backbone")
    batched = objective.plane_losses("backbone", d1, d2, pts, batch_points=4)
    assert objective.vmap_failure["backbone"] == "tied parameters (head.weight)"
    assert batched == objective.plane_losses("backbone", d1, d2, pts, batch_points=1)
    d1, d2 = plane(objective, "hypernetwork")
    objective.plane_losses("hypernetwork", d1, d2, pts, batch_points=4)
    assert "hypernetwork" not in objective.vmap_failure  # the untied spaces are still batched


def test_batched_losses_that_disagree_with_one_point_alone_send_the_space_one_by_one(monkeypatch):
    objective = setup(HyperModel, torch.float64)
    pts = landscape.points(1.0, 3)
    d1, d2 = plane(objective, "main")
    real = objective._batched_losses
    monkeypatch.setattr(objective, "_batched_losses", lambda *args: [v + 1.0 for v in real(*args)])
    values = objective.plane_losses("main", d1, d2, pts, batch_points=4)
    assert "differs from the same point evaluated alone" in objective.vmap_failure["main"]
    assert values == objective.plane_losses("main", d1, d2, pts, batch_points=1)


def test_the_trained_point_is_evaluated_unperturbed_even_when_batched_sums_differ_in_the_last_bits(monkeypatch):
    objective = setup(HyperModel, torch.float32)
    pts = landscape.points(1.0, 3)  # centre at 4 (grid), 9 + 1 and 12 + 1 (slices)
    d1, d2 = plane(objective, "main")
    real = objective._batched_losses
    monkeypatch.setattr(objective, "_batched_losses", lambda *args: [v * (1 + 1e-7) for v in real(*args)])
    values = objective.plane_losses("main", d1, d2, pts, batch_points=4)
    assert "main" not in objective.vmap_failure  # within float tolerance: still batched
    assert values[4] == values[10] == values[13] == objective.loss()
    assert values[0] != objective.plane_losses("main", d1, d2, pts, batch_points=1)[0]  # the others are batched

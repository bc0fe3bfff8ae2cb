"""The math of `hyperrestart analyse` on models small enough for dense matrices (float64, CPU, fast):
spectra and landscapes of a quadratic, H_phi = J^T H_theta J + R on a two-layer hypernetwork, filter normalisation,
the generated-weight hooks, and chunked landscapes that resume."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian as dense_hessian, jacobian

from hyperrestart.analysis import directions, hessian, landscape
from hyperrestart.analysis.objective import Objective, no_parameter_grads
from hyperrestart.analysis.spaces import GeneratedSpace, ParameterSpace


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()  # set per test, never at import: other files share the process
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --- a quadratic with a known Hessian --------------------------------------------------------------------------

def quadratic(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    eig = torch.linspace(-3.0, 5.0, n)
    a = q @ torch.diag(eig) @ q.T
    return (a + a.T) / 2, torch.randn(n, generator=g), torch.sort(eig).values


class Quadratic(nn.Module):
    """L(w) = 1/2 vec(w)^T A vec(w) + b^T vec(w), w a 3 x 4 matrix (3 filters)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b
        self.w = nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))

    def forward(self):
        x = self.w.reshape(-1)
        return 0.5 * x @ self.a @ x + self.b @ x


def quadratic_loss(model, batch):
    return model()


def test_quadratic_eigenvalues_trace_and_inertia():
    a, b, eig = quadratic()
    model = Quadratic(a, b)
    objective = Objective(model, quadratic_loss, [None])
    function = objective.function("backbone")
    samples = 200
    with no_parameter_grads(model):
        result = hessian.spectrum(function, k=3, lanczos_steps=12, density_runs=2, trace_samples=samples, seed=0)
    assert result["top"] == pytest.approx(eig.flip(0)[:3].tolist(), abs=1e-5)
    assert result["bottom"] == pytest.approx(eig[:3].tolist(), abs=1e-5)
    # Hutchinson with Rademacher probes: Var = 2 (||A||_F^2 - sum A_ii^2); allow 4 standard errors
    std = math.sqrt(2 * (float((a ** 2).sum()) - float((torch.diagonal(a) ** 2).sum())) / samples)
    assert abs(result["trace"] - float(torch.trace(a))) < 4 * std
    assert result["trace"] != pytest.approx(float(torch.trace(a)), abs=1e-9)  # an estimate, not the exact trace
    assert result["signs"] == {"positive_of_top": 3, "negative_of_bottom": 3, "k": 3}
    assert 0 < result["negative_mass"] < 1
    total = result["negative_mass"] + result["near_zero_mass"] + result["positive_mass"]
    assert total == pytest.approx(1.0, abs=1e-9)


def test_sign_masses_split_the_quadrature_weights():
    nodes = torch.tensor([[-2.0, -0.01, 0.005, 3.0], [-1.0, 0.5, 2.0, float("nan")]])
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.5, 0.0]])
    masses = hessian.sign_masses(nodes, weights, eps=0.02)
    assert masses["negative"] == pytest.approx((0.1 + 0.25) / 2)
    assert masses["positive"] == pytest.approx((0.4 + 0.25 + 0.5) / 2)
    assert masses["near_zero"] == pytest.approx((0.2 + 0.3) / 2)
    assert hessian.sign_counts([3.0, 0.001], [-0.001, -2.0], tol=0.01) == {
        "positive_of_top": 1, "negative_of_bottom": 1, "k": 2}


def test_quadratic_landscape_is_the_analytic_paraboloid(tmp_path):
    a, b, _ = quadratic()
    model = Quadratic(a, b)
    objective = Objective(model, quadratic_loss, [None])
    space = objective.space("backbone")
    d1, d2 = directions.landscape_directions(space.reference(), seed=7, dtype=torch.float64)
    pts = landscape.points(2.0, 9)
    cache = landscape.ChunkCache(tmp_path, {"case": "quadratic"}, len(pts), chunk_points=10)

    def evaluate(alpha, beta):
        return objective.shifted_loss("backbone", [alpha * x + beta * y for x, y in zip(d1, d2)])

    values = landscape.compute(evaluate, pts, cache)
    w = model.w.detach().reshape(-1)
    u, v = d1[0].reshape(-1), d2[0].reshape(-1)
    grad = a @ w + b
    expected = [float(0.5 * w @ a @ w + b @ w + al * grad @ u + be * grad @ v
                      + 0.5 * (al * al * u @ a @ u + 2 * al * be * u @ a @ v + be * be * v @ a @ v))
                for al, be in pts]
    np.testing.assert_allclose(values, expected, rtol=1e-10, atol=1e-10)
    surface, along_d1, along_d2 = landscape.split(values, 9)
    ax = landscape.axis(2.0, 9)
    assert surface[2, 5] == pytest.approx(expected[2 * 9 + 5])
    assert surface[4, 4] == pytest.approx(objective.loss())  # the centre is the trained point
    np.testing.assert_allclose(along_d1, [expected[81 + j] for j in range(9)])
    assert pts[81 + 3].tolist() == [ax[3], 0.0] and pts[90 + 3].tolist() == [0.0, ax[3]]
    assert torch.equal(model.w.detach().reshape(-1), w)  # weights restored


# --- a two-layer hypernetwork generating a linear layer --------------------------------------------------------

class AdapterHyperNet(nn.Module):
    """phi: generates theta, the weight (2 x 3) and bias (2) of the main network's linear layer, from a fixed
    context. linear=True: one Linear layer, so theta is linear in phi (R = 0)."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear
        self.first = nn.Linear(4, 5)
        self.weight = nn.Linear(4 if linear else 5, 6)
        self.bias = nn.Linear(4 if linear else 5, 2)
        self.register_buffer("context", torch.randn(4, generator=torch.Generator().manual_seed(3)))

    def forward(self):
        h = self.context if self.linear else torch.tanh(self.first(self.context))
        return self.weight(h).view(2, 3), self.bias(h)


class HyperModel(nn.Module):
    def __init__(self, linear=False):
        super().__init__()
        self.gen = AdapterHyperNet(linear)
        self.head = nn.Linear(2, 1)  # backbone
        if linear:
            del self.gen.first

    def forward(self, x, y):
        weight, bias = self.gen()
        hidden = torch.tanh(x @ weight.T + bias)
        return ((self.head(hidden).squeeze(-1) - y) ** 2).mean()


def hyper_loss(model, batch):
    return model(**batch)


def make_batches(n_batches=2, size=5, seed=4):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(size, 3, generator=g), "y": torch.randn(size, generator=g)} for _ in range(n_batches)]


def hyper_setup(linear=False):
    torch.manual_seed(11)
    model = HyperModel(linear)
    batches = make_batches()
    return model, batches, Objective(model, hyper_loss, batches)


def dense_pieces(model, batches):
    """Dense H_phi, J, H_theta and R = sum_i dL/dtheta_i d^2 theta_i / dphi^2, straight from the definitions."""
    from torch.func import functional_call
    names = [n for n, _ in model.gen.named_parameters()]
    shapes = [p.shape for _, p in model.gen.named_parameters()]
    phi0 = torch.cat([p.detach().reshape(-1) for _, p in model.gen.named_parameters()])

    def unpack(flat):
        return dict(zip(names, hessian.unflatten(flat, shapes)))

    def theta_of(phi):
        weight, bias = functional_call(model.gen, unpack(phi), ())
        return torch.cat([weight.reshape(-1), bias])

    def main_loss(theta):
        weight, bias = theta[:6].view(2, 3), theta[6:]
        losses = [((model.head(torch.tanh(b["x"] @ weight.T + bias)).squeeze(-1) - b["y"]) ** 2).mean()
                  for b in batches]
        return sum(losses) / len(losses)

    theta0 = theta_of(phi0).detach()
    h_phi = dense_hessian(lambda p: main_loss(theta_of(p)), phi0)
    jac = jacobian(theta_of, phi0)
    h_theta = dense_hessian(main_loss, theta0)
    g_theta = torch.autograd.functional.jacobian(main_loss, theta0).detach()
    r = dense_hessian(lambda p: g_theta @ theta_of(p), phi0)
    return phi0, shapes, h_phi, jac, h_theta, r


def test_dense_hypernetwork_hessian_is_gauss_newton_plus_r():
    model, batches, _ = hyper_setup()
    _, _, h_phi, jac, h_theta, r = dense_pieces(model, batches)
    gauss_newton = jac.T @ h_theta @ jac
    torch.testing.assert_close(h_phi, gauss_newton + r, atol=1e-5, rtol=0)
    assert r.abs().max() > 1e-4  # a nonlinear hypernetwork: R is not zero, eq. 4 alone would be wrong
    assert (h_phi - gauss_newton).abs().max() > 1e-4


def test_linear_hypernetwork_has_r_zero_and_eq4_holds_exactly():
    model, batches, objective = hyper_setup(linear=True)
    _, shapes, h_phi, jac, h_theta, r = dense_pieces(model, batches)
    assert r.abs().max() < 1e-12
    torch.testing.assert_close(h_phi, jac.T @ h_theta @ jac, atol=1e-12, rtol=0)
    vs = [torch.randn(s) for s in shapes]
    h_v, gn_v, r_v = objective.decomposition(vs)
    assert hessian.residual_ratio(h_v, r_v) < 1e-12


def test_jvp_vjp_path_agrees_with_the_dense_matrices():
    model, batches, objective = hyper_setup()
    phi0, shapes, h_phi, jac, h_theta, r = dense_pieces(model, batches)
    v = torch.randn(phi0.numel(), generator=torch.Generator().manual_seed(5))
    h_v, gn_v, r_v = objective.decomposition(hessian.unflatten(v, shapes))
    torch.testing.assert_close(hessian.flatten(h_v), h_phi @ v, atol=1e-10, rtol=0)
    torch.testing.assert_close(hessian.flatten(gn_v), jac.T @ h_theta @ jac @ v, atol=1e-10, rtol=0)
    torch.testing.assert_close(hessian.flatten(r_v), r @ v, atol=1e-10, rtol=0)
    ratio = hessian.residual_ratio(h_v, r_v)
    assert ratio == pytest.approx(float((r @ v).norm() / (h_phi @ v).norm()), rel=1e-8)


def test_spaces_hessians_match_dense_per_space():
    model, batches, objective = hyper_setup()
    phi0, shapes, h_phi, jac, h_theta, r = dense_pieces(model, batches)
    with no_parameter_grads(model):
        hyper = objective.function("hypernetwork")
        v = torch.randn(hyper.size, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(hyper.matvec(v), h_phi @ v, atol=1e-10, rtol=0)
        main = objective.function("main")  # every batch's theta: here the same theta, so H sums over the copies
        u = torch.randn(8, generator=torch.Generator().manual_seed(8))
        per_copy = main.matvec(torch.cat([u, torch.zeros(8)]))
        assert main.size == 16
        # the loss is the mean of the two batches' losses; H_theta of the shared theta is the sum of the blocks
        torch.testing.assert_close(per_copy[:8] + main.matvec(torch.cat([torch.zeros(8), u]))[8:], h_theta @ u,
                                   atol=1e-10, rtol=0)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


# --- filter normalisation -------------------------------------------------------------------------------------

def test_each_direction_filter_has_the_norm_of_its_weight_filter():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 3, 2, generator=g), torch.randn(5, generator=g), torch.zeros(3), torch.randn(2, 6)]
    weights[3][1] = 0.0  # a dead filter
    raw = directions.random_directions([w.shape for w in weights], torch.Generator().manual_seed(1), torch.float64)
    normalised = directions.filter_normalise(raw, weights)
    for i in range(4):
        assert normalised[0][i].norm() == pytest.approx(float(weights[0][i].norm()), rel=1e-12)
        cosine = float((normalised[0][i] * raw[0][i]).sum() / normalised[0][i].norm() / raw[0][i].norm())
        assert cosine == pytest.approx(1.0)  # rescaled, not turned
    assert normalised[1].norm() == pytest.approx(float(weights[1].norm()))  # a 1-D tensor is one filter
    assert torch.equal(normalised[2], torch.zeros(3))
    assert torch.equal(normalised[3][1], torch.zeros(6)) and normalised[3][0].norm() == pytest.approx(
        float(weights[3][0].norm()))
    with pytest.raises(ValueError, match="does not match weight shape"):
        directions.filter_normalise([torch.zeros(2, 2)], [torch.zeros(2, 3)])


def test_directions_are_reproducible_from_the_seed():
    reference = [torch.randn(3, 4), torch.randn(2)]
    first = directions.landscape_directions(reference, seed=3)
    again = directions.landscape_directions(reference, seed=3)
    other = directions.landscape_directions(reference, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(first[0] + first[1], again[0] + again[1]))
    assert not torch.equal(first[0][0], other[0][0])
    assert not torch.equal(first[0][0], first[1][0])


# --- the hooks of the main space ------------------------------------------------------------------------------

def test_zero_shift_of_the_generated_weights_is_exact_and_a_shift_moves_only_them():
    model, batches, objective = hyper_setup()
    before = objective.loss()
    space = objective.space("main")
    assert isinstance(space, GeneratedSpace) and space.shapes == [(2, 3), (2,)]
    assert objective.shifted_loss("main", [torch.zeros(2, 3), torch.zeros(2)]) == before  # exactly
    moved = objective.shifted_loss("main", [torch.full((2, 3), 0.1), torch.zeros(2)])
    assert moved != before
    # the same shift applied by hand to the generated weight gives the same loss
    with torch.no_grad():
        weight, bias = model.gen()
        by_hand = sum(float(((model.head(torch.tanh(b["x"] @ (weight + 0.1).T + bias)).squeeze(-1) - b["y"]) ** 2)
                            .mean()) for b in batches) / 2
    assert moved == pytest.approx(by_hand, rel=1e-12)
    assert objective.loss() == before  # hooks inactive outside the block
    snapshot = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), snapshot))


def test_parameter_shift_restores_bit_exactly():
    model, _, objective = hyper_setup()
    space = objective.space("hypernetwork")
    assert isinstance(space, ParameterSpace) and space.names[0] == "gen.first.weight"
    saved = [p.detach().clone() for p in space.params]
    objective.shifted_loss("hypernetwork", [torch.randn(p.shape) * 1e3 for p in space.params])
    assert all(torch.equal(p, s) for p, s in zip(space.params, saved))


# --- chunked landscapes resume ------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def test_landscape_resumes_from_cached_chunks_to_the_same_grid(tmp_path):
    def surface(a, b):
        return math.sin(a) * math.cos(2 * b) + 0.1 * a * b

    pts = landscape.points(3.0, 11)
    settings = {"seed": 1}
    whole = landscape.compute(surface, pts, landscape.ChunkCache(tmp_path / "whole", settings, len(pts), 16))

    calls = {"n": 0}

    def dies_after_40(a, b):
        calls["n"] += 1
        if calls["n"] > 40:
            raise Interrupted()
        return surface(a, b)

    cache = landscape.ChunkCache(tmp_path / "resumed", settings, len(pts), 16)
    with pytest.raises(Interrupted):
        landscape.compute(dies_after_40, pts, cache)
    assert sorted(p.name for p in cache.dir.glob("chunk-*.npy")) == ["chunk-000000.npy", "chunk-000001.npy"]
    assert not list(cache.dir.glob(".*tmp*"))  # the chunk being computed was never written in part

    calls["n"] = 0

    def counted(a, b):
        calls["n"] += 1
        return surface(a, b)

    resumed = landscape.compute(counted, pts, cache)
    assert calls["n"] == len(pts) - 32  # only the missing chunks are evaluated
    np.testing.assert_array_equal(resumed, whole)


def test_ranks_share_the_chunks_and_rank_zero_assembles(tmp_path):
    pts = landscape.points(1.0, 7)
    seen = {0: [], 1: []}

    def for_rank(rank):
        def evaluate(a, b):
            seen[rank].append((a, b))
            return a - 2 * b
        return evaluate

    cache = landscape.ChunkCache(tmp_path, {"seed": 2}, len(pts), 8)
    assert landscape.compute(for_rank(1), pts, cache, rank=1, world=2) is None
    values = landscape.compute(for_rank(0), pts, cache, rank=0, world=2)
    np.testing.assert_array_equal(values, [a - 2 * b for a, b in pts])
    assert len(seen[0]) + len(seen[1]) == len(pts) and seen[0] and seen[1]


def test_other_settings_never_reuse_a_cache(tmp_path):
    pts = landscape.points(1.0, 3)
    one = landscape.ChunkCache(tmp_path, {"seed": 1, "space": "main"}, len(pts))
    two = landscape.ChunkCache(tmp_path, {"seed": 2, "space": "main"}, len(pts))
    assert one.dir != two.dir
    landscape.compute(lambda a, b: 1.0, pts, one)
    np.testing.assert_array_equal(landscape.compute(lambda a, b: 2.0, pts, two), np.full(len(pts), 2.0))


def test_hvps_through_the_kept_gradient_graph_equal_fresh_ones_and_run_one_forward():
    model, _, objective = hyper_setup()
    with no_parameter_grads(model):
        for space in ("hypernetwork", "main", "backbone"):
            function = objective.function(space)
            calls = []
            counted = hessian.SpaceFunction(lambda b, xs, f=function.loss_of_batch: calls.append(b) or f(b, xs),
                                            function.reference, function.n_batches)
            g = torch.Generator().manual_seed(2)
            for _ in range(3):
                vs = [torch.randn(r.shape, generator=g) for r in function.reference]
                kept = counted.hvp(vs)
                fresh = hessian.hvp(function.loss, function.reference, vs)
                assert all(torch.equal(a, b) for a, b in zip(kept, fresh))
            assert calls == [0, 1]  # one forward pass over the 2 batches for 3 products
            counted.release()
            counted.hvp(vs)
            assert calls == [0, 1, 0, 1]

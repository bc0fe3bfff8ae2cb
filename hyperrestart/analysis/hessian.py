"""Hessians of the loss in one parameter space, matrix-free, and the paper's decomposition (Appendix A):

    H_phi = J_phi^T H_theta J_phi + R,   R = sum_i (dL/dtheta_i) d^2 theta_i / dphi^2

- hvp: exact Hessian-vector products by double backward (Pearlmutter), in any space.
- spectrum: the k largest and k most negative eigenvalues (Lanczos), the trace (Hutchinson) and the spectral density
  (stochastic Lanczos quadrature), from hessian-eigenthings. It was chosen over curvlinops-for-pytorch because it
  has all three estimators behind one matrix-free operator (LambdaOperator) that takes our own HVP (the main space is
  a set of hooked tensors, not model parameters) and needs nothing beyond torch, numpy, scipy and tqdm: curvlinops
  3.0.1 depends on backpack-for-pytorch, hence torchvision, whose newest wheel replaces an installed torch build
  (measured: pip swapped torch 2.13.0+cpu for 2.14.1 with CUDA).
- decomposition: H_phi v (exact), J^T H_theta J v through torch.func.jvp / vjp of theta(phi), and R v, their
  difference, batch by batch (L is the mean of the batches' losses, so each term is the mean of theirs).
"""
import math

import torch

ZERO_TOL = 1e-2  # an eigenvalue counts as zero when |lambda| <= ZERO_TOL * max |lambda| of its space


def flatten(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector, shapes):
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(vector[start:start + n].reshape(shape))
        start += n
    return out


def hvp(loss_of, xs, vs):
    """H v for the Hessian of loss_of(xs) (a scalar) at xs, by double backward (tensors the loss does not use, such
    as a manual adapter that generated weights replace, have zero rows)."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    loss = loss_of(xs)
    grads = torch.autograd.grad(loss, xs, create_graph=True, allow_unused=True, materialize_grads=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vs))
    if not dot.requires_grad:  # the gradient is constant in xs
        return [torch.zeros_like(x) for x in xs]
    return [h.detach() for h in torch.autograd.grad(dot, xs, allow_unused=True, materialize_grads=True)]


class SpaceFunction:
    """The mean loss over batches as a function of one space's tensors, with their reference values.

    `loss_of_batch(batch_index, xs)` is the loss of one batch; `shapes` the shapes of xs; `reference` the values."""

    def __init__(self, loss_of_batch, reference, n_batches):
        self.loss_of_batch = loss_of_batch
        self.reference = [r.detach() for r in reference]
        self.shapes = [tuple(r.shape) for r in self.reference]
        self.n_batches = n_batches
        self.size = sum(r.numel() for r in self.reference)
        self._gradient = None  # (variables, their gradient with its graph): built by the first hvp, then reused

    def loss(self, xs):
        return sum(self.loss_of_batch(b, xs) for b in range(self.n_batches)) / self.n_batches

    def hvp(self, vs):
        """H v at the reference. The forward pass and the gradient's graph are built once and kept, so each product
        is one backward pass through that graph; the same numbers as hvp(self.loss, self.reference, vs)."""
        if self._gradient is None:
            xs = [x.detach().requires_grad_(True) for x in self.reference]
            grads = torch.autograd.grad(self.loss(xs), xs, create_graph=True, allow_unused=True,
                                        materialize_grads=True)
            self._gradient = (xs, grads)
        xs, grads = self._gradient
        dot = sum((g * v).sum() for g, v in zip(grads, vs))
        if not dot.requires_grad:  # the gradient is constant in xs
            return [torch.zeros_like(x) for x in xs]
        return [h.detach() for h in torch.autograd.grad(dot, xs, retain_graph=True, allow_unused=True,
                                                        materialize_grads=True)]

    def release(self):
        """Free the kept graph (the next hvp builds it again)."""
        self._gradient = None

    def matvec(self, vector):
        """H v on flat vectors (for the Lanczos, trace and density estimators)."""
        vs = unflatten(vector.to(self.reference[0].dtype), self.shapes)
        return flatten(self.hvp(vs)).to(vector.dtype)


def spectrum(function, k=5, lanczos_steps=30, density_runs=2, trace_samples=10, seed=0):
    """Extremes, trace, density and inertia estimate of the Hessian of `function` (a SpaceFunction)."""
    try:
        return _spectrum(function, k, lanczos_steps, density_runs, trace_samples, seed)
    finally:
        function.release()


def _spectrum(function, k, lanczos_steps, density_runs, trace_samples, seed):
    from hessian_eigenthings import LambdaOperator, hutchinson, lanczos, spectral_density
    n = function.size
    dtype = function.reference[0].dtype
    op = LambdaOperator(function.matvec, n, device=function.reference[0].device, dtype=dtype)
    k = max(1, min(int(k), n))
    steps = max(k, min(int(lanczos_steps), n))
    # one Lanczos run gives both ends: every Ritz value, largest first
    ritz = lanczos(op, k=steps, max_iter=steps, which="LA", seed=seed, reorthogonalize=True)
    order = list(range(len(ritz.eigenvalues)))
    top = _Ends([ritz.eigenvalues[i] for i in order[:k]], [ritz.converged[i] for i in order[:k]])
    bottom = _Ends([ritz.eigenvalues[i] for i in order[::-1][:k]], [ritz.converged[i] for i in order[::-1][:k]])
    trace = hutchinson(op, num_samples=int(trace_samples), seed=seed + 2)
    density = spectral_density(op, num_runs=int(density_runs), lanczos_steps=steps, num_grid_points=400,
                               seed=seed + 3)
    top_values = [float(v) for v in top.eigenvalues]
    bottom_values = [float(v) for v in bottom.eigenvalues]
    masses = sign_masses(density.raw_eigenvalues, density.raw_weights,
                         ZERO_TOL * max(abs(v) for v in top_values + bottom_values))
    return {
        "size": n,
        "top": top_values,
        "bottom": bottom_values,
        "top_converged": [bool(c) for c in top.converged],
        "bottom_converged": [bool(c) for c in bottom.converged],
        "lanczos_steps": steps,
        "trace": trace.estimate,
        "trace_stderr": trace.stderr,
        "trace_samples": int(trace_samples),
        "negative_mass": masses["negative"],
        "near_zero_mass": masses["near_zero"],
        "positive_mass": masses["positive"],
        "signs": sign_counts(top_values, bottom_values),
        "density_grid": [float(v) for v in density.grid],
        "density": [float(v) for v in density.density],
    }


class _Ends:
    def __init__(self, eigenvalues, converged):
        self.eigenvalues, self.converged = eigenvalues, converged


def sign_masses(nodes, weights, eps):
    """The SLQ quadrature's share of eigenvalues below -eps, within [-eps, eps] and above eps (each run's weights
    sum to 1; averaged over runs). A node in the bulk near zero stands for many tiny eigenvalues of either sign,
    so it is counted as near zero rather than by its sign."""
    weights = torch.nan_to_num(weights)
    nodes = torch.nan_to_num(nodes)
    runs = weights.shape[0]
    negative = float((weights * (nodes < -eps)).sum() / runs)
    positive = float((weights * (nodes > eps)).sum() / runs)
    return {"negative": negative, "positive": positive,
            "near_zero": max(0.0, float(weights.sum() / runs) - negative - positive)}


def sign_counts(top, bottom, tol=ZERO_TOL):
    """Positive values among the k largest and negative ones among the k most negative (|lambda| <= tol * max
    |lambda| counts as zero)."""
    scale = max([abs(v) for v in top + bottom] or [0.0])
    eps = tol * scale
    return {"positive_of_top": sum(v > eps for v in top), "negative_of_bottom": sum(v < -eps for v in bottom),
            "k": len(top)}


def inertia_agreement(a, b):
    """Whether two spaces' spectra agree in inertia: both have (or both lack) positive and negative curvature
    among their extremes."""
    sa, sb = a["signs"], b["signs"]
    return (sa["positive_of_top"] > 0) == (sb["positive_of_top"] > 0) and \
        (sa["negative_of_bottom"] > 0) == (sb["negative_of_bottom"] > 0)


def decomposition(hyper_loss_of_batch, theta_of_batch, main_loss_of_batch, phi, thetas, n_batches, vs):
    """(H_phi v, J^T H_theta J v, R v) for tangent vs (a list like phi), batch by batch:

    hyper_loss_of_batch(b, phi) -> loss of batch b; theta_of_batch(b, phi) -> flat generated tensors of batch b;
    main_loss_of_batch(b, theta_flat) -> loss of batch b with its generated tensors replaced; thetas[b] the flat
    reference theta of batch b. J v uses torch.func.jvp, J^T u torch.func.vjp."""
    from torch.func import jvp, vjp
    phi = tuple(p.detach() for p in phi)
    vs = tuple(v.detach() for v in vs)
    h_phi_v = hvp(lambda xs: sum(hyper_loss_of_batch(b, xs) for b in range(n_batches)) / n_batches, phi, vs)
    gauss_newton = [torch.zeros_like(p) for p in phi]
    for b in range(n_batches):
        def theta_fn(*params, _b=b):
            return theta_of_batch(_b, list(params))
        _, j_v = jvp(theta_fn, phi, vs)
        h_j_v = hvp(lambda xs, _b=b: main_loss_of_batch(_b, xs[0]), [thetas[b]], [j_v])[0]
        _, pullback = vjp(theta_fn, *phi)
        for acc, term in zip(gauss_newton, pullback(h_j_v)):
            acc.add_(term.detach() / n_batches)
    residual = [h - g for h, g in zip(h_phi_v, gauss_newton)]
    return h_phi_v, gauss_newton, residual


def residual_ratio(h_phi_v, residual):
    """||R v|| / ||H_phi v||."""
    denominator = flatten(h_phi_v).norm()
    return float(flatten(residual).norm() / denominator) if denominator > 0 else float("nan")

"""The loss of one checkpoint on fixed batches, in each parameter space: what a landscape evaluates and a Hessian
differentiates. `loss_fn(model, batch)` is the trainer's own training loss of one batch."""
from contextlib import contextmanager

import torch

from . import hessian
from .spaces import GeneratedSpace, build_space, param_spaces

BATCH_POINTS = 8  # landscape grid points per forward pass (vmap); 1: one forward pass per point


def _combine(points, x, y):
    """The shifts a x + b y for every (a, b) of `points`, stacked along a new first dimension: each product is
    formed as the one-point path forms it (a Python float times the tensor), so the shifts are bit-identical."""
    return torch.stack([a * x + b * y for a, b in points])


@contextmanager
def no_parameter_grads(model):
    """Parameters out of autograd inside the block (only the space's variables are differentiated)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class Objective:
    def __init__(self, model, loss_fn, batches):
        if not batches:
            raise ValueError("no batches to evaluate the loss on")
        self.model, self.loss_fn, self.batches = model, loss_fn, list(batches)
        self._spaces = {}
        self.vmap_failure = {}  # space -> why its grid points went one by one
        self._vmap_checked = set()  # spaces whose batched losses were checked against one point alone
        # built now, while the parameters' requires_grad flags say which are trainable
        self.available = [name for name in param_spaces.SPACES if param_spaces.has_space(model, name)]
        for name in self.available:
            self.space(name)

    def loss(self):
        """Mean loss over the batches at the current weights."""
        with torch.no_grad():
            return float(sum(float(self.loss_fn(self.model, b)) for b in self.batches) / len(self.batches))

    def space(self, name):
        """The space `name`, built once (a generated space is probed on the first batch)."""
        if name not in self._spaces and name not in getattr(self, "available", [name]):
            raise ValueError(f"the model has no {name} space; it has: {', '.join(self.available) or 'none'}")
        if name not in self._spaces:
            space = build_space(self.model, name)
            if isinstance(space, GeneratedSpace):
                space.probe(lambda: self.loss_fn(self.model, self.batches[0]))
            self._spaces[name] = space
        return self._spaces[name]

    def close(self):
        for space in self._spaces.values():
            if isinstance(space, GeneratedSpace):
                space.close()
        self._spaces = {}

    def shifted_loss(self, name, deltas):
        with self.space(name).shifted(deltas):
            return self.loss()

    def plane_losses(self, name, d1, d2, points, batch_points=BATCH_POINTS):
        """The losses at w + a d1 + b d2 for the rows (a, b) of `points`: `batch_points` points per forward pass
        (torch.func.vmap over the stacked shifts), one by one when batch_points is 1 or where vmap cannot go (the
        first failure is kept in self.vmap_failure and the rest of the space goes one by one)."""
        points = [(float(a), float(b)) for a, b in points]
        space = self.space(name)
        if getattr(space, "tied", None):
            self.vmap_failure.setdefault(name, f"tied parameters ({', '.join(space.tied[:3])})")
        if batch_points > 1 and name not in self.vmap_failure:
            try:
                values = [v for start in range(0, len(points), batch_points)
                          for v in self._batched_losses(name, d1, d2, points[start:start + batch_points])]
                if self._agrees(name, d1, d2, points[0], values[0]):
                    centre = [i for i, point in enumerate(points) if point == (0.0, 0.0)]
                    for i in centre:  # the trained point itself: unperturbed, so exactly the checkpoint's loss
                        values[i] = self.loss()
                    return values
            except Exception as exc:  # noqa: BLE001 (a model vmap cannot batch: any op without a batching rule)
                self.vmap_failure[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return [self.shifted_loss(name, [a * x + b * y for x, y in zip(d1, d2)]) for a, b in points]

    def _agrees(self, name, d1, d2, point, batched, rtol=1e-3):
        """Once per space: the first batched loss against the same point evaluated alone (a model whose state
        outside its parameters vmap cannot see would differ); a disagreement sends the space one by one."""
        if name in self._vmap_checked:
            return True
        a, b = point
        alone = self.shifted_loss(name, [a * x + b * y for x, y in zip(d1, d2)])
        if abs(batched - alone) > rtol * abs(alone) + 1e-6:
            self.vmap_failure[name] = f"a batched loss differs from the same point evaluated alone ({batched!r} vs {alone!r})"
            return False
        self._vmap_checked.add(name)
        return True

    def _batched_losses(self, name, d1, d2, points):
        """One vmapped forward per batch for all `points`; the mean over batches summed as loss() sums it."""
        from torch.func import vmap
        space = self.space(name)
        shifts = [_combine(points, x, y) for x, y in zip(d1, d2)]
        with torch.no_grad():
            per_batch = [vmap(lambda *deltas, _b=batch: self._loss_with(space, _b, deltas))(*shifts).tolist()
                         for batch in self.batches]
        return [sum(float(v) for v in column) / len(self.batches) for column in zip(*per_batch)]

    def _loss_with(self, space, batch, deltas):
        if isinstance(space, GeneratedSpace):
            with space.shifted(deltas):
                return self.loss_fn(self.model, batch)
        return space.loss_of(self.loss_fn, batch, [p.detach() + d.to(p.dtype) for p, d in zip(space.params, deltas)])

    # --- Hessians ----------------------------------------------------------------------------------------------
    def generated_per_batch(self):
        """Per batch, the generated tensors of its forward pass (full shapes, batch dimension included)."""
        space = self.space("main")
        with torch.no_grad():
            return [[t.detach() for t in space.capture(lambda b=b: self.loss_fn(self.model, b), len(space.shapes))]
                    for b in self.batches]

    def function(self, name):
        """hessian.SpaceFunction of space `name`: for main, the variables are every batch's generated tensors."""
        space = self.space(name)
        if not isinstance(space, GeneratedSpace):
            return hessian.SpaceFunction(lambda b, xs: space.loss_of(self.loss_fn, self.batches[b], xs),
                                         space.reference(), len(self.batches))
        per_batch = self.generated_per_batch()
        count = len(space.shapes)

        def loss_of_batch(b, xs):
            with space.replaced(xs[b * count:(b + 1) * count]):
                return self.loss_fn(self.model, self.batches[b])

        return hessian.SpaceFunction(loss_of_batch, [t for ts in per_batch for t in ts], len(self.batches))

    def decomposition(self, vs):
        """(H_phi v, J^T H_theta J v, R v) in the hypernetwork space for tangent vs (see hessian.decomposition)."""
        hyper, main = self.space("hypernetwork"), self.space("main")
        count = len(main.shapes)
        per_batch = self.generated_per_batch()
        shapes = [[tuple(t.shape) for t in ts] for ts in per_batch]

        def hyper_loss(b, phi):
            return hyper.loss_of(self.loss_fn, self.batches[b], phi)

        def theta(b, phi):
            return hessian.flatten(main.capture(lambda: hyper_loss(b, phi), count))

        def main_loss(b, theta_flat):
            with main.replaced(hessian.unflatten(theta_flat, shapes[b])):
                return self.loss_fn(self.model, self.batches[b])

        with no_parameter_grads(self.model):
            return hessian.decomposition(hyper_loss, theta, main_loss, hyper.reference(),
                                         [hessian.flatten(ts) for ts in per_batch], len(self.batches), vs)

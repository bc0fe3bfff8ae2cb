"""The loss of one checkpoint on fixed batches, in each parameter space: what a landscape evaluates and a Hessian
differentiates. `loss_fn(model, batch)` is the trainer's own training loss of one batch."""
from contextlib import contextmanager

import torch

from . import hessian
from .spaces import GeneratedSpace, build_space, param_spaces


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

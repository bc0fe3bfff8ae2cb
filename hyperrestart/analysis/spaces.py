"""The three parameter spaces as things to perturb and differentiate (definitions: overlay/common/param_spaces.py).

A space is a list of tensors x_1..x_n with reference values (the checkpoint):
- ParameterSpace (hypernetwork, backbone): model parameters; shifted in place and restored bit-exactly, and as a
  function loss(xs) through torch.func.functional_call.
- GeneratedSpace (main): the tensors the weight generators output, theta = H(C; phi), reached through forward hooks on
  those modules. For landscapes a shift delta is ADDED to every output (shared by the examples of a batch when the
  generator works per example); for Hessians the outputs of one batch are REPLACED by the variables (per example, so
  that H_phi = J^T H_theta J + R holds exactly).
"""
import dataclasses
from contextlib import contextmanager

import torch

from ..core.overlay_import import load_overlay_module
from ..core.paths import OVERLAY_DIR

param_spaces = load_overlay_module("hyperrestart_param_spaces", OVERLAY_DIR / "common" / "param_spaces.py")


def map_tensors(obj, fn):
    """`obj` (tensor, tuple, list, namedtuple, dict or dataclass, nested) with fn applied to every tensor, in order."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((k, map_tensors(v, fn)) for k, v in obj.items())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


class ParameterSpace:
    """Model parameters (the hypernetwork's or the backbone's)."""

    def __init__(self, model, named_params):
        self.model = model
        self.names = [name for name, _ in named_params]
        self.params = [param for _, param in named_params]
        uses = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            uses.setdefault(id(param), []).append(name)
        # parameters the model holds under several names (T5's shared embedding): a batched functional_call leaves
        # the other names' copies batched (measured on hyperdecoders' adapter T5), so these spaces are not vmapped
        self.tied = [name for name, param in named_params if len(uses.get(id(param), ())) > 1]

    def reference(self):
        return [p.detach().clone() for p in self.params]

    @contextmanager
    def shifted(self, deltas):
        """The parameters moved by `deltas` inside the block, restored bit-exactly after it."""
        saved = self.reference()
        try:
            with torch.no_grad():
                for p, d in zip(self.params, deltas):
                    p.add_(d.to(p.dtype))
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def loss_of(self, loss_fn, batch, xs):
        """loss_fn(model, batch) computed with the tensors `xs` in place of the parameters (differentiable in xs)."""
        from torch.func import functional_call
        wrapper = _LossModule(self.model, loss_fn)
        overrides = {"model." + name: x for name, x in zip(self.names, xs)}
        return functional_call(wrapper, overrides, (batch,), tie_weights=True, strict=False)


class _LossModule(torch.nn.Module):
    """loss_fn(model, batch) as a module holding `model`, so functional_call swaps its parameters for the call."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


class _StopForward(Exception):
    """Raised by a hook once every generated tensor of a forward pass has been captured."""


class GeneratedSpace:
    """The generated weights theta: the outputs of param_spaces.weight_generator_modules(model)."""

    def __init__(self, model):
        self.model = model
        self.generators = param_spaces.weight_generator_modules(model)
        if not self.generators:
            raise ValueError("the model has no weight generator (no `main` space)")
        self.mode, self.values, self.calls, self.captured = "off", None, 0, []
        self.shapes = None  # per generated tensor, in call order: its shape without a batch dimension
        self.batched = None
        self.stop_after = None
        self._handles = [model.register_forward_pre_hook(self._reset)]
        for _, module, batched in self.generators:
            self._handles.append(module.register_forward_hook(self._make_hook(batched)))

    def close(self):
        for handle in self._handles:
            handle.remove()

    def _reset(self, module, args):
        if self.stop_after is None:  # not inside a capture of theta(phi), where forward may be re-entered
            self.calls = 0

    def _make_hook(self, batched):
        def hook(module, args, output):
            return map_tensors(output, lambda t: self._visit(t, batched))
        return hook

    def _visit(self, tensor, batched):
        index = self.calls
        self.calls += 1
        if self.mode == "probe":
            self.captured.append((tuple(tensor.shape[1:] if batched else tensor.shape), batched, tensor.detach()))
        elif self.mode == "add":
            tensor = tensor + self.values[index].to(tensor.dtype)
        elif self.mode == "replace":
            tensor = self.values[index]
        elif self.mode == "capture":
            self.captured.append(tensor)
            if self.stop_after is not None and self.calls == self.stop_after:
                raise _StopForward()
        return tensor

    @contextmanager
    def _mode(self, mode, values=None):
        old = (self.mode, self.values)
        self.mode, self.values, self.calls, self.captured = mode, values, 0, []
        try:
            yield
        finally:
            self.mode, self.values = old

    def probe(self, run_forward):
        """Run one forward (`run_forward()`) and record the generated tensors: their shapes (without the batch
        dimension of per-example generators) and values. Returns [(shape, batched, value)]."""
        with self._mode("probe"), torch.no_grad():
            run_forward()
            captured = list(self.captured)
        self.shapes = [shape for shape, _, _ in captured]
        self.batched = [batched for _, batched, _ in captured]
        self._values = [value for _, _, value in captured]
        return captured

    def reference(self):
        """Per generated tensor, what its filters are normalised against: the probed value; for a per-example
        generator the root mean square over the batch, elementwise, whose filter norms are the root mean square
        of the examples' filter norms."""
        if self.shapes is None:
            raise RuntimeError("probe() the generated space first")
        return [value.pow(2).mean(0).sqrt() if batched else value.clone()
                for batched, value in zip(self.batched, self._values)]

    @contextmanager
    def shifted(self, deltas):
        """Every generated tensor plus its delta (broadcast over the batch) inside the block."""
        with self._mode("add", list(deltas)):
            yield

    @contextmanager
    def replaced(self, values):
        """The generated tensors of ONE forward pass replaced by `values` (full shapes, batch included)."""
        with self._mode("replace", list(values)):
            yield

    def capture(self, run_forward, count):
        """The first `count` generated tensors of a forward pass (differentiable), stopping it there."""
        with self._mode("capture"):
            self.stop_after = count
            try:
                run_forward()
            except _StopForward:
                pass
            finally:
                self.stop_after = None
            return list(self.captured)


def build_space(model, name):
    """The space `name` (hypernetwork, main or backbone) of `model`; ValueError when the model lacks it."""
    if not param_spaces.has_space(model, name):
        raise ValueError(f"the model has no {name} space ({param_spaces.describe(model).splitlines()})")
    if name == "main":
        return GeneratedSpace(model)
    return ParameterSpace(model, param_spaces.parameter_groups(model, trainable_only=True)[name])

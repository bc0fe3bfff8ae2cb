"""Per optimizer step and per parameter space (hypernetwork / backbone): gradient norm, update norm, applied lr and
the training loss, written to ``diagnostics.csv`` and TensorBoard; restarts are marked with their reason.

Dropped into both upstream trees next to restart_scheduler.py and used by the P3 runner; Python 3.7 syntax, torch
and the standard library only. A trainer calls, per optimizer step:

    diag.on_gradients()                      # gradients final, before clipping: norms, g . dtheta, parameter snapshot
    optimizer.step()
    diag.on_update(step, loss, scheduler)    # before scheduler.step(): update norms, the lr this step applied
    scheduler.observe(loss, diag.grad_dot_update(scope)); scheduler.step()

Numbers stay on the device and are written every ``flush_every`` steps (one transfer), so a GPU step is not
synchronised for them; ``grad_dot_update`` (needed by an adaptive restart) is the one per-step transfer, and only
when asked for. Columns: step, loss, restart, then per space ``<space>_grad_norm`` (before clipping),
``<space>_update_norm`` (||theta_new - theta_old||), ``<space>_lr`` (the lr the step applied),
``<space>_grad_dot_update`` (g . dtheta of this step's gradient with the previous step's update; empty when not
computed or after a resume that did not restore the last update).
"""
import csv
import io
import logging
import os

import torch

logger = logging.getLogger(__name__)

CSV_NAME = "diagnostics.csv"
TENSORBOARD_DIR = "tensorboard"
METRICS = ("grad_norm", "update_norm", "lr", "grad_dot_update")


def _norms(tensors):
    """Per-tensor 2-norms as one float32 1-D tensor (one fused call where torch has _foreach_norm)."""
    if hasattr(torch, "_foreach_norm"):
        try:
            return torch.stack(torch._foreach_norm(tensors)).float()
        except RuntimeError:  # mixed dtypes or devices
            pass
    return torch.stack([t.detach().float().norm().cpu() for t in tensors])


def _total(norms):
    """The 2-norm of tensors whose norms are `norms`."""
    return torch.linalg.vector_norm(norms) if norms.numel() else torch.zeros((), device=norms.device)


def csv_columns(spaces):
    return ["step", "loss", "restart"] + ["{}_{}".format(space, m) for space in spaces for m in METRICS]


def keep_rows_up_to(path, step):
    """Drop the rows of steps after `step` from an existing diagnostics CSV (a resumed run rewrites them)."""
    with io.open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    tmp = path + ".tmp"
    with io.open(tmp, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


class StepDiagnostics(object):
    """spaces: {space: [parameters]} (trainable ones; a space without parameters is left out)."""

    def __init__(self, spaces, optimizer, out_dir, start_step=0, flush_every=50, tensorboard=True, write=True,
                 need_dot=False):
        self.spaces = [(name, list(params)) for name, params in spaces.items() if params]
        if not self.spaces:
            raise ValueError("step diagnostics: the model has no trainable parameters")
        self.optimizer, self.flush_every, self.write, self.need_dot = optimizer, flush_every, write, need_dot
        group_of = {}
        for index, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                group_of[id(p)] = index
        self.group_index = [group_of.get(id(params[0])) for _, params in self.spaces]
        self.params = [p for _, params in self.spaces for p in params]  # every space's, in order: one fused op each
        bounds, start = [], 0
        for _, params in self.spaces:
            bounds.append((start, start + len(params)))
            start += len(params)
        self.bounds = bounds
        self.previous = [p.detach().clone() for p in self.params]  # theta before a step, then -(its update)
        self.has_update = False  # previous holds -(last update) after on_update
        self.pending = []  # (step, loss, restart, lrs, [0-d tensors]) waiting to be written
        self.path = os.path.join(out_dir, CSV_NAME)
        self.columns = csv_columns([name for name, _ in self.spaces])
        self.writer = None
        if write:
            self._open_csv(start_step)
            if tensorboard:
                self.writer = self._tensorboard(os.path.join(out_dir, TENSORBOARD_DIR))
        self._grad_norms, self._dots = None, None

    def _open_csv(self, start_step):
        if os.path.exists(self.path):
            keep_rows_up_to(self.path, start_step)
        else:
            with io.open(self.path, "w", encoding="utf-8", newline="") as f:
                csv.writer(f).writerow(self.columns)

    @staticmethod
    def _tensorboard(log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as exc:  # hyperformer's protobuf 3.20 pin cannot import tensorboard
            logger.warning("step diagnostics: TensorBoard unavailable here (%s); writing %s only", exc, CSV_NAME)
            return None
        return SummaryWriter(log_dir=log_dir, max_queue=4096)  # a flush of 50 steps queues ~400 events

    def on_gradients(self):
        """The gradients of the step are final (before clipping): their norms, g . dtheta, a parameter snapshot."""
        grads = [p.grad for p in self.params]
        if all(g is not None for g in grads):  # the usual case: one fused norm, no scatter
            norms = _norms(grads).to(self.previous[0].device)
        else:
            present = [(i, g) for i, g in enumerate(grads) if g is not None]
            norms = torch.zeros(len(self.params), dtype=torch.float32, device=self.previous[0].device)
            if present:
                norms[[i for i, _ in present]] = _norms([g for _, g in present]).to(norms)
        self._grad_norms = [_total(norms[a:b]) for a, b in self.bounds]
        self._dots = [None] * len(self.spaces)
        if self.need_dot and self.has_update:  # previous = -(last update)
            for s, (a, b) in enumerate(self.bounds):
                dot = sum((p.grad.float() * d.float()).sum() for p, d in zip(self.params[a:b], self.previous[a:b])
                          if p.grad is not None)
                self._dots[s] = -dot if torch.is_tensor(dot) else torch.zeros(())
        with torch.no_grad():
            if hasattr(torch, "_foreach_copy_"):
                torch._foreach_copy_(self.previous, self.params)
            else:
                for d, p in zip(self.previous, self.params):
                    d.copy_(p)

    def grad_dot_update(self, scope="all"):
        """g . dtheta of this step summed over the spaces in scope (a float), None before the first update."""
        dots = [d for (name, _), d in zip(self.spaces, self._dots or []) if d is not None and scope in ("all", name)]
        return float(sum(d.item() for d in dots)) if dots else None

    def on_update(self, step, loss, scheduler=None):
        """After optimizer.step() (before scheduler.step()): record optimizer step `step` (1-based)."""
        if self._grad_norms is None:
            raise RuntimeError("step diagnostics: on_update without on_gradients")
        with torch.no_grad():
            if hasattr(torch, "_foreach_sub_"):
                torch._foreach_sub_(self.previous, self.params)
            else:
                for d, p in zip(self.previous, self.params):
                    d.sub_(p)
            norms = _norms(self.previous)
        values = [_total(norms[a:b]) for a, b in self.bounds]
        groups = self.optimizer.param_groups
        lrs = [groups[index]["lr"] if index is not None else float("nan") for index in self.group_index]
        self.has_update = True
        restart = getattr(scheduler, "restart_reason", None) or ""
        loss = loss.detach().float().reshape(()) if torch.is_tensor(loss) else torch.tensor(float(loss))
        self.pending.append((step, restart, lrs, loss, self._grad_norms, values, self._dots))
        self._grad_norms = None
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self):
        """Write the pending steps (one device-to-host transfer)."""
        if not self.pending or not self.write:
            self.pending = []
            return
        flat = []
        for _, _, _, loss, grads, updates, dots in self.pending:
            flat.append(loss.to("cpu"))
            flat.extend(t.to("cpu") for t in grads + updates)
        numbers = torch.stack(flat).tolist()
        width = 1 + 2 * len(self.spaces)
        rows = []
        for i, (step, restart, lrs, _, _, _, dots) in enumerate(self.pending):
            chunk = numbers[i * width:(i + 1) * width]
            row = [step, repr(chunk[0]), restart]
            for s in range(len(self.spaces)):
                dot = "" if dots[s] is None else repr(float(dots[s]))
                row += [repr(chunk[1 + s]), repr(chunk[1 + len(self.spaces) + s]), repr(float(lrs[s])), dot]
            rows.append(row)
            self._tensorboard_row(step, restart, chunk, lrs)
        with io.open(self.path, "a", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
        self.pending = []  # TensorBoard's writer thread writes its queue itself (flushed at close)

    def _tensorboard_row(self, step, restart, chunk, lrs):
        if self.writer is None:
            return
        self.writer.add_scalar("diagnostics/loss", chunk[0], step)
        for s, (name, _) in enumerate(self.spaces):
            self.writer.add_scalar("diagnostics/{}/grad_norm".format(name), chunk[1 + s], step)
            self.writer.add_scalar("diagnostics/{}/update_norm".format(name), chunk[1 + len(self.spaces) + s], step)
            self.writer.add_scalar("diagnostics/{}/lr".format(name), lrs[s], step)
        if restart:
            self.writer.add_text("diagnostics/restart", "step {}: {}".format(step, restart), step)

    def state_dict(self):
        """The last update (-dtheta per parameter), for an adaptive gradient criterion that resumes exactly."""
        return {"has_update": self.has_update, "previous": [t.clone() for t in self.previous]}

    def load_state_dict(self, state):
        self.has_update = state["has_update"]
        with torch.no_grad():
            for mine, saved in zip(self.previous, state["previous"]):
                mine.copy_(saved)

    def close(self):
        self.flush()
        if self.writer is not None:
            self.writer.close()

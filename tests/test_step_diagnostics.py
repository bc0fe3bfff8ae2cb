"""overlay/common/step_diagnostics.py on a small two-space model trained with plain SGD, where every number has a
closed form: update = -lr * grad, so ||update|| = lr ||grad|| and g_t . dtheta_(t-1) = -lr g_t . g_(t-1)."""
import csv
import math

import pytest
import torch

from hyperrestart.core.overlay_import import load_overlay_module
from hyperrestart.core.paths import OVERLAY_DIR
from hyperrestart.upstream import scheduler as rs

diagnostics = load_overlay_module("hyperrestart._step_diagnostics", OVERLAY_DIR / "common" / "step_diagnostics.py")

LR = {"hypernetwork": 0.1, "backbone": 0.05}


def setup(tmp_path, need_dot=True, flush_every=3, scheduler=True, tensorboard=False):
    torch.manual_seed(0)
    hyper, backbone = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    groups = [{"params": list(hyper.parameters()), "lr": LR["hypernetwork"], "param_space": "hypernetwork"},
              {"params": list(backbone.parameters()) + [frozen], "lr": LR["backbone"], "param_space": "backbone"}]
    optimizer = torch.optim.SGD(groups, lr=0.1)
    sched = rs.GroupScheduler(optimizer, rs.SGDR(1, 2, 0.0), scope="hypernetwork") if scheduler else None
    spaces = {"hypernetwork": list(hyper.parameters()), "backbone": list(backbone.parameters())}
    diag = diagnostics.StepDiagnostics(spaces, optimizer, str(tmp_path), flush_every=flush_every, need_dot=need_dot,
                                       tensorboard=tensorboard)
    return hyper, backbone, optimizer, sched, diag


def train(hyper, backbone, optimizer, sched, diag, steps, first=1):
    expected = []
    previous_grads = None
    for step in range(first, first + steps):
        x = torch.linspace(-1, 1, 8).reshape(2, 4) * step
        loss = backbone(torch.tanh(hyper(x))).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        grads = {"hypernetwork": [p.grad.clone() for p in hyper.parameters()],
                 "backbone": [p.grad.clone() for p in backbone.parameters()]}
        lrs = {s: optimizer.param_groups[i]["lr"] for i, s in enumerate(("hypernetwork", "backbone"))}
        restart = sched.restart_reason if sched else None
        diag.on_gradients()
        dot = diag.grad_dot_update("hypernetwork")
        optimizer.step()
        diag.on_update(step, loss, sched)
        if sched:
            sched.observe(loss.item(), dot)
            sched.step()
        row = {"step": step, "loss": loss.item(), "restart": restart or ""}
        for space, gs in grads.items():
            norm = math.sqrt(sum(float(g.pow(2).sum()) for g in gs))
            row[space] = (norm, lrs[space] * norm, lrs[space])
            if previous_grads is not None:
                row[space + "_dot"] = -lrs_prev[space] * sum(float((g * h).sum()) for g, h in
                                                              zip(gs, previous_grads[space]))
        expected.append(row)
        previous_grads, lrs_prev = grads, lrs
    return expected


def read(tmp_path):
    with open(tmp_path / "diagnostics.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_every_column_has_its_closed_form_value(tmp_path):
    *model, diag = setup(tmp_path)
    expected = train(*model, diag, 8)
    diag.close()
    rows = read(tmp_path)
    assert list(rows[0]) == ["step", "loss", "restart"] + [f"{s}_{m}" for s in ("hypernetwork", "backbone")
                                                           for m in ("grad_norm", "update_norm", "lr",
                                                                     "grad_dot_update")]
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    for row, exp in zip(rows, expected):
        assert float(row["loss"]) == pytest.approx(exp["loss"], rel=1e-6)
        assert row["restart"] == exp["restart"]
        for space in ("hypernetwork", "backbone"):
            grad, update, lr = exp[space]
            assert float(row[f"{space}_grad_norm"]) == pytest.approx(grad, rel=1e-5)
            assert float(row[f"{space}_update_norm"]) == pytest.approx(update, rel=1e-4)
            assert float(row[f"{space}_lr"]) == lr
            if exp["step"] == 1:
                assert row[f"{space}_grad_dot_update"] == ""  # no previous update yet
            else:
                assert float(row[f"{space}_grad_dot_update"]) == pytest.approx(exp[space + "_dot"], rel=1e-4)
    # the restarted space's lr follows SGDR (T_0 = 1, T_mult = 2, eta_min 0), the other stays constant
    assert [float(r["hypernetwork_lr"]) for r in rows][:5] == pytest.approx([0.1, 0.1, 0.05, 0.1, 0.085355339], rel=1e-6)
    assert {float(r["backbone_lr"]) for r in rows} == {0.05}
    assert [int(r["step"]) for r in rows if r["restart"]] == [2, 4, 8]


def test_tensorboard_events_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    *model, diag = setup(tmp_path, tensorboard=True)
    train(*model, diag, 5)
    diag.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("diagnostics/loss", "diagnostics/hypernetwork/grad_norm", "diagnostics/backbone/update_norm",
                "diagnostics/hypernetwork/lr"):
        assert tag in tags
    assert [e.step for e in events.Scalars("diagnostics/loss")] == [1, 2, 3, 4, 5]


def test_numbers_are_written_every_flush_and_at_close(tmp_path):
    *model, diag = setup(tmp_path, flush_every=4, need_dot=False)
    train(*model, diag, 6)
    assert [r["step"] for r in read(tmp_path)] == ["1", "2", "3", "4"]
    diag.close()
    rows = read(tmp_path)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert all(r["hypernetwork_grad_dot_update"] == "" for r in rows)  # not asked for: not computed


def test_a_resumed_run_rewrites_the_steps_after_its_checkpoint_and_restores_the_last_update(tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    *model, diag = setup(straight)
    train(*model, diag, 10)
    diag.close()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    hyper, backbone, optimizer, sched, diag = setup(resumed)
    train(hyper, backbone, optimizer, sched, diag, 6)
    saved = {"model": [p.clone() for p in list(hyper.parameters()) + list(backbone.parameters())],
             "opt": optimizer.state_dict(), "sched": sched.state_dict(), "diag": diag.state_dict()}
    train(hyper, backbone, optimizer, sched, diag, 2, first=7)  # steps the "killed" run wrote past its checkpoint
    diag.close()
    assert [r["step"] for r in read(resumed)][-1] == "8"

    scratch = tmp_path / "scratch"  # setup's own diagnostics go elsewhere: only the model and optimizer are used
    scratch.mkdir()
    hyper, backbone, optimizer, sched, _ = setup(scratch)
    with torch.no_grad():
        for p, s in zip(list(hyper.parameters()) + list(backbone.parameters()), saved["model"]):
            p.copy_(s)
    optimizer.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    spaces = {"hypernetwork": list(hyper.parameters()), "backbone": list(backbone.parameters())}
    diag = diagnostics.StepDiagnostics(spaces, optimizer, str(resumed), start_step=6, flush_every=3, need_dot=True,
                                           tensorboard=False)
    diag.load_state_dict(saved["diag"])
    train(hyper, backbone, optimizer, sched, diag, 4, first=7)
    diag.close()
    assert read(resumed) == read(straight)


def test_a_model_without_trainable_parameters_is_refused(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        diagnostics.StepDiagnostics({"hypernetwork": [], "backbone": []}, optimizer, str(tmp_path))


def test_a_parameter_without_a_gradient_counts_as_zero(tmp_path):
    """A trainable tensor the step did not reach (grad None) adds nothing to its space's norms; the others keep
    their closed forms (the scatter path; every other test takes the all-gradients path)."""
    torch.manual_seed(0)
    used, unused = torch.nn.Linear(3, 1), torch.nn.Parameter(torch.ones(5))
    optimizer = torch.optim.SGD([{"params": list(used.parameters()) + [unused], "lr": 0.1}], lr=0.1)
    diag = diagnostics.StepDiagnostics({"backbone": list(used.parameters()) + [unused]}, optimizer, str(tmp_path),
                                       tensorboard=False)
    loss = used(torch.ones(2, 3)).pow(2).mean()
    loss.backward()
    assert unused.grad is None
    norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in used.parameters()))
    diag.on_gradients()
    optimizer.step()
    diag.on_update(1, loss)
    diag.close()
    row = read(tmp_path)[0]
    assert float(row["backbone_grad_norm"]) == pytest.approx(norm, rel=1e-6)
    assert float(row["backbone_update_norm"]) == pytest.approx(0.1 * norm, rel=1e-5)

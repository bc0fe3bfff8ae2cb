"""The restart scheduler (overlay/common/restart_scheduler.py) against eq. 5, torch's SGDR and the measured trace."""
import logging
import math
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from hyperrestart.upstream import scheduler as rs

BASE_LR = 3e-4


def eq5(n, t_0, t_mult, eta_min, eta_max=BASE_LR, warmup=0):
    """lr after n scheduler steps, computed from the paper's eq. 5 (independently of torch)."""
    if n < warmup:
        return eta_max * n / warmup
    t_cur, t_i = n - warmup, t_0
    while t_cur >= t_i:
        t_cur -= t_i
        t_i *= t_mult
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / t_i))


def make_optimizer(lrs=(BASE_LR,)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.AdamW(groups, lr=lrs[0])


def lr_trace(sched, steps):
    """lr after 1..steps steps (what HF Trainer logs at those steps)."""
    out = []
    for _ in range(steps):
        sched.optimizer.step()
        sched.step()
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


SETTINGS = [(1, 2, 1e-6), (1, 1, 0.0), (3, 1, 1e-5), (2, 3, 0.0), (5, 2, 1e-7), (1, 2, 0.0)]


@pytest.mark.parametrize("t_0,t_mult,eta_min", SETTINGS)
def test_every_step_is_eq5_and_torch_sgdr(t_0, t_mult, eta_min):
    ours = rs.RestartScheduler(make_optimizer(), t_0=t_0, t_mult=t_mult, eta_min=eta_min)
    theirs = CosineAnnealingWarmRestarts(make_optimizer(), T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    assert ours.get_last_lr()[0] == pytest.approx(eq5(0, t_0, t_mult, eta_min), rel=1e-12)
    for n, (a, b) in enumerate(zip(lr_trace(ours, 300), lr_trace(theirs, 300)), start=1):
        assert a == pytest.approx(eq5(n, t_0, t_mult, eta_min), rel=1e-12, abs=1e-18), n
        assert a == b, n


def test_the_measured_upstream_trace():
    """UPSTREAM-FACTS: T_0=1, T_mult=2, eta_min=1e-6, lr 3e-4, logged at steps 1..16; restarts at 1, 3, 7, 15."""
    measured = [3e-4, 1.505e-4, 3e-4, 2.562e-4, 1.505e-4, 4.479e-5, 3e-4, 2.886e-4, 2.562e-4, 2.077e-4, 1.505e-4,
                9.329e-5, 4.479e-5, 1.238e-5, 3e-4, 2.971e-4]
    trace = lr_trace(rs.RestartScheduler(make_optimizer(), t_0=1, t_mult=2, eta_min=1e-6), 16)
    assert trace == pytest.approx(measured, rel=1e-3)
    restarts = [step for step in range(1, 17) if step == 1 or trace[step - 1] > trace[step - 2]]
    assert restarts == [1, 3, 7, 15]
    assert rs.cycle_end_steps(1, 2, count=4) == [1, 3, 7, 15]


def test_defaults_are_the_paper_readme():
    sched = rs.RestartScheduler(make_optimizer())
    assert (sched.T_0, sched.T_mult, sched.eta_min, sched.warmup_steps) == (1, 2, 1e-6, 0)


def test_param_groups_keep_their_own_base_lr():
    sched = rs.RestartScheduler(make_optimizer((3e-4, 1e-3)), t_0=2, t_mult=2, eta_min=0.0)
    for n in range(1, 20):
        sched.step()
        assert sched.get_last_lr() == pytest.approx([eq5(n, 2, 2, 0.0, 3e-4), eq5(n, 2, 2, 0.0, 1e-3)])


@pytest.mark.parametrize("warmup,t_0,t_mult", [(4, 1, 2), (10, 3, 1), (1, 2, 2)])
def test_warmup_is_linear_then_sgdr_starts_at_t_cur_zero(warmup, t_0, t_mult):
    sched = rs.RestartScheduler(make_optimizer(), t_0=t_0, t_mult=t_mult, eta_min=1e-6, warmup_steps=warmup)
    assert sched.get_last_lr()[0] == 0.0
    trace = lr_trace(sched, 100)
    for n, lr in enumerate(trace, start=1):
        assert lr == pytest.approx(eq5(n, t_0, t_mult, 1e-6, warmup=warmup), rel=1e-12), n
    assert trace[warmup - 1] == BASE_LR  # SGDR starts at eta_max right after warmup
    assert trace[: warmup - 1] == sorted(trace[: warmup - 1])
    # the same as torch's SGDR shifted by the warmup
    torch_trace = lr_trace(CosineAnnealingWarmRestarts(make_optimizer(), T_0=t_0, T_mult=t_mult, eta_min=1e-6), 80)
    assert trace[warmup: warmup + 80] == torch_trace
    assert rs.cycle_end_steps(t_0, t_mult, warmup, count=3)[0] == warmup + t_0


@pytest.mark.parametrize("warmup,t_0,t_mult,stop", [(0, 1, 2, 5), (0, 1, 2, 7), (0, 3, 1, 4), (6, 1, 2, 3),
                                                    (6, 1, 2, 17), (0, 2, 3, 40)])
@pytest.mark.parametrize("load_optimizer", [True, False])
def test_resume_from_state_dict_mid_cycle_gives_the_same_sequence(warmup, t_0, t_mult, stop, load_optimizer):
    kwargs = dict(t_0=t_0, t_mult=t_mult, eta_min=1e-6, warmup_steps=warmup)
    reference = lr_trace(rs.RestartScheduler(make_optimizer(), **kwargs), 60)

    first = rs.RestartScheduler(make_optimizer(), **kwargs)
    head = lr_trace(first, stop)
    saved_sched, saved_opt = first.state_dict(), first.optimizer.state_dict()

    optimizer = make_optimizer()
    resumed = rs.RestartScheduler(optimizer, **kwargs)
    if load_optimizer:
        optimizer.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    assert resumed.get_last_lr() == first.get_last_lr()
    tail = lr_trace(resumed, 60 - stop)
    assert head + tail == reference


def test_misalignment_warning_names_the_nearest_cycle_ends():
    with pytest.warns(UserWarning, match=r"max_steps=65536 .*Nearest aligned max_steps: 65535 or 131071"):
        message = rs.check_alignment(65536, 1, 2)
    assert "65535 or 131071" in message
    with pytest.warns(UserWarning, match=r"Nearest aligned max_steps: 65535 or 131071"):
        rs.check_alignment(130000, 1, 2)  # hyperformer's max_steps
    with pytest.warns(UserWarning, match=r"Nearest aligned max_steps: 503 or 507"):
        rs.check_alignment(505, 1, 2, warmup_steps=500)
    with pytest.warns(UserWarning, match=r"Nearest aligned max_steps: 501\.$"):
        rs.check_alignment(100, 1, 2, warmup_steps=500)  # no cycle end before it: only the one after
    with pytest.warns(UserWarning, match=r"Nearest aligned max_steps: 30 or 40"):
        rs.check_alignment(33, 10, 1)
    assert rs.nearest_aligned_steps(65536, 1, 2) == (65535, 131071)
    assert rs.nearest_aligned_steps(100, 1, 2, 500) == (None, 501)


@pytest.mark.parametrize("steps,t_0,t_mult,warmup", [(65535, 1, 2, 0), (15, 1, 2, 0), (1, 1, 2, 0), (40, 10, 1, 0),
                                                     (507, 1, 2, 500), (1270000 // 10000, 1, 2, 0)])
def test_aligned_runs_are_silent(steps, t_0, t_mult, warmup):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rs.check_alignment(steps, t_0, t_mult, warmup) is None


def test_run_lengths_of_the_released_configs_end_where_upstream_facts_say():
    """65536 steps end one step into a fresh cycle (max lr); hyperformer's 130000 end near eta_min."""
    assert eq5(65536 - 1, 1, 2, 1e-6) == BASE_LR  # the lr used by the last step of a 65536-step run
    assert eq5(130000 - 1, 1, 2, 1e-6) < 1.5e-6
    assert eq5(65535 - 1, 1, 2, 1e-6) < 1.001e-6  # stopping at the cycle end: the last step uses ~eta_min


def test_from_args_reads_the_training_arguments_and_warns(caplog):
    class Args:
        restart_t0, restart_t_mult, eta_min, restart_warmup_steps = 2, 3, 1e-5, 4

    with pytest.warns(UserWarning, match=r"max_steps=100 .*T_0=2, T_mult=3, warmup_steps=4"):
        sched = rs.restart_scheduler_from_args(make_optimizer(), Args(), num_training_steps=100)
    sgdr = sched.restart
    assert (sgdr.t_0, sgdr.t_mult, sgdr.eta_min, sgdr.warmup_steps) == (2, 3, 1e-5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rs.restart_scheduler_from_args(make_optimizer(), Args(), num_training_steps=4 + 2 + 6 + 18)

    class Bare:  # upstream arguments without the new fields: the README defaults
        restart_warmup_steps = None
    sgdr = rs.restart_scheduler_from_args(make_optimizer(), Bare()).restart
    assert (sgdr.t_0, sgdr.t_mult, sgdr.eta_min, sgdr.warmup_steps) == (1, 2, 1e-6, 0)


def test_alias_maps_to_the_canonical_name_and_logs(caplog):
    assert rs.SCHEDULER_NAME == "cosine_annual_w_restarts"
    assert set(rs.SCHEDULER_NAMES) == {"cosine_annual_w_restarts", "consine_annealing_restart", "restart"}
    with caplog.at_level(logging.WARNING):
        assert rs.canonical_scheduler_name("consine_annealing_restart") == rs.SCHEDULER_NAME
    assert any("consine_annealing_restart" in r.getMessage() and "alias" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert rs.canonical_scheduler_name("cosine_annual_w_restarts") == rs.SCHEDULER_NAME
        assert rs.canonical_scheduler_name("linear") == "linear"
    assert not caplog.records


@pytest.mark.parametrize("kwargs,match", [(dict(t_0=0), "T_0"), (dict(t_0=1.5), "T_0"), (dict(t_mult=0), "T_mult"),
                                          (dict(t_mult=1.5), "T_mult"), (dict(warmup_steps=-1), "warmup")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rs.RestartScheduler(make_optimizer(), **kwargs)


def test_step_with_epoch_is_refused():
    sched = rs.RestartScheduler(make_optimizer())
    with pytest.raises(TypeError, match="once per optimizer step"):
        sched.step(3)

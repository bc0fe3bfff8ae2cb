"""The restart family and the per-group scheduler (overlay/common/restart_scheduler.py).

Every schedule's applied lr is checked at every step against a reference written here independently (a step-by-step
simulation, not the module's closed form; transformers' own lambdas for the base schedules), for every restart scope
and base schedule; resuming from a state_dict (through torch.save / torch.load(weights_only=True), as the trainers
do) continues the uninterrupted sequence exactly; bad arguments are refused with one line naming the value.
"""
import io
import logging
import math

import pytest
import torch

from hyperrestart.upstream import scheduler as rs

BASE = 3e-4
LRS = {"hypernetwork": 3e-4, "backbone": 1e-3}


# ---------------------------------------------------------------- references, independent of the module
def sgdr_reference(steps, base, t_0, t_mult, eta_min, warmup=0, cycle_warmup=0, decay=1.0, limit=0,
                   after="eta_min"):
    """[lr after n steps for n in 0..steps-1] by walking the schedule one step at a time."""
    out, i, k, length = [], 0, 0, t_0
    for n in range(steps):
        if n < warmup:
            out.append(base * n / warmup)
            continue
        w = cycle_warmup if i else 0
        if k == w + length:  # the cycle is over: the next one starts
            i, k, length = i + 1, 0, length * t_mult
            w = cycle_warmup
        peak = base * decay ** i
        if limit and i >= limit:
            out.append(eta_min if after == "eta_min" else base * decay ** limit)
        elif k < w:
            out.append(eta_min + (peak - eta_min) * k / w)
        else:
            out.append(eta_min + (peak - eta_min) * (1 + math.cos(math.pi * (k - w) / length)) / 2)
        k += 1
    return out


def wsd_reference(steps, base, total, decay, warmup, eta_min, shape):
    out = []
    for n in range(steps):
        if n < warmup:
            out.append(base * n / warmup)
        elif n < total - decay:
            out.append(base)
        elif n >= total:
            out.append(eta_min)
        else:
            x = (n - (total - decay)) / decay
            f = {"linear": 1 - x, "cosine": (1 + math.cos(math.pi * x)) / 2, "sqrt": 1 - math.sqrt(x)}[shape]
            out.append(eta_min + (base - eta_min) * f)
    return out


def hf_factor(name, warmup, total):
    """transformers' own lambda for a base schedule (the upstream trainers' arg_to_scheduler)."""
    import transformers
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    if name == "constant":
        sched = transformers.get_constant_schedule_with_warmup(opt, warmup) if warmup else \
            transformers.get_constant_schedule(opt)
    else:
        make = {"linear": transformers.get_linear_schedule_with_warmup,
                "cosine": transformers.get_cosine_schedule_with_warmup,
                "polynomial": transformers.get_polynomial_decay_schedule_with_warmup}[name]
        sched = make(opt, warmup, total)
    return sched.lr_lambdas[0]


# ---------------------------------------------------------------- helpers
def make_optimizer(spaces=("hypernetwork", "backbone")):
    """Two groups per space (weight decay / none), each space with its own base lr, tagged with param_space."""
    groups = []
    for space in spaces:
        for decay in (0.01, 0.0):
            groups.append({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": LRS[space], "weight_decay": decay,
                           "param_space": space})
    return torch.optim.AdamW(groups, lr=BASE)


def trace(sched, steps, signals=None):
    """Per optimizer step k = 1..steps: the lr of every group it applied; observe() fed from signals[k]."""
    out = []
    for k in range(1, steps + 1):
        out.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        if signals is not None:
            sched.observe(**signals(k))
        sched.step()
    return out


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


SGDR_SETTINGS = [
    dict(),  # the paper
    dict(cycle_warmup=2),
    dict(t_0=3, t_mult=1, cycle_warmup=2),
    dict(peak_decay=0.5),
    dict(t_0=2, t_mult=2, peak_decay=0.8, cycle_warmup=1, warmup_steps=3),
    dict(cycle_limit=3),
    dict(cycle_limit=2, after_limit="constant", peak_decay=0.5),
    dict(t_0=4, t_mult=1, cycle_limit=5, warmup_steps=2, eta_min=0.0),
]


def sgdr(**kw):
    args = dict(t_0=1, t_mult=2, eta_min=1e-6, warmup_steps=0)
    args.update(kw)
    return rs.SGDR(**args)


def sgdr_expected(steps, base, **kw):
    args = dict(t_0=1, t_mult=2, eta_min=1e-6, warmup_steps=0)
    args.update(kw)
    return sgdr_reference(steps, base, args.pop("t_0"), args.pop("t_mult"), args.pop("eta_min"),
                          args.pop("warmup_steps"), args.get("cycle_warmup", 0), args.get("peak_decay", 1.0),
                          args.get("cycle_limit", 0), args.get("after_limit", "eta_min"))


# ---------------------------------------------------------------- every schedule against its closed form
@pytest.mark.slow  # many settings at every step (~3 s)
@pytest.mark.parametrize("kw", SGDR_SETTINGS, ids=[str(k) or "paper" for k in SGDR_SETTINGS])
def test_sgdr_family_applied_lr_is_the_reference_at_every_step(kw):
    steps = 200
    applied = trace(rs.GroupScheduler(make_optimizer(), sgdr(**kw)), steps)
    for g, space in enumerate(["hypernetwork"] * 2 + ["backbone"] * 2):
        expected = sgdr_expected(steps, LRS[space], **kw)
        got = [row[g] for row in applied]
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_sgdr_family_features_show_in_the_trace():
    lrs = [row[0] for row in trace(rs.GroupScheduler(make_optimizer(), sgdr(cycle_warmup=2, peak_decay=0.5,
                                                                             cycle_limit=3)), 40)]
    eta = 1e-6
    # cycle 1: step 1 (T_0 = 1); cycle 2 = 2 warmup + 2 cosine steps; cycle 3 = 2 + 4; then eta_min held
    assert lrs[0] == BASE
    assert lrs[1] == pytest.approx(eta) and lrs[2] == pytest.approx(eta + (BASE / 2 - eta) / 2)
    assert lrs[3] == pytest.approx(BASE / 2)  # peak of cycle 2, decayed once
    assert lrs[7] == pytest.approx(BASE / 4)  # peak of cycle 3 after its 2 warmup steps
    assert set(lrs[11:]) == {eta}


@pytest.mark.parametrize("shape", rs.WSD_SHAPES)
@pytest.mark.parametrize("warmup,decay,total", [(0, 10, 30), (5, 10, 30), (4, 26, 30), (0, 1, 1)])
def test_wsd_applied_lr_is_the_reference_at_every_step(shape, warmup, decay, total):
    sched = rs.GroupScheduler(make_optimizer(), rs.WSD(total, decay, warmup, 1e-6, shape))
    applied = trace(sched, total + 5)
    for g, space in enumerate(["hypernetwork"] * 2 + ["backbone"] * 2):
        expected = wsd_reference(total + 5, LRS[space], total, decay, warmup, 1e-6, shape)
        assert [row[g] for row in applied] == pytest.approx(expected, rel=1e-12, abs=1e-18)


@pytest.mark.slow  # imports transformers per case (~1-2 s each)
@pytest.mark.parametrize("name", rs.BASE_SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 7])
def test_base_schedules_are_transformers_own_bit_for_bit(name, warmup):
    total = 50
    factor = hf_factor(name, warmup, total)
    sched = rs.GroupScheduler(make_optimizer(("backbone",)), rs.BASE_CLASSES[name](warmup, total))
    applied = trace(sched, total + 3)
    if name != "polynomial":
        assert applied == [[LRS["backbone"] * factor(n)] * 2 for n in range(total + 3)]
    else:  # lr_end is relative to each group's lr: with the optimizer's one lr it is transformers' exactly
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
        ours = rs.GroupScheduler(opt, rs.Polynomial(warmup, total))
        assert [row[0] for row in trace(ours, total + 3)] == [BASE * factor(n) for n in range(total + 3)]


def adaptive_expected(steps, base, restarts, period, eta_min, warmup=0, decay=1.0):
    """lr after n steps given the restart steps (cycles start at them)."""
    out = []
    for n in range(steps):
        if n < warmup:
            out.append(base * n / warmup)
            continue
        started = [s for s in restarts if s <= n]
        start = started[-1] if started else warmup
        peak = base * decay ** len(started)
        k = min(n - start, period)
        out.append(eta_min + (peak - eta_min) * (1 + math.cos(math.pi * k / period)) / 2)
    return out


def loss_signal(k):
    """A loss that falls, then rises from step 30 on, falls again from 45: a restart when the rise shows."""
    loss = 2.0 - 0.01 * k if k < 30 else (1.7 + 0.05 * (k - 30) if k < 45 else 2.45 - 0.02 * (k - 45))
    return {"loss": loss, "grad_dot_update": -1.0}


def test_adaptive_loss_criterion_restarts_when_the_moving_average_rises(caplog):
    restart = rs.AdaptiveRestart(period=20, eta_min=1e-6, criterion="loss", window=4, min_cycle=10)
    sched = rs.GroupScheduler(make_optimizer(), restart, scope="all")
    with caplog.at_level(logging.INFO):
        applied = trace(sched, 80, loss_signal)
    # step k's loss is observed after step k. After step 32 the mean of losses 29..32 (1.74) is above that of
    # 25..28 (1.735): the cycle restarts at n = 32, i.e. optimizer step 33 applies the peak again. The loss keeps
    # rising, but the next restart must wait min_cycle = 10 steps (and 2 windows of the new cycle): n = 42.
    assert restart.restarts == [[32, "loss moving average rose from 1.735 to 1.74 (window 4)"],
                                [42, "loss moving average rose from 2.025 to 2.225 (window 4)"]]
    steps = [n for n, _ in restart.restarts]
    assert [r.getMessage() for r in caplog.records if "adaptive restart" in r.getMessage()] == [
        "adaptive restart at optimizer step 33: loss moving average rose from 1.735 to 1.74 (window 4)",
        "adaptive restart at optimizer step 43: loss moving average rose from 2.025 to 2.225 (window 4)"]
    expected = adaptive_expected(80, LRS["hypernetwork"], steps, 20, 1e-6)
    assert [row[0] for row in applied] == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_adaptive_gradient_criterion_restarts_when_the_gradient_opposes_the_update():
    def signal(k):  # g.dtheta > 0 at steps 5, 12, 13, 40
        return {"loss": 1.0, "grad_dot_update": 0.5 if k in (5, 12, 13, 40) else -0.5}
    restart = rs.AdaptiveRestart(period=30, eta_min=0.0, criterion="gradient", window=3, min_cycle=6,
                                 peak_decay=0.5, warmup_steps=2)
    applied = trace(rs.GroupScheduler(make_optimizer(), restart), 60, signal)
    # step 5: only 3 steps into the first cycle (it began after the 2 warmup steps): too short;
    # step 12: restart (10 >= 6); step 13: 1 step into the new cycle, too short; step 40: restart
    assert [n for n, _ in restart.restarts] == [12, 40]
    assert all("g.dtheta = 0.5 > 0" in reason for _, reason in restart.restarts)
    expected = adaptive_expected(60, LRS["backbone"], [12, 40], 30, 0.0, warmup=2, decay=0.5)
    assert [row[2] for row in applied] == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_adaptive_either_and_the_restart_reason_of_the_current_lr():
    restart = rs.AdaptiveRestart(period=10, criterion="either", window=2, min_cycle=3)
    sched = rs.GroupScheduler(make_optimizer(), restart)
    reasons = {}
    for k in range(1, 30):
        sched.optimizer.step()
        sched.observe(loss=1.0, grad_dot_update=1.0 if k == 20 else -1.0)
        sched.step()
        if sched.restart_reason:
            reasons[k + 1] = sched.restart_reason
    assert list(reasons) == [21] and "g.dtheta" in reasons[21]


def test_adaptive_refuses_a_non_finite_loss():
    sched = rs.GroupScheduler(make_optimizer(), rs.AdaptiveRestart(period=10))
    with pytest.raises(ValueError, match="training loss is nan at step 1"):
        sched.observe(loss=float("nan"))


# ---------------------------------------------------------------- every scope
RESTARTS = {
    "sgdr": lambda total: sgdr(cycle_warmup=1, peak_decay=0.7),
    "wsd": lambda total: rs.WSD(total, 15, 5, 1e-6, "cosine"),
    "adaptive": lambda total: rs.AdaptiveRestart(12, 1e-6, 0, "either", 3, 5),
}


def restart_expected(kind, total, base, restarts=None):
    if kind == "sgdr":
        return sgdr_expected(total, base, cycle_warmup=1, peak_decay=0.7)
    if kind == "wsd":
        return wsd_reference(total, base, total, 15, 5, 1e-6, "cosine")
    return adaptive_expected(total, base, restarts, 12, 1e-6)


def signals(k):
    return {"loss": 1.0 + 0.1 * math.sin(k), "grad_dot_update": 1.0 if k % 17 == 0 else -1.0}


@pytest.mark.parametrize("kind", sorted(RESTARTS))
@pytest.mark.parametrize("scope", rs.SCOPES)
@pytest.mark.parametrize("base_name", rs.BASE_SCHEDULES)
def test_each_scope_restarts_its_groups_and_the_rest_follow_the_base_schedule(kind, scope, base_name):
    total, warmup = 60, 5
    restart = RESTARTS[kind](total)
    sched = rs.GroupScheduler(make_optimizer(), restart, rs.BASE_CLASSES[base_name](warmup, total), scope)
    applied = trace(sched, total, signals)
    restarts = [n for n, _ in getattr(restart, "restarts", [])]
    if kind == "adaptive":
        assert restarts, "the signals should trigger restarts"
    factor = hf_factor(base_name, warmup, total)
    for g, space in enumerate(["hypernetwork"] * 2 + ["backbone"] * 2):
        got = [row[g] for row in applied]
        if scope in ("all", space):
            assert got == pytest.approx(restart_expected(kind, total, LRS[space], restarts), rel=1e-12, abs=1e-18)
        elif base_name == "polynomial":  # lr_end relative to the group's own lr
            ref = [LRS[space] * (float(n) / warmup if n < warmup else
                                 ((LRS[space] - 1e-7) * (1 - (n - warmup) / (total - warmup)) + 1e-7) / LRS[space])
                   for n in range(total)]
            assert got == pytest.approx(ref, rel=1e-12)
        else:
            assert got == [LRS[space] * factor(n) for n in range(total)]
    assert sched.describe().startswith(f"restart_scope {scope}: {4 if scope == 'all' else 2} groups follow")


@pytest.mark.parametrize("kind", sorted(RESTARTS))
@pytest.mark.parametrize("scope", rs.SCOPES)
@pytest.mark.parametrize("stop", [1, 7, 23, 41])
def test_resume_from_state_dict_is_exact_for_every_schedule_and_scope(kind, scope, stop):
    total = 60

    def build():
        return rs.GroupScheduler(make_optimizer(), RESTARTS[kind](total), rs.Cosine(5, total), scope)

    reference = build()
    expected = trace(reference, total, signals)
    first = build()
    head = trace(first, stop, signals)
    saved, saved_optimizer = roundtrip(first.state_dict()), roundtrip(first.optimizer.state_dict())
    resumed = build()  # as the trainers resume: a fresh scheduler, then the optimizer's and its own state
    resumed.optimizer.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == first.get_last_lr() and resumed.last_epoch == stop

    def shifted(k):
        return signals(k + stop)
    tail = trace(resumed, total - stop, shifted)
    assert head + tail == expected
    if kind == "adaptive":
        assert resumed.restart.restarts == reference.restart.restarts


def test_the_restart_reason_marks_sgdr_cycle_starts():
    sched = rs.GroupScheduler(make_optimizer(), sgdr())
    starts = []
    for k in range(1, 17):
        sched.optimizer.step()
        sched.step()
        if sched.restart_reason:
            starts.append(k + 1)  # the optimizer step that applies the new lr
    assert starts == [2, 4, 8, 16]


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("build,match", [
    (lambda: sgdr(t_0=0), r"restart_t0 \(T_0\) must be an integer >= 1, got 0"),
    (lambda: sgdr(t_mult=1.5), r"restart_t_mult \(T_mult\) must be an integer >= 1, got 1.5"),
    (lambda: sgdr(eta_min=float("nan")), r"eta_min must be a finite number >= 0, got nan"),
    (lambda: sgdr(eta_min=-1e-6), r"eta_min must be a finite number >= 0, got -1e-06"),
    (lambda: sgdr(cycle_warmup=-2), r"restart_cycle_warmup must be an integer >= 0, got -2"),
    (lambda: sgdr(peak_decay=0), r"restart_peak_decay must be a finite number > 0, got 0"),
    (lambda: sgdr(peak_decay=1.5), r"restart_peak_decay must be in \(0, 1\], got 1.5"),
    (lambda: sgdr(cycle_limit=True), r"restart_cycle_limit must be an integer >= 0, got True"),
    (lambda: sgdr(after_limit="max"), r"restart_after_limit must be one of eta_min, constant, got 'max'"),
    (lambda: rs.WSD(10, 0), r"wsd_decay_steps must be an integer >= 1, got 0"),
    (lambda: rs.WSD(10, 8, 5), r"wsd warmup \(5\) \+ decay \(8\) steps exceed the run's 10 steps"),
    (lambda: rs.WSD(10, 5, shape="exp"), r"wsd_decay_shape must be one of linear, cosine, sqrt, got 'exp'"),
    (lambda: rs.AdaptiveRestart(0), r"adaptive_restart_period must be an integer >= 1, got 0"),
    (lambda: rs.AdaptiveRestart(10, criterion="hessian"), r"adaptive_restart_criterion must be one of loss, "
                                                          r"gradient, either, got 'hessian'"),
    (lambda: rs.AdaptiveRestart(10, window=0), r"adaptive_restart_window must be an integer >= 1, got 0"),
    (lambda: rs.AdaptiveRestart(10, min_cycle=0), r"adaptive_restart_min_cycle must be an integer >= 1, got 0"),
    (lambda: rs.Linear(5, 5), r"base_lr_scheduler 'linear' needs max_steps greater than its warmup \(5\), got 5"),
    (lambda: rs.Cosine(0, None), r"base_lr_scheduler 'cosine' needs max_steps"),
    (lambda: rs.GroupScheduler(make_optimizer(), sgdr(), scope="decoder"),
     r"restart_scope must be one of all, hypernetwork, backbone, got 'decoder'"),
    (lambda: rs.GroupScheduler(make_optimizer(("backbone",)), sgdr(), scope="hypernetwork"),
     r"restart_scope 'hypernetwork': the model has no hypernetwork parameters \(groups: backbone\); use "
     r"restart_scope all"),
    (lambda: rs.GroupScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), sgdr(),
                               scope="backbone"), r"needs optimizer parameter groups tagged with param_space"),
])
def test_bad_arguments_are_refused_with_one_line_naming_the_value(build, match):
    with pytest.raises(ValueError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args,match", [
    ({"lr_scheduler": "cosine_annual_w_restarts", "restart_scope": "encoder"}, "restart_scope must be one of"),
    ({"lr_scheduler": "cosine_annual_w_restarts", "base_lr_scheduler": "step"}, "base_lr_scheduler must be one of"),
    ({"lr_scheduler": "wsd"}, r"wsd_decay_steps must be an integer >= 1, got 0"),
    ({"lr_scheduler": "linear"}, r"lr_scheduler \(restart family\) must be one of"),
    ({"lr_scheduler": "cosine_annual_w_restarts", "restart_peak_decay": "0.5"}, "restart_peak_decay must be"),
])
def test_schedules_from_args_checks_every_argument(args, match):
    with pytest.raises(ValueError, match=match):
        rs.schedules_from_args(args, num_training_steps=100)


def test_schedules_from_args_builds_each_family_member():
    args = {"lr_scheduler": "consine_annealing_restart", "restart_t0": 2, "restart_cycle_warmup": 3,
            "restart_peak_decay": 0.9, "restart_cycle_limit": 4, "restart_after_limit": "constant",
            "restart_scope": "hypernetwork", "base_lr_scheduler": "linear", "restart_warmup_steps": 10}
    restart, base, scope = rs.schedules_from_args(args, 1000)
    assert isinstance(restart, rs.SGDR) and restart.settings() == dict(
        t_0=2, t_mult=2, eta_min=1e-6, warmup_steps=10, cycle_warmup=3, peak_decay=0.9, cycle_limit=4,
        after_limit="constant")
    assert isinstance(base, rs.Linear) and (base.warmup_steps, base.total_steps) == (10, 1000)
    assert scope == "hypernetwork"
    wsd, _, _ = rs.schedules_from_args({"lr_scheduler": "wsd", "wsd_decay_steps": 100, "wsd_decay_shape": "sqrt"}, 1000)
    assert (wsd.total_steps, wsd.decay_steps, wsd.shape) == (1000, 100, "sqrt")
    adaptive, _, _ = rs.schedules_from_args({"lr_scheduler": "adaptive_restart"}, 1000)
    assert (adaptive.period, adaptive.criterion, adaptive.window, adaptive.min_cycle) == (1000, "loss", 10, 100)


def test_resuming_with_other_settings_is_refused():
    first = rs.GroupScheduler(make_optimizer(), sgdr(), scope="hypernetwork")
    trace(first, 5)
    other = rs.GroupScheduler(make_optimizer(), sgdr(peak_decay=0.5), scope="hypernetwork")
    with pytest.raises(ValueError, match=r"the checkpoint's lr scheduler was cosine_annual_w_restarts .*peak_decay"
                                         r".*; resume with the same scheduler settings"):
        other.load_state_dict(roundtrip(first.state_dict()))
    scoped = rs.GroupScheduler(make_optimizer(), sgdr(), scope="backbone")
    with pytest.raises(ValueError, match="restart_scope hypernetwork"):
        scoped.load_state_dict(first.state_dict())


def test_a_checkpoint_of_the_torch_based_restart_scheduler_still_resumes():
    """Checkpoints written before the family: torch's CosineAnnealingWarmRestarts state plus global_step/warmup."""
    from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    old = CosineAnnealingWarmRestarts(opt, T_0=1, T_mult=2, eta_min=1e-6)
    for _ in range(5):
        opt.step()
        old.step()
    state = dict(old.state_dict(), global_step=5, warmup_steps=0)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    resumed = rs.RestartScheduler(fresh)
    resumed.load_state_dict(roundtrip(state))
    fresh.param_groups[0]["lr"] = old.get_last_lr()[0]
    tail = [row[0] for row in trace(resumed, 20)]
    for _ in range(20):
        assert tail.pop(0) == opt.param_groups[0]["lr"]
        opt.step()
        old.step()


def test_lr_schedule_of_a_config_follows_each_family_member():
    from hyperrestart.core.errors import HyperrestartError
    wsd = {"lr_scheduler": "wsd", "learning_rate": 1e-3, "wsd_decay_steps": 10, "restart_warmup_steps": 4,
           "eta_min": 0.0, "restart_scope": "backbone"}
    assert rs.lr_schedule(wsd, 40) == pytest.approx(wsd_reference(40, 1e-3, 40, 10, 4, 0.0, "linear"), rel=1e-12)
    sgdr_cfg = {"lr_scheduler": "cosine_annual_w_restarts", "learning_rate": 1e-3, "restart_peak_decay": 0.5,
                "restart_cycle_warmup": 2}
    expected = sgdr_reference(50, 1e-3, 1, 2, 1e-6, 0, 2, 0.5)
    assert rs.lr_schedule(sgdr_cfg, 50) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(HyperrestartError, match="adaptive_restart restarts when training says so"):
        rs.lr_schedule({"lr_scheduler": "adaptive_restart"}, 10)
    with pytest.raises(HyperrestartError, match="wsd_decay_steps must be an integer >= 1, got 0"):
        rs.lr_schedule({"lr_scheduler": "wsd"}, 10)


@pytest.mark.parametrize("config,problem", [
    ({"lr_scheduler": "wsd", "max_steps": 100}, "wsd_decay_steps must be an integer >= 1, got 0"),
    ({"lr_scheduler": "cosine_annual_w_restarts", "restart_peak_decay": 2.0}, "restart_peak_decay must be in (0, 1]"),
    ({"lr_scheduler": "constant", "restart_scope": "hypernetwork"}, "restart_scope 'hypernetwork' needs a restart"),
    ({"lr_scheduler": "adaptive_restart", "max_steps": 50, "adaptive_restart_criterion": "x"},
     "adaptive_restart_criterion must be one of loss, gradient, either, got 'x'"),
])
def test_run_preflight_names_a_bad_family_argument(config, problem):
    from hyperrestart.upstream.arguments import schedule_problems
    assert [p for p in schedule_problems(config) if problem in p]
    assert schedule_problems({"lr_scheduler": "wsd", "max_steps": 100, "wsd_decay_steps": 10}) == []
    assert schedule_problems({"lr_scheduler": "linear"}) == []

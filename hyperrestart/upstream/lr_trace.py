"""The applied-lr trace of a run (step k holds the lr optimizer step k used), read from the Trainer's state or log,
written as lr_trace.csv, and the steps where a new lr cycle starts."""
import csv
import re
from pathlib import Path


def applied_lrs(logged, initial, last_step=None) -> list:
    """[(step, lr applied by optimizer step `step`)] from the Trainer's logged [(k, lr after step k)]: step 1 applies
    the initial lr, step k+1 the lr logged at k (LR step numbering of the project); steps past last_step dropped."""
    trace = {1: float(initial)}
    for step, lr in logged:
        if last_step is None or step + 1 <= last_step:
            trace.setdefault(step + 1, float(lr))
    return sorted(trace.items())


def lr_trace_from_state(state, config) -> list:
    """The applied-lr trace (applied_lrs) from a trainer state's log_history, up to its global_step."""
    logged = [(int(e["step"]), float(e["learning_rate"])) for e in state.get("log_history", [])
              if "learning_rate" in e and "step" in e]
    return applied_lrs(logged, initial_lr(config), state.get("global_step") or None)


_LOG_DICT = re.compile(r"\{[^{}]*'learning_rate': [^{}]*\}")


def lr_trace_from_log(text, config) -> list:
    """Fallback for a run without trainer_state.json: the Trainer's printed log dicts ({'loss': ..,
    'learning_rate': ..}), at the config's logging steps (logging_first_step, then every logging_steps)."""
    import ast
    values = []
    for match in _LOG_DICT.finditer(text):
        try:
            values.append(float(ast.literal_eval(match.group(0))["learning_rate"]))
        except (ValueError, SyntaxError, KeyError):
            continue
    every = int(config.get("logging_steps") or 500)
    steps = ([1] if config.get("logging_first_step") and every != 1 else []) + \
        list(range(every, every * (len(values) + 1), every))
    return applied_lrs(list(zip(steps, values)), initial_lr(config))


LR_TRACE_HEADER = ("step", "lr_applied")  # lr_applied: the lr that optimizer step `step` used


def write_lr_trace(trace, path: Path):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LR_TRACE_HEADER)
        writer.writerows((step, repr(lr)) for step, lr in trace)


def restart_steps(trace, rel=1e-6):
    """Steps that start a new cycle in an applied-lr trace [(step, lr)]: the lr rises again after having fallen, or
    (T_0 = 1) stays at its start value for one more step right before its first fall. Warmup ramps and constant lrs
    have none. For SGDR T_0=1, T_mult=2: 2, 4, 8, 16, ..."""
    restarts, fell = [], False
    for i in range(1, len(trace)):
        step, cur = trace[i]
        prev = trace[i - 1][1]
        nxt = trace[i + 1][1] if i + 1 < len(trace) else None
        rose = cur > prev * (1 + rel) + 1e-30
        flat = abs(cur - prev) <= rel * max(abs(prev), 1e-30)
        if (rose and fell) or (flat and not fell and cur > 0 and nxt is not None and nxt < cur * (1 - rel)):
            restarts.append(step)
        if cur < prev * (1 - rel):
            fell = True
    return restarts


def initial_lr(config) -> float:
    """The lr before the first optimizer step for this config's scheduler (0 during a warmup; the restart family
    warms up over restart_warmup_steps, every parameter group alike; the lr traced is the first group's)."""
    from hyperrestart.upstream.scheduler import FAMILY_NAMES
    lr = float(config.get("learning_rate", 5e-5))
    if config.get("lr_scheduler") in FAMILY_NAMES:
        return 0.0 if (config.get("restart_warmup_steps") or 0) > 0 else lr
    if config.get("lr_scheduler", "linear") != "constant" and (config.get("warmup_steps") or 0) > 0:
        return 0.0
    return lr

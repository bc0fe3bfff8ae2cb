"""The valid range of every numeric training setting the tool interprets, checked at pre-flight (`run`) and by
`plot-lr` before any loop over steps or cycles runs. The restart settings' rules are the scheduler's own
(overlay/common/restart_scheduler.py: restart_argument_problems), so trainer and tool refuse the same values."""
import math

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.limits import non_finite_numbers


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# key -> (accepts the value, what a valid value is). A key that is absent or null is not checked here.
RULES = {
    "learning_rate": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "max_steps": (lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1: num_train_epochs decides)"),
    "num_train_epochs": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "warmup_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "gradient_accumulation_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "per_device_train_batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "per_device_eval_batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "logging_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "save_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "eval_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "save_total_limit": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "seed": (lambda v: _int(v) and 0 <= v < 2 ** 32, "an integer from 0 to 2**32-1"),
    "data_seed": (lambda v: _int(v) and 0 <= v < 2 ** 32, "an integer from 0 to 2**32-1"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "adam_epsilon": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "adam_beta1": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "adam_beta2": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "max_grad_norm": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "dropout": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "dropout_rate": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "label_smoothing": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "max_source_length": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "max_target_length": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "val_max_target_length": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "test_max_target_length": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "n_train": (lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1: all)"),
    "n_val": (lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1: all)"),
    "n_test": (lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1: all)"),
}
# the restart settings alone (their joint rules, eta_min < learning_rate, are the scheduler's: range_problems)
SINGLE_RULES = dict(RULES, **{
    "restart_t0": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "restart_t_mult": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "restart_warmup_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "eta_min": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
})
NUMERIC_KEYS = frozenset(SINGLE_RULES)


def value_problem(key, value):
    """Why `value` cannot be the setting `key` on its own (a sweep's grid value, read with the spec), or None."""
    if key in SINGLE_RULES and value is not None and not SINGLE_RULES[key][0](value):
        return f"{key} is {value!r}; it must be {SINGLE_RULES[key][1]}"
    return None


def range_problems(config, origin=None):
    """One message per setting outside its range (NaN and infinities anywhere included), naming where it came
    from; the restart settings are checked when the restart scheduler is chosen."""
    from hyperrestart.upstream.scheduler import SCHEDULER_NAMES, restart_argument_problems
    origin = origin or {}
    where = lambda key: f" (from {origin[key]})" if key in origin else ""  # noqa: E731
    problems = [f"{key} is {value!r}{where(key.split('.')[0].split('[')[0])}: NaN and infinite values are refused"
                for key, value in non_finite_numbers(config)]
    bad = {key for key, _ in non_finite_numbers(config)}
    for key, (valid, wanted) in RULES.items():
        value = config.get(key)
        if value is not None and key not in bad and not valid(value):
            problems.append(f"{key} is {value!r}{where(key)}; it must be {wanted}")
    if config.get("lr_scheduler") in SCHEDULER_NAMES:
        from hyperrestart.upstream.scheduler import restart_settings_raw
        t_0, t_mult, eta_min, warmup = restart_settings_raw(config)
        lr = config.get("learning_rate")
        problems += [f"{p}{where(p.split(' ')[0])}" for p in
                     restart_argument_problems(t_0, t_mult, eta_min, warmup, lr if _num(lr) else None)]
    return problems


def check_ranges(config, origin=None, what="the config"):
    """HyperrestartError listing every out-of-range setting; nothing when all are valid."""
    problems = range_problems(config, origin)
    if problems:
        raise HyperrestartError("\n  ".join([f"{what} has {len(problems)} setting(s) out of range; fix them in the "
                                             f"config file or the --set values:"] + problems))

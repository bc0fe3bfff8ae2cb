"""What a resume may change: with --resume_allowed_changes KEYS, the checkpoint's settings are compared with this
run's and only KEYS may differ (a population-based search continues a donor's checkpoint with perturbed
hyperparameters); any other difference is refused in one line. The allowed keys' new values then drive the lr
schedule and the optimizer from the resumed step on. Without the option nothing is compared (as before)."""
import warnings

# settings the runner can take over on resume: the schedule's base lr and floor, the optimizer's weight decay
RESUMABLE = ("learning_rate", "eta_min", "weight_decay")
# settings that never change what is trained: where things go, how much is printed, when the run pauses, how the
# global batch is split over processes (the same global batch for any number, see arguments.batch_layout)
NEUTRAL = ("config", "output_dir", "stop_at_step", "progress", "logging_steps", "report_to", "run_name", "resume",
           "resume_allowed_changes", "dataloader_num_workers", "batch_layout", "save_steps", "save_total_limit")
GROUP_SETTINGS = ("initial_lr", "weight_decay")


def parse_allowed(text):
    """'learning_rate,eta_min' -> ('learning_rate', 'eta_min'); None -> None (no check); '' or 'none' -> () (every
    change refused). ValueError naming a key the runner cannot change on resume."""
    if text is None:
        return None
    keys = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    unknown = [k for k in keys if k not in RESUMABLE]
    if unknown:
        raise ValueError(f"--resume_allowed_changes: {', '.join(unknown)} cannot change on resume (the runner can "
                         f"take over only {', '.join(RESUMABLE)})")
    return keys


def changed_settings(saved, current):
    """{key: (checkpoint's value, this run's value)} for every setting that differs, neutral ones aside."""
    keys = (set(saved) | set(current)) - set(NEUTRAL)
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def refusal(changed, allowed):
    """One line refusing the changes outside `allowed`, or None when every change is allowed."""
    refused = {k: v for k, v in changed.items() if k not in allowed}
    if not refused:
        return None
    what = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
    return (f"resume refused: the checkpoint was trained with other settings ({what}); only "
            f"{', '.join(allowed) or 'no setting'} may change (--resume_allowed_changes); resume with the "
            f"checkpoint's settings or start a new run")


def fresh_settings(optimizer, scheduler):
    """The freshly built optimizer's per-group settings and the scheduler's state (built from this run's options),
    taken before the checkpoint is loaded over them."""
    groups = [{k: g[k] for k in GROUP_SETTINGS if k in g} for g in optimizer.param_groups]
    return groups, scheduler.state_dict()


def scheduler_state(saved, fresh):
    """The checkpoint's scheduler state with this run's settings and base lrs (its step count and adaptive state
    kept)."""
    state = dict(saved, base_lrs=list(fresh["base_lrs"]))
    for key in ("restart", "base"):  # GroupScheduler: the schedules' settings, checked on load
        if key in fresh:
            state[key] = fresh[key]
    return state


def take_over(optimizer, scheduler, groups):
    """After loading: the groups' base lr and weight decay from this run, and the lr the next step applies from the
    schedule with the new settings at the resumed step."""
    for group, settings in zip(optimizer.param_groups, groups):
        group.update(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when get_lr() is called outside step()
        lrs = scheduler.get_lr()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)

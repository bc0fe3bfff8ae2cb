"""The learning rate a config produces over its max_steps, as a PNG, and whether a restart run stops at a cycle end
(`hyperrestart plot-lr`)."""
import io
from pathlib import Path

from hyperrestart.upstream import registry
from hyperrestart.core import overrides
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_bytes
from hyperrestart.core.paths import PROJECT_ROOT

MAX_MARKED_CYCLES = 200
# The keys plot-lr reads, with the JSON kinds --set takes for them (as `run` checks against the upstream's types).
KINDS = {"max_steps": {"int"}, "learning_rate": {"float"}, "warmup_steps": {"int"}, "lr_scheduler": {"str"},
         "restart_t0": {"int"}, "restart_t_mult": {"int"}, "eta_min": {"float"}, "restart_warmup_steps": {"int"}}
PLOTS_DIR = PROJECT_ROOT / "runs" / "plots"


def alignment_text(config, max_steps):
    """One line: whether the run ends at a cycle end, and the nearest aligned values otherwise."""
    from hyperrestart.upstream.scheduler import SCHEDULER_NAMES, cycle_end_steps, nearest_aligned_steps, restart_settings
    name = config.get("lr_scheduler", "linear")
    if name not in SCHEDULER_NAMES:
        return f"lr_scheduler={name} has no restart cycles; nothing to align."
    t_0, t_mult, _, warmup = restart_settings(config)
    below, above = nearest_aligned_steps(max_steps, t_0, t_mult, warmup)
    settings = f"T_0={t_0}, T_mult={t_mult}, restart_warmup_steps={warmup}"
    if below == max_steps:
        cycles = len(cycle_end_steps(t_0, t_mult, warmup, up_to=max_steps)) - 1
        return f"max_steps={max_steps} ends at a cycle end ({settings}): cycle {cycles} finishes at eta_min."
    nearest = f"{below} or {above}" if below is not None else str(above)
    return (f"max_steps={max_steps} does NOT end at a cycle end ({settings}): the run stops mid-cycle. "
            f"Nearest aligned max_steps: {nearest}.")


def plot(lrs, config, max_steps, out: Path, x_scale="auto", title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from hyperrestart.upstream.scheduler import SCHEDULER_NAMES, cycle_end_steps, restart_settings

    steps = range(1, len(lrs) + 1)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.plot(steps, lrs, lw=1, color="tab:blue", label="lr used by the step")
    if config.get("lr_scheduler") in SCHEDULER_NAMES:
        t_0, t_mult, _, warmup = restart_settings(config)
        ends = [e for e in cycle_end_steps(t_0, t_mult, warmup, up_to=max_steps) if e <= max_steps]
        for i, end in enumerate(ends[-MAX_MARKED_CYCLES:]):
            ax.axvline(end, color="tab:red", lw=0.6, alpha=0.6, label="cycle end" if i == 0 else None)
    ax.axvline(max_steps, color="black", lw=1, ls="--", label=f"max_steps={max_steps}")
    if x_scale == "log" or (x_scale == "auto" and max_steps >= 10000):
        ax.set_xscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title or f"lr_scheduler={config.get('lr_scheduler')}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())


def plot_lr(args):
    """`hyperrestart plot-lr`: args has config, set, max_steps, out, x_scale."""
    config = overrides.apply_overrides(registry.load_config(args.config), args.set, KINDS)
    max_steps = args.max_steps or config.get("max_steps")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise HyperrestartError(f"{args.config}: max_steps is {max_steps!r}; give a positive integer "
                                f"(--max-steps N or --set max_steps=N)")
    from hyperrestart.upstream.scheduler import lr_schedule
    lrs = lr_schedule(config, max_steps)
    out = Path(args.out) if args.out else PLOTS_DIR / f"{Path(args.config).stem}.png"
    plot(lrs, config, max_steps, out, args.x_scale, title=f"{Path(args.config).name}: "
         f"lr_scheduler={config.get('lr_scheduler')}, lr={config.get('learning_rate')}")
    print(alignment_text(config, max_steps))
    print(f"last step's lr: {lrs[-1]:.4g} (max {max(lrs):.4g}, min {min(lrs):.4g})")
    print(f"wrote {out}")
    return 0

"""Figures of `hyperrestart analyse`: landscapes laid out like the paper's Figure 3, Hessian densities, and the
track of curvature over training against the lr curve."""
from pathlib import Path

import numpy as np

SPACE_COLORS = {"hypernetwork": "tab:orange", "main": "tab:green", "backbone": "tab:blue"}
SPACE_TITLES = {"hypernetwork": "hypernetwork $\\phi$", "main": "main network $\\theta = H(C;\\phi)$",
                "backbone": "backbone"}



def _save(fig, path: Path):
    """Write the figure to `path` (its folder made), close it, return the path."""
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _surface_axes(fig, position, data, title, cmap="viridis"):
    ax = fig.add_subplot(*position, projection="3d")
    grid = data["axis"]
    a, b = np.meshgrid(grid, grid)
    ax.plot_surface(a, b, np.where(np.isfinite(data["surface"]), data["surface"], np.nan), cmap=cmap, linewidth=0, antialiased=True, rcount=64, ccount=64)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("$\\alpha$ (d1)", fontsize=8)
    ax.set_ylabel("$\\beta$ (d2)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.zaxis.set_major_formatter(_compact())
    return ax


def _compact():
    """Ticks with a shared offset, so that a surface spanning 1e-3 around 85.57 still reads."""
    from matplotlib.ticker import ScalarFormatter
    formatter = ScalarFormatter(useOffset=True)
    formatter.set_powerlimits((-3, 4))
    return formatter


def _contour_axes(fig, position, data, title):
    ax = fig.add_subplot(*position)
    grid = data["axis"]
    surface = np.ma.masked_invalid(data["surface"])  # a perturbation can overflow the loss: left blank
    finite = surface.compressed()
    if finite.size and finite.max() > finite.min():
        filled = ax.contourf(grid, grid, surface, levels=20, cmap="viridis")
        ax.contour(grid, grid, surface, levels=20, colors="k", linewidths=0.3)
    else:  # flat (or no finite value): one colour, no contour lines
        filled = ax.pcolormesh(grid, grid, surface, cmap="viridis", shading="auto")
    ax.plot([0], [0], marker="*", color="red", markersize=9, label="checkpoint")
    ax.set_aspect("equal")
    if finite.size:  # colour scales differ by panel: say how much the loss varies in this one
        title = f"{title} (loss varies by {finite.max() - finite.min():.3g})"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("$\\alpha$ (d1)", fontsize=8)
    ax.set_ylabel("$\\beta$ (d2)", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.colorbar(filled, ax=ax, shrink=0.8, format=_compact()).ax.tick_params(labelsize=7)
    return ax


def _slices_axes(fig, position, data, title):
    ax = fig.add_subplot(*position)
    ax.plot(data["axis"], data["slice_d1"], label="along d1 ($\\beta$=0)")
    ax.plot(data["axis"], data["slice_d2"], label="along d2 ($\\alpha$=0)", linestyle="--")
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step along the direction", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.yaxis.set_major_formatter(_compact())
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return ax


def landscape_figure(results: dict, title, path: Path):
    """One checkpoint: a column per space; rows: 3-D surface, contour, the 1-D slices through the checkpoint."""
    plt = _pyplot()
    spaces = list(results)
    fig = plt.figure(figsize=(5.2 * len(spaces), 13))
    for i, space in enumerate(spaces):
        data = results[space]
        name = SPACE_TITLES.get(space, space)
        _surface_axes(fig, (3, len(spaces), i + 1), data, name)
        _contour_axes(fig, (3, len(spaces), len(spaces) + i + 1), data, f"{name}: contour")
        _slices_axes(fig, (3, len(spaces), 2 * len(spaces) + i + 1), data, f"{name}: 1-D slices")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def figure3(trained: dict, init: dict, trained_label, path: Path, spaces=("hypernetwork", "main")):
    """The paper's Figure 3: (a) hypernetwork and (b) main network after training, (c) and (d) before, each as
    3-D surface and contour side by side."""
    plt = _pyplot()
    fig = plt.figure(figsize=(20, 9.5))
    letters = iter("abcd")
    for row, (results, when) in enumerate(((trained, f"after training ({trained_label})"), (init, "before training"))):
        for col, space in enumerate(spaces):
            letter = next(letters)
            name = f"({letter}) {SPACE_TITLES.get(space, space)}, {when}"
            _surface_axes(fig, (2, 4, row * 4 + 2 * col + 1), results[space], name)
            _contour_axes(fig, (2, 4, row * 4 + 2 * col + 2), results[space], "contour")
    fig.tight_layout()
    return _save(fig, path)


def density_figure(result: dict, path: Path):
    """One checkpoint's Hessian spectral densities (SLQ), a panel per space, extremes marked."""
    plt = _pyplot()
    spaces = [s for s, v in result["spaces"].items() if v]
    fig, axes = plt.subplots(1, len(spaces), figsize=(5 * len(spaces), 3.8), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        data = result["spaces"][space]
        ax.semilogy(data["density_grid"], np.maximum(data["density"], 1e-12))
        for value in data["top"] + data["bottom"]:
            ax.axvline(value, color="red" if value < 0 else "green", linewidth=0.6, alpha=0.7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{SPACE_TITLES.get(space, space)}\nmass below / near / above 0: {data['negative_mass']:.2f} / "
                     f"{data['near_zero_mass']:.2f} / {data['positive_mass']:.2f}", fontsize=10)
        ax.set_xlabel("eigenvalue", fontsize=8)
        ax.set_ylabel("density (SLQ)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Hessian spectra at {result['checkpoint']} (loss {result['loss']:.4g})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def track_figure(rows, lr_trace, title, path: Path):
    """Largest eigenvalue, spectral mass below zero and ||Rv||/||H_phi v|| against step, per space, over the lr
    curve (rows: tasks.summary_rows)."""
    plt = _pyplot()
    panels = [("top_eigenvalue", "largest Hessian eigenvalue"), ("negative_mass", "spectral mass below 0 (SLQ)"),
              ("r_ratio", "$\\|Rv\\| / \\|H_\\phi v\\|$ (hypernetwork space)")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, (key, label) in zip(axes, panels):
        _track_panel(ax, rows, key, label, lr_trace)
    handles, labels = [], []
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.93))
    return _save(fig, path)


def _track_panel(ax, rows, key, label, lr_trace, style="-", suffix=""):
    values = []
    for space in SPACE_COLORS:
        chosen = [r for r in rows if r["space"] == space and r.get(key) is not None]
        points = [(r["step"], r[key]) for r in chosen]
        if points:
            ax.plot(*zip(*points), style, marker="o", color=SPACE_COLORS[space],
                    label=SPACE_TITLES.get(space, space) + suffix)
            values += [v for _, v in points]
        band = [(r["step"], r[f"{key}_min"], r[f"{key}_max"]) for r in chosen if (r.get("n") or 1) > 1]
        if band:  # rows aggregated over seeds (report): the min-max over seeds, shaded
            ax.fill_between(*zip(*band), color=SPACE_COLORS[space], alpha=0.15, linewidth=0)
            values += [v for _, low, high in band for v in (low, high)]
    if key != "negative_mass" and values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step", fontsize=9)
    ax.set_ylabel(label, fontsize=9)
    ax.tick_params(labelsize=8)
    if lr_trace and not getattr(ax, "_lr_drawn", False):
        twin = ax.twinx()
        twin.plot([s for s, _ in lr_trace], [lr for _, lr in lr_trace], color="grey", linestyle=":", linewidth=1)
        twin.set_ylabel("learning rate (dotted)", fontsize=8, color="grey")
        twin.tick_params(labelsize=7, colors="grey")
        ax._lr_drawn = True


def track_comparison_figure(arms, title, path: Path):
    """Two or more runs' tracks on shared axes: arms = [(label, rows, lr_trace)]; solid for the first arm, dashed
    for the second, then dotted and dash-dotted; each arm's lr curve underneath. Rows aggregated over seeds (with
    n, <key>_min and <key>_max) get a min-max band where n > 1."""
    plt = _pyplot()
    keys = [("top_eigenvalue", "largest Hessian eigenvalue"), ("negative_mass", "spectral mass below 0 (SLQ)"),
            ("r_ratio", "$\\|Rv\\| / \\|H_\\phi v\\|$ (hypernetwork space)")]
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, 3, figsize=(17, 8), gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    for i, (label, rows, trace) in enumerate(arms):
        for ax, (key, name) in zip(axes[0], keys):
            _track_panel(ax, rows, key, name, None, styles[i % len(styles)], f" ({label})")
        for ax in axes[1]:
            ax.plot([s for s, _ in trace], [lr for _, lr in trace], styles[i % len(styles)], color="grey",
                    label=f"lr ({label})")
            ax.set_xlabel("optimizer step", fontsize=9)
            ax.set_ylabel("learning rate", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[1][0].legend(fontsize=7)
    handles, labels = [], []
    for ax in axes[0]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    return _save(fig, path)


def load_landscape(path: Path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}

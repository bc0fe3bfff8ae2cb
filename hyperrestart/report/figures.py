"""Curve figures: the mean over seeds with a min-max band, and the applied lr on a second axis."""
import csv
import io
import statistics
from pathlib import Path

from hyperrestart.core.files import atomic_path, atomic_write_text
from hyperrestart.report.tables import csv_number

# --- figures ----------------------------------------------------------------------------------------------------
def _smooth(points, window):
    """Trailing moving average over `window` points (the first points average what there is)."""
    if window <= 1 or len(points) <= window:
        return points
    values = [v for _, v in points]
    out, total = [], 0.0
    for i, (step, value) in enumerate(points):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append((step, total / min(i + 1, window)))
    return out


def seed_band(curves, window=1):
    """[(step, mean, min, max, n seeds)] at the steps every non-empty seed curve has (each smoothed first)."""
    curves = [_smooth(curve, window) for curve in curves if curve]
    if not curves:
        return []
    maps = [dict(curve) for curve in curves]
    common = set(maps[0]).intersection(*maps[1:])
    band = []
    for step in sorted(common):
        values = [m[step] for m in maps]
        band.append((step, statistics.fmean(values), min(values), max(values), len(values)))
    return band


def curve_bands(rows, kind):
    """{arm: band} for "metric" or "loss" (loss smoothed over 1% of its points)."""
    bands = {}
    for row in rows:
        curves = [r.curves.get(kind) or [] for r in row.runs]
        window = max(1, max(map(len, curves)) // 100) if kind == "loss" else 1
        band = seed_band(curves, window)
        if band:
            bands[row.arm] = band
    return bands


def curves_csv(rows, bands):
    """arm, step, mean, min, max, n_seeds, lr_applied (the arm's lr at that optimizer step, when logged)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arm", "step", "mean", "min", "max", "n_seeds", "lr_applied"])
    for row in rows:
        lr = dict(row.runs[0].curves.get("lr") or [])
        for step, mean, low, high, n in bands.get(row.arm, []):
            writer.writerow([row.arm, step, csv_number(mean), csv_number(low), csv_number(high), n, csv_number(lr.get(step))])
    return buffer.getvalue()


def draw_curves(rows, bands, kind, title=None, metric_label="metric"):
    """The figure: per arm the mean over seeds (line) and the min–max over seeds (shaded band), and the lr each
    optimizer step applied on a second axis (dashed); None when no arm has a curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not bands:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.2))
    lr_ax = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        color = colors[i % len(colors)]
        band = bands.get(row.arm)
        if band:
            steps, mean, low, high, n = zip(*band)
            ax.plot(steps, mean, color=color, label=f"{row.arm} (n={max(n)})",
                    marker="o" if len(steps) < 30 else None, markersize=3)
            if max(n) > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        lr = row.runs[0].curves.get("lr") or []
        if lr:
            lr_ax.plot(*zip(*lr), color=color, linestyle="--", linewidth=1, alpha=0.7, label=f"{row.arm}: lr")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric_label if kind == "metric" else "training loss")
    lr_ax.set_ylabel("learning rate applied at the step (dashed)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    lr_top = max((v for row in rows for _, v in row.runs[0].curves.get("lr") or []), default=0)
    if lr_top > 0:  # from 0 with headroom: a constant lr is a visible line, not the top border
        lr_ax.set_ylim(0, lr_top * 1.15)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.05 * (high - low))
    name = "evaluation" if kind == "metric" else "training loss"
    ax.set_title(f"{title or name}\nline: mean over seeds; band: min–max over seeds", fontsize="medium")
    from hyperrestart.upstream.lr_plot import legend_below
    legend_below(fig, ax, lr_ax)  # last: it lays the figure out around the title and the legend
    return fig



def plot_curves(rows, kind, path, title=None, metric_label="metric"):
    """Write PATH (PNG) and PATH with .csv (the plotted numbers); returns the PNG path, or None without curves."""
    import matplotlib.pyplot as plt

    bands = curve_bands(rows, kind)
    fig = draw_curves(rows, bands, kind, title, metric_label)
    if fig is None:
        return None
    path = Path(path)
    atomic_write_text(path.with_suffix(".csv"), curves_csv(rows, bands))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


# --- step diagnostics (diagnostics.csv of the upstream trainers and the P3 runner) ---------------------------------
DIAGNOSTICS = ("grad_norm", "update_norm", "lr")


def read_diagnostics(run_path):
    """{space: {metric: [(step, value)]}} and [(step, reason)] restarts from a run's diagnostics.csv, or None."""
    path = Path(run_path) / "diagnostics.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    spaces = sorted({key.rsplit("_", 2)[0] for key in (rows[0] if rows else {}) if key.endswith("_grad_norm")})
    series = {s: {m: [(int(r["step"]), float(r[f"{s}_{m}"])) for r in rows if r.get(f"{s}_{m}")] for m in DIAGNOSTICS}
              for s in spaces}
    restarts = [(int(r["step"]), r["restart"]) for r in rows if r.get("restart")]
    return series, restarts


def plot_diagnostics(rows, out_dir):
    """diagnostics_<arm>.png per arm with diagnostics: gradient norm, update norm and applied lr per parameter space
    of the arm's first run, restarts marked (dotted lines); returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    for row in rows:
        run = next((r for r in row.runs if (Path(r.path) / "diagnostics.csv").is_file()), None)
        read = read_diagnostics(run.path) if run else None
        if not read or not read[0]:
            continue
        series, restarts = read
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for ax, metric in zip(axes, DIAGNOSTICS):
            for space, values in series.items():
                if values[metric]:
                    ax.plot(*zip(*values[metric]), label=space)
            for step, _ in restarts:
                ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)
            ax.set_title(metric.replace("_", " ") + (" (before clipping)" if metric == "grad_norm" else ""))
            ax.set_xlabel("optimizer step")
            ax.set_yscale("log" if metric != "lr" else "linear")
            ax.legend()
        fig.suptitle(f"{row.arm} (seed {run.seed}): {len(restarts)} restarts marked")
        fig.tight_layout()
        path = Path(out_dir) / f"diagnostics_{row.arm}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written

"""The curvature section of a report: the `analyse track` results of a sweep's runs (RUN_DIR/analysis/track.csv,
written by hyperrestart.analysis.track) per arm, as the mean over the arm's runs with a min-max band, every arm on
shared axes with its lr curve (drawn by the track figure of `analyse track --against`), and a table at the last
tracked step with n stated. Runs without a track file are simply not in the section; a damaged one is skipped with a
one-line warning."""
import csv
import io
import statistics
from pathlib import Path

from hyperrestart.analysis import plots
from hyperrestart.analysis.tasks import ANALYSIS_DIR
from hyperrestart.analysis.track import TRACK_FILE, read_track
from hyperrestart.report.tables import csv_number

KEYS = ("top_eigenvalue", "negative_mass", "r_ratio")
REQUIRED = ("step", "space", "top_eigenvalue", "negative_mass")
FIGURE = "curvature.png"


def track_path(run_path):
    """Where `analyse track RUN_DIR` (without --out) writes its table."""
    return Path(run_path) / ANALYSIS_DIR / TRACK_FILE


def read_run_track(run_path, warn):
    """The rows of a run's track.csv; None when it has none, or (with a warning) when the file is damaged."""
    path = track_path(run_path)
    if not path.is_file():
        return None
    try:
        rows = read_track(path)
        if not rows:
            raise ValueError("no rows")
        missing = [c for c in REQUIRED if c not in rows[0]]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        for row in rows:
            if row["step"] is None or row["top_eigenvalue"] is None or row["negative_mass"] is None:
                raise ValueError(f"an empty value at step {row['step']}, space {row['space']}")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        warn(f"{path} is damaged ({exc}); its run is left out of the curvature section")
        return None
    return rows


def arm_bands(rows, warn):
    """{arm: (n runs, band rows)}: per space and step that every tracked run of the arm has, the mean, min and max
    of each KEYS over those runs (band rows: step, space, n, <key>, <key>_min, <key>_max)."""
    bands = {}
    for row in rows:
        tracks = [t for t in (read_run_track(r.path, warn) for r in row.runs) if t]
        if tracks:
            bands[row.arm] = (len(tracks), _band(tracks))
    return bands


def _band(tracks):
    per_run = [{(r["space"], int(r["step"])): r for r in track} for track in tracks]
    common = set(per_run[0]).intersection(*per_run[1:])
    out = []
    for space, step in sorted(common, key=lambda k: (k[1], k[0])):
        band = {"step": step, "space": space, "n": len(per_run)}
        for key in KEYS:
            values = [run[(space, step)].get(key) for run in per_run]
            values = [v for v in values if v is not None]
            band[key] = statistics.fmean(values) if values else None
            band[f"{key}_min"] = min(values) if values else None
            band[f"{key}_max"] = max(values) if values else None
            band[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(band)
    return out


def _fmt(band, key, digits):
    value = band.get(key)
    if value is None:
        return "–"
    std = band.get(f"{key}_std")
    return f"{value:.{digits}g}" + (f" ± {std:.2g}" if std is not None else "")


def section_markdown(bands, figure=None, digits=4):
    """The section: a table per arm and space at the arm's last tracked step (mean ± std over its n runs)."""
    lines = ["", "## Curvature over training (`analyse track`)", "",
             "Per arm, the Hessian summary at the last step its runs were tracked at: mean ± std over the n runs that "
             "have track results (RUN_DIR/analysis/track.csv); runs without them are not counted."
             + (f" Over training, with the lr: {figure}." if figure else ""), "",
             "| Arm | n | step | space | largest eigenvalue | spectral mass below 0 | ‖Rv‖/‖H_φv‖ |",
             "|---|---|---|---|---|---|---|"]
    for arm, (n, band) in bands.items():
        last = max(b["step"] for b in band)
        for b in band:
            if b["step"] == last:
                lines.append(f"| {arm} | {n} | {last} | {b['space']} | {_fmt(b, 'top_eigenvalue', digits)} | "
                             f"{_fmt(b, 'negative_mass', 3)} | {_fmt(b, 'r_ratio', 3)} |")
    return "\n".join(lines) + "\n"


def section_csv(bands):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arm", "step", "space", "n_runs"] + [f"{k}_{s}" for k in KEYS for s in ("mean", "min", "max")])
    for arm, (_, band) in bands.items():
        for b in band:
            writer.writerow([arm, b["step"], b["space"], b["n"]]
                            + [csv_number(b[f"{k}{s}"]) for k in KEYS for s in ("", "_min", "_max")])
    return buffer.getvalue()


def draw(rows, bands, path, title=None):
    """Every tracked arm on shared axes (the track comparison figure), each with its first run's lr curve."""
    arms = [(f"{row.arm}, n={bands[row.arm][0]}", bands[row.arm][1], row.runs[0].curves.get("lr") or [])
            for row in rows if row.arm in bands]
    return plots.track_comparison_figure(
        arms, (title + ": " if title else "") + "curvature per parameter space over training (line: mean over "
        "runs; band: min-max)", Path(path))

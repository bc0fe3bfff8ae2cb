"""A search's part of the report (`hyperrestart tune` output roots): every trial's state (finished, stopped early by
its scheduler, unfinished), last score and values, PBT's exploits, the best configuration with its score, and a
plot of the score against each searched key (search_scores.png, the numbers in search.csv).

The best configuration is the best last score among the trials that reached max_steps (a trial stopped early was
scored on fewer steps); when none did, among all trials, said so."""
import csv
import io
import json
from pathlib import Path

from hyperrestart.core.files import atomic_path, atomic_write_text
from hyperrestart.report.tables import csv_number
from hyperrestart.sweep.jobs import COMPLETE_MARKER
from hyperrestart.tune.trial import SEARCH_RECORD, STOPPED_MARKER, TRIAL_RECORD


def search_roots(paths):
    """[(root, search record)] among the report's paths: a tune output root, or the root of a trial folder."""
    found = {}
    for path in map(Path, paths):
        for root in (path, path.parent):
            record = root / SEARCH_RECORD
            if record.is_file() and root.resolve() not in found:
                found[root.resolve()] = json.loads(record.read_text(encoding="utf-8"))
    return list(found.items())


def _last_eval(run_dir, metric):
    try:
        with open(run_dir / "eval_log.csv", newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get(metric) not in (None, "")]
    except OSError:
        return None, None
    return (int(float(rows[-1]["step"])), float(rows[-1][metric])) if rows else (None, None)


def trials(root, record):
    """Every trial folder of a search: name, state, last evaluated step, score, searched values, exploits."""
    found = []
    for folder in sorted(p for p in Path(root).iterdir() if (p / TRIAL_RECORD).is_file()):
        trial = json.loads((folder / TRIAL_RECORD).read_text(encoding="utf-8"))
        step, score = _last_eval(folder, record["metric"])
        state = "finished" if (folder / COMPLETE_MARKER).exists() else \
            "stopped" if (folder / STOPPED_MARKER).exists() else "unfinished"
        found.append({"name": folder.name, "path": folder, "state": state, "step": step, "score": score,
                      "config": trial.get("config") or trial.get("initial") or {},
                      "initial": trial.get("initial") or {}, "exploits": trial.get("exploits") or []})
    return found


def best_trial(found, mode):
    """(the best trial, whether it is among finished ones): the best last score of the finished trials, else of
    all scored ones; (None, False) when no trial has a score."""
    pick = max if mode == "max" else min
    finished = [t for t in found if t["state"] == "finished" and t["score"] is not None]
    scored = finished or [t for t in found if t["score"] is not None]
    return (pick(scored, key=lambda t: t["score"]) if scored else None), bool(finished)


def _values(config, keys):
    return ", ".join(f"{k}={config.get(k):.4g}" if isinstance(config.get(k), float) else f"{k}={config.get(k)}"
                     for k in keys)


def best_lines(root):
    """The search's headline: the best configuration and its score (what `tune` prints at the end)."""
    roots = search_roots([root])
    if not roots:
        return []
    root, record = roots[0]
    found = trials(root, record)
    best, finished = best_trial(found, record["mode"])
    if best is None:
        return ["no trial has an evaluation yet"]
    keys = list(record["space"])
    line = (f"best configuration: {_values(best['config'], keys)} ({best['name']}): {record['metric']} "
            f"{best['score']:.2f} at step {best['step']}" + ("" if finished else " (no trial reached max_steps)"))
    return [line] + exploit_lines(found, keys)


def exploit_lines(found, keys):
    """One line per PBT exploit: step, the exploiting trial, its donor, old -> new values."""
    return [f"exploit at step {e['step']}: {t['name']} continued {e['donor']}'s checkpoint (its "
            + ", ".join(f"{k} {_fmt(e.get('donor_values', {}).get(k))}" for k in keys) + "); "
            + ", ".join(f"{k} {_fmt(e['old'].get(k))} -> {_fmt(e['new'].get(k))}" for k in keys)
            for t in found for e in sorted(t["exploits"], key=lambda e: e["step"])]


def search_markdown(root, record, found, digits=2):
    """The search section: one row per trial, the best configuration, the exploits."""
    keys = list(record["space"])
    scheduler = record["scheduler"]["name"]
    best, finished = best_trial(found, record["mode"])
    lines = [f"**Search {record['name']}**: {len(found)} trials, searcher {record['searcher']}, scheduler "
             f"{scheduler}, {record['mode']} {record['metric']}; {record['max_steps']} steps", "",
             "| Trial | state | step | " + " | ".join([record["metric"]] + keys) + " |",
             "|---|---|---:|" + "---:|" * (1 + len(keys))]
    for trial in found:
        state = {"stopped": f"stopped early ({scheduler})"}.get(trial["state"], trial["state"])
        score = "–" if trial["score"] is None else f"{trial['score']:.{digits}f}"
        lines.append(f"| {trial['name']}{' **best**' if trial is best else ''} | {state} | {trial['step'] or '–'} | "
                     f"{score} | " + " | ".join(f"{trial['config'].get(k):.4g}" if isinstance(trial['config'].get(k),
                                                float) else str(trial['config'].get(k)) for k in keys) + " |")
    lines.append("")
    if best is not None:
        lines.append(f"_best configuration: {_values(best['config'], keys)} ({best['name']}), {record['metric']} "
                     f"{best['score']:.{digits}f} at step {best['step']}"
                     + ("" if finished else "; no trial reached max_steps, so this is the best last score")
                     + (f"; PBT: the values it ended with, after {len(best['exploits'])} exploit(s) below"
                        if best["exploits"] else "") + "_")
    lines += [f"_{line}_" for line in exploit_lines(found, keys)]
    return "\n".join(lines) + "\n"


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_csv(record, found):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = list(record["space"])
    writer.writerow(["trial", "state", "step", record["metric"], *keys, *[f"initial_{k}" for k in keys], "exploits"])
    for t in found:
        writer.writerow([t["name"], t["state"], t["step"] if t["step"] is not None else "", csv_number(t["score"]),
                         *[csv_number(t["config"].get(k)) for k in keys],
                         *[csv_number(t["initial"].get(k)) for k in keys], len(t["exploits"])])
    return buffer.getvalue()


def plot_search(record, found, path):
    """search_scores.png: one panel per searched key, the score of each trial against its value (finished: filled,
    stopped early: hollow, the best: a star; a log axis for loguniform keys); returns the path, or None."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(record["space"])
    scored = [t for t in found if t["score"] is not None]
    if not scored:
        return None
    best, _ = best_trial(found, record["mode"])
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        kind = next(iter(record["space"][key]))
        for state, style in (("finished", dict(color="C0", label="finished")),
                             ("stopped", dict(facecolors="none", edgecolors="C1", label="stopped early")),
                             ("unfinished", dict(facecolors="none", edgecolors="grey", label="unfinished"))):
            points = [(t["config"].get(key), t["score"]) for t in scored if t["state"] == state]
            if points and kind != "choice":
                ax.scatter(*zip(*points), s=40, **style)
            elif points:
                ax.scatter([str(x) for x, _ in points], [y for _, y in points], s=40, **style)
        if best is not None:
            x = best["config"].get(key)
            ax.scatter([str(x) if kind == "choice" else x], [best["score"]], marker="*", s=250, color="C3",
                       label="best", zorder=3)
        if kind == "loguniform":
            ax.set_xscale("log")
        if kind != "choice":  # the searched range, so a clustered search shows as one
            low, high = record["space"][key][kind]
            ax.set_xlim(*((low / 1.15, high * 1.15) if kind == "loguniform" else
                          (low - 0.05 * (high - low), high + 0.05 * (high - low))))
        ax.set_xlabel(key + (" (log)" if kind == "loguniform" else ""))
        ax.set_ylabel(f"{record['metric']} at the trial's last evaluation")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{record['name']}: {record['metric']} against each searched key ({len(scored)} trials, "
                 f"{record['scheduler']['name']})", fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    atomic_write_text(path.with_name("search.csv"), search_csv(record, found))
    return path

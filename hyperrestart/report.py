"""Read finished runs back and write the paper's table layouts (Markdown + CSV) and curve figures (PNG).

Rows are arms, columns the per-task scores and the average, each cell `mean ± std` over the seeds (sample std, n-1;
`mean` alone for one seed); an arm that differs from its baseline arm only on the compare axis (restart vs
no_restart, from the sweep spec's `report.compare`) carries the difference of the means: `(+x.xx)` / `(−x.xx)`.

What a run directory holds, and what is read:
- every run: `sweep-run.json` (written by `hyperrestart sweep`: arm, seed, labels, the spec's report settings) and
  `.hyperrestart-complete.json` (finished). Without them the arm is the directory name minus a trailing seed part.
- P3 runner (`hyperrestart p3`): eval_log.csv (step, rougeL_micro, rougeL_macro), train_log.csv (step, loss, lr),
  eval/step_N.json (per-task scores). The table's score is the last evaluation's micro Rouge-L (the paper's metric).
- upstream GLUE trainers (`hyperrestart run`): test_results.json / val_results.json (hyperformer) or
  eval_results.json (hyperdecoders, patch 0017) (keys `<task>_eval_<metric>`,
  `eval_average_metrics`), else the last evaluation in trainer_state.json's log_history; curves from log_history
  (loss, learning_rate, eval_average_metrics). Per-task column = mean of the task's metrics; Avg = the upstream's
  `average_metrics` (mean over every metric value), which is what the trainers select checkpoints by.
"""
import csv
import dataclasses
import io
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path

from .errors import HyperrestartError

PUBLISHED_FILE = Path(__file__).resolve().parent / "published.json"
RUN_INFO = "sweep-run.json"
COMPLETE_MARKER = ".hyperrestart-complete.json"
P3_METRIC = "Rouge-L"
AVERAGE = "Avg"
LOSS = "Final loss"
GLUE_ORDER = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
TASK_TITLES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
               "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
NOT_METRICS = ("loss", "gen_len", "runtime", "samples_per_second", "steps_per_second", "epoch", "mem", "flos")
MINUS = "\u2212"


@dataclasses.dataclass
class RunResult:
    path: Path
    name: str
    arm: str
    seed: object
    labels: dict
    report: dict            # the sweep spec's `report:` section (compare, published, ...)
    index: int              # order in the sweep (arms are listed in first-seen order)
    finished: bool
    kind: str               # "p3" or "glue"
    scores: dict            # column -> value (P3: {"Rouge-L": x}; GLUE: {task: x, ..., "Avg": x})
    extra: dict             # more numbers for the per-run CSV (rougeL_macro, final_loss, step, ...)
    curves: dict            # "metric" | "loss" | "lr" -> [(step, value)]


# --- reading ----------------------------------------------------------------------------------------------------
def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _float(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _series(rows, key):
    points = []
    for row in rows:
        step, value = _float(row.get("step")), _float(row.get(key))
        if step is not None and value is not None:
            points.append((int(step), value))
    return points


def read_p3(run_dir, select="last"):
    evals = _read_csv(run_dir / "eval_log.csv")
    if not evals:
        raise HyperrestartError(f"{run_dir / 'eval_log.csv'} has no evaluations yet")
    rows = [r for r in evals if _float(r.get("rougeL_micro")) is not None]
    chosen = rows[-1] if select == "last" else max(rows, key=lambda r: float(r["rougeL_micro"]))
    train = _read_csv(run_dir / "train_log.csv") if (run_dir / "train_log.csv").exists() else []
    loss = _series(train, "loss")
    extra = {"step": int(float(chosen["step"])), "rougeL_macro": _float(chosen.get("rougeL_macro")),
             "final_loss": loss[-1][1] if loss else None}
    per_task = run_dir / "eval" / f"step_{extra['step']}.json"
    if per_task.exists():
        extra["num_tasks"] = len(json.loads(per_task.read_text()).get("per_task", {}))
    curves = {"metric": _series(rows, "rougeL_micro"), "loss": loss, "lr": _series(train, "lr")}
    return "p3", {P3_METRIC: float(chosen["rougeL_micro"])}, extra, curves


def glue_scores(metrics):
    """{'rte_eval_acc': 70, 'mrpc_eval_f1': 80, 'mrpc_eval_acc': 70, 'eval_average_metrics': 73.3} ->
    {'rte': 70, 'mrpc': 75, 'Avg': 73.3}; Avg falls back to the mean over every metric value (upstream's rule)."""
    per_task, values = {}, []
    for key, value in metrics.items():
        number = _float(value)
        if number is None or isinstance(value, bool):
            continue
        match = re.fullmatch(r"(?:(?:eval|test|val)_)?(?P<task>[A-Za-z0-9]+(?:_[a-z]+)?)_(?:eval|test|val)_(?P<m>.+)",
                             key)
        if not match or any(word in match.group("m") for word in NOT_METRICS):
            continue
        per_task.setdefault(match.group("task"), []).append(number)
        values.append(number)
    scores = {task: statistics.fmean(vals) for task, vals in per_task.items()}
    average = next((_float(metrics[k]) for k in ("eval_average_metrics", "test_average_metrics",
                                                 "val_average_metrics", "average_metrics") if k in metrics), None)
    if average is None and values:
        average = statistics.fmean(values)
    if average is not None:
        scores[AVERAGE] = average
    return scores


def _latest_state(run_dir):
    best = None
    for path in [run_dir / "trainer_state.json", *run_dir.glob("checkpoint-*/trainer_state.json")]:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if best is None or state.get("global_step", 0) >= best.get("global_step", 0):
            best = state
    return best


def read_glue(run_dir, split="test"):
    # hyperformer writes val_/test_results.json; hyperdecoders (patch 0017-metric-files) eval_/test_results.json
    files = {"test": ["test_results.json", "val_results.json", "eval_results.json"],
             "val": ["val_results.json", "eval_results.json", "test_results.json"]}
    state = _latest_state(run_dir) or {}
    history = state.get("log_history", [])
    scores, source = {}, None
    for name in files[split]:
        if (run_dir / name).exists():
            scores = glue_scores(json.loads((run_dir / name).read_text()))
            if scores:
                source = name
                break
    if not scores:
        evals = [entry for entry in history if glue_scores(entry)]
        if evals:
            scores, source = glue_scores(evals[-1]), "trainer_state.json"
    if not scores:
        raise HyperrestartError(f"{run_dir}: no metrics (looked for {', '.join(files[split])} and evaluations in "
                                f"trainer_state.json); did the run evaluate (do_eval/do_test)?")
    loss = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]
    lr = [(int(e["step"]), float(e["learning_rate"])) for e in history if "learning_rate" in e and "step" in e]
    if not lr and (run_dir / "lr_trace.csv").exists():
        lr = _series(_read_csv(run_dir / "lr_trace.csv"), "learning_rate")
    metric = [(int(e["step"]), glue_scores(e)[AVERAGE]) for e in history
              if "step" in e and AVERAGE in glue_scores(e)]
    extra = {"source": source, "step": state.get("global_step"), "final_loss": loss[-1][1] if loss else None}
    return "glue", scores, extra, {"metric": metric, "loss": loss, "lr": lr}


_SEED_SUFFIX = re.compile(r"[_-]+(?:seed|s)[-_=]?(\d+)$")


def load_run(run_dir, split="test", select="last"):
    run_dir = Path(run_dir)
    info = {}
    if (run_dir / RUN_INFO).exists():
        info = json.loads((run_dir / RUN_INFO).read_text())
    if (run_dir / "eval_log.csv").exists():
        kind, scores, extra, curves = read_p3(run_dir, select)
    else:
        kind, scores, extra, curves = read_glue(run_dir, split)
    name = info.get("name", run_dir.name)
    seed, arm = info.get("seed"), info.get("arm")
    if arm is None:
        match = _SEED_SUFFIX.search(name)
        arm = name[:match.start()] if match else name
        if seed is None and match:
            seed = int(match.group(1))
    if seed is None:
        for config in ("sweep-config.json", "config.json", "run_config.json"):
            if (run_dir / config).exists():
                data = json.loads((run_dir / config).read_text())
                seed = data.get("seed", data.get("args", {}).get("seed") if isinstance(data.get("args"), dict)
                                else None)
                if seed is not None:
                    break
    return RunResult(run_dir, name, arm, seed, info.get("labels", {}), info.get("report") or {},
                     int(info.get("index", 10 ** 6)), (run_dir / COMPLETE_MARKER).exists() or not info,
                     kind, scores, extra, curves)


def is_run_dir(path):
    return any((path / name).exists() for name in (RUN_INFO, "eval_log.csv", "trainer_state.json",
                                                   "test_results.json", "val_results.json", "eval_results.json"))


def find_runs(paths):
    """Run directories among `paths`: each path is a run directory or a folder of them (e.g. a sweep's output root)."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise HyperrestartError(f"{path} is not a directory; pass run directories or a sweep's --output-root")
        if is_run_dir(path):
            found.append(path)
            continue
        children = sorted(child for child in path.iterdir() if child.is_dir() and is_run_dir(child))
        if not children:
            raise HyperrestartError(f"{path} holds no runs (no {RUN_INFO}, eval_log.csv, trainer_state.json or "
                                    f"*_results.json in it or its subfolders)")
        found.extend(children)
    return found


def load_runs(paths, split="test", select="last", include_unfinished=False, warn=print):
    results = []
    for run_dir in find_runs(paths):
        try:
            result = load_run(run_dir, split, select)
        except HyperrestartError as exc:
            warn(f"skipping {run_dir}: {exc}")
            continue
        if not result.finished and not include_unfinished:
            warn(f"skipping {run_dir}: not finished (no {COMPLETE_MARKER}); --include-unfinished to use it")
            continue
        results.append(result)
    if not results:
        raise HyperrestartError("no finished runs with metrics among " + ", ".join(map(str, paths)))
    return results


# --- aggregating ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    arm: str
    runs: list
    mean: dict
    std: dict
    delta: dict             # column -> mean(arm) - mean(baseline arm); empty when no baseline
    baseline: str = None
    published: dict = None  # column -> (value, std or None)


def columns_of(results):
    names = []
    for result in results:
        for key in result.scores:
            if key not in names:
                names.append(key)
    order = {task: i for i, task in enumerate(GLUE_ORDER)}
    tasks = sorted((n for n in names if n not in (AVERAGE, LOSS)), key=lambda n: (order.get(n, len(order)), n))
    return tasks + [n for n in (AVERAGE, LOSS) if n in names]


def _partner(result, results_by_arm, compare):
    """The baseline arm of result's arm: same labels except compare.axis = compare.baseline."""
    if compare:
        axis, baseline = compare["axis"], str(compare["baseline"])
        if result.labels.get(axis) in (None, baseline):
            return None
        wanted = dict(result.labels, **{axis: baseline})
        for arm, members in results_by_arm.items():
            labels = members[0].labels
            if all(labels.get(k) == v for k, v in wanted.items() if k in labels) and labels.get(axis) == baseline:
                return arm
        return None
    # no spec: restart <-> no_restart by name
    if "restart" in result.arm and "no_restart" not in result.arm and "no-restart" not in result.arm:
        for candidate in (result.arm.replace("restart", "no_restart"), result.arm.replace("restart", "no-restart")):
            if candidate in results_by_arm:
                return candidate
    return None


def aggregate(results, published=None, with_loss=False):
    """Rows per arm (first-seen order); with_loss adds the final training loss as a last column."""
    results = sorted(results, key=lambda r: (r.index, r.name))
    if with_loss:
        for result in results:
            if result.extra.get("final_loss") is not None:
                result.scores[LOSS] = result.extra["final_loss"]
    by_arm = {}
    for result in results:
        by_arm.setdefault(result.arm, []).append(result)
    columns = columns_of(results)
    rows = []
    for arm, members in by_arm.items():
        mean, std = {}, {}
        for column in columns:
            values = [m.scores[column] for m in members if column in m.scores]
            if values:
                mean[column] = statistics.fmean(values)
                std[column] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(Row(arm, members, mean, std, {}))
    means = {row.arm: row.mean for row in rows}
    for row in rows:
        partner = _partner(row.runs[0], by_arm, row.runs[0].report.get("compare"))
        if partner and partner != row.arm:
            row.baseline = partner
            row.delta = {c: row.mean[c] - means[partner][c] for c in row.mean if c in means[partner]}
        if published:
            entry = published.get("arms", {}).get(row.arm)
            if entry:
                row.published = {c: (entry[c], entry.get(f"{c}_std")) for c in columns if c in entry}
    return columns, rows


def load_published(table):
    data = json.loads(PUBLISHED_FILE.read_text())
    if table not in data or table.startswith("_"):
        known = ", ".join(k for k in data if not k.startswith("_"))
        raise HyperrestartError(f"no published numbers for {table!r} in {PUBLISHED_FILE.name}; known: {known}")
    return data[table]


# --- formatting -------------------------------------------------------------------------------------------------
def fmt_value(mean, std=None, digits=2):
    text = f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def fmt_delta(delta, digits=2):
    """(+1.23) / (−0.45): the sign always shown, a true minus sign for negatives."""
    rounded = round(delta, digits)
    sign = "+" if rounded >= 0 else MINUS
    return f"({sign}{abs(rounded):.{digits}f})"


def column_title(column):
    return TASK_TITLES.get(column, column)


def markdown_table(columns, rows, digits=2, title=None, show_published=False):
    head = ["Arm", "n"] + [column_title(c) for c in columns]
    if show_published:
        head += [f"Paper {column_title(c)}" for c in columns if any(r.published and c in r.published for r in rows)]
    pub_columns = [c for c in columns if any(r.published and c in r.published for r in rows)] if show_published else []
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in rows:
        cells = [row.arm, str(len(row.runs))]
        for column in columns:
            if column not in row.mean:
                cells.append("–")
                continue
            cell = fmt_value(row.mean[column], row.std.get(column), digits)
            if column in row.delta:
                cell += " " + fmt_delta(row.delta[column], digits)
            cells.append(cell)
        for column in pub_columns:
            value = (row.published or {}).get(column)
            cells.append(fmt_value(value[0], value[1], max(digits, _decimals(value[0]))) if value else "–")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"mean ± sample std over the n seeds; ({'+'}x)/({MINUS}x) = difference of the means vs the baseline arm"]
    baselines = sorted({f"{r.arm} vs {r.baseline}" for r in rows if r.baseline})
    if baselines:
        notes.append("deltas: " + "; ".join(baselines))
    return "\n".join(lines) + "\n\n" + "\n".join(f"_{n}_" for n in notes) + "\n"


def _decimals(value):
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 2


def table_csv(columns, rows, show_published=False):
    """One line per arm: n, then per column mean, std, delta (and published, published_std)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    head = ["arm", "n", "baseline"]
    for column in columns:
        head += [f"{column}_mean", f"{column}_std", f"{column}_delta"]
        if show_published:
            head += [f"{column}_published", f"{column}_published_std"]
    writer.writerow(head)
    for row in rows:
        line = [row.arm, len(row.runs), row.baseline or ""]
        for column in columns:
            line += [_num(row.mean.get(column)), _num(row.std.get(column)), _num(row.delta.get(column))]
            if show_published:
                value = (row.published or {}).get(column)
                line += [_num(value[0]) if value else "", _num(value[1]) if value else ""]
        writer.writerow(line)
    return buffer.getvalue()


def runs_csv(columns, results):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extras = sorted({k for r in results for k in r.extra})
    writer.writerow(["run", "arm", "seed", "finished", "kind", *columns, *extras, "path"])
    for r in sorted(results, key=lambda r: (r.index, r.name)):
        writer.writerow([r.name, r.arm, "" if r.seed is None else r.seed, int(r.finished), r.kind,
                         *[_num(r.scores.get(c)) for c in columns], *[_num(r.extra.get(k)) for k in extras],
                         _display_path(r.path)])
    return buffer.getvalue()


def _display_path(path):
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _num(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return value


# --- figures ----------------------------------------------------------------------------------------------------
def _mean_curve(curves):
    """Mean over seeds at the steps every seed has."""
    common = None
    for curve in curves:
        steps = {s for s, _ in curve}
        common = steps if common is None else common & steps
    if not common:
        return []
    maps = [dict(curve) for curve in curves]
    return [(step, statistics.fmean(m[step] for m in maps)) for step in sorted(common)]


def _smooth(points, window):
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


def plot_curves(rows, kind, path, title=None, metric_label="metric"):
    """Per arm the seed-mean `kind` curve ("metric" or "loss"), the arm's lr on a second axis (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    lr_ax = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for i, row in enumerate(rows):
        color = colors[i % len(colors)]
        curve = _mean_curve([r.curves.get(kind) or [] for r in row.runs])
        if kind == "loss":
            curve = _smooth(curve, max(1, len(curve) // 100))
        if curve:
            ax.plot(*zip(*curve), color=color, label=row.arm, marker="o" if len(curve) < 30 else None, markersize=3)
            drawn += 1
        lr = row.runs[0].curves.get("lr") or []
        if lr:
            lr_ax.plot(*zip(*lr), color=color, linestyle="--", linewidth=0.8, alpha=0.6)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(metric_label if kind == "metric" else "training loss")
    lr_ax.set_ylabel("learning rate (dashed)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or ("evaluation" if kind == "metric" else "training loss"))
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# --- entry point ------------------------------------------------------------------------------------------------
def _write(path, text):
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_report(paths, out=None, published=None, split="test", select="last", digits=2, title=None,
                 include_unfinished=False, figures=True, with_loss=False, warn=None):
    """Load runs, aggregate, write table.md/table.csv/runs.csv (+ figures) into `out`; returns the Markdown."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    results = load_runs(paths, split, select, include_unfinished, warn)
    spec_report = next((r.report for r in results if r.report), {})
    table = published if published not in (None, True) else spec_report.get("published")
    if published is True and not table:
        raise HyperrestartError("--published: the runs do not say which paper table they reproduce (the sweep "
                                "spec's report.published); pass --published TABLE (table1, table2, table5)")
    published_data = load_published(table) if published and table else None
    columns, rows = aggregate(results, published_data, with_loss)
    title = title or spec_report.get("title") or (published_data or {}).get("title")
    markdown = markdown_table(columns, rows, digits, title, show_published=published_data is not None)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "table.md", markdown)
        _write(out / "table.csv", table_csv(columns, rows, show_published=published_data is not None))
        _write(out / "runs.csv", runs_csv(columns, results))
        if figures:
            label = P3_METRIC if results[0].kind == "p3" else "average metric"
            plot_curves(rows, "metric", out / "metric_curves.png", title, label)
            plot_curves(rows, "loss", out / "loss_curves.png", title)
    return markdown

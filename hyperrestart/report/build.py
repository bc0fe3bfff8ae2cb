"""Read finished runs back and write the paper's table layouts (Markdown + CSV) and curve figures (PNG).

Rows are arms, columns the per-task scores and the average, each cell `mean ± std` over the seeds (sample std, n-1;
`mean` alone for one seed); an arm that differs from its baseline arm only on the compare axis (restart vs
no_restart, from the sweep spec's `report.compare`) carries the difference of the means: `(+x.xx)` / `(−x.xx)`.

What a run directory holds, and what is read (a file that does not parse skips its run with a warning; an
auxiliary one, per-task scores or a checkpoint's trainer_state.json, is ignored with a warning):
- every run: `sweep-run.json` (written by `hyperrestart sweep`: arm, seed, labels, the spec's report settings) and
  `.hyperrestart-complete.json` (finished). Without them the arm is the directory name minus a trailing seed part,
  the seed that part or `hyperrestart_config.json`'s (the resolved config of `hyperrestart run`).
- P3 runner (`hyperrestart p3`): eval_log.csv (step, rougeL_micro, rougeL_macro) on the runner's --eval_split
  (run_config.json; validation = the eval split), train_log.csv (step, loss, lr = the lr the step applied),
  eval/step_N.json (per-task scores). The table's score is the last evaluation's micro Rouge-L (the paper's metric).
- upstream GLUE trainers (`hyperrestart run`): test split: test_results.json; eval split: val_results.json
  (hyperformer) or eval_results.json (hyperdecoders, patch 0017), else the last evaluation in trainer_state.json's
  log_history (keys `<task>_eval_<metric>`, `eval_average_metrics`); curves from log_history (loss,
  eval_average_metrics) and lr_trace.csv. Per-task column = mean of the task's metrics; Avg = the upstream's
  `average_metrics` (mean over every metric value), which is what the trainers select checkpoints by.
Every run of a table is scored on one split (choose_split), so no arm mixes test and eval numbers. Curves are
indexed by optimizer step k; the lr at k is the lr optimizer step k applied.
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

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_text

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
    splits: dict            # split ("test" | "eval") -> (scores, source file): every split the run has metrics for
    extra: dict             # more numbers for the per-run CSV (rougeL_macro, final_loss, step, ...)
    curves: dict            # "metric" | "loss" | "lr" -> [(step, value)]; lr: the lr optimizer step `step` applied
    split: str = None       # the split the table uses (choose_split)
    scores: dict = None     # column -> value in that split (P3: {"Rouge-L": x}; GLUE: {task: x, ..., "Avg": x})


# --- reading ----------------------------------------------------------------------------------------------------
def _read_json(path):
    """A JSON file's content; HyperrestartError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise HyperrestartError(f"{path} is not valid JSON ({exc}); the run is incomplete or the file is damaged") \
            from None
    except OSError as exc:
        raise HyperrestartError(f"cannot read {path}: {exc.strerror}") from None


def _read_json_or_warn(path, warn):
    """An auxiliary file: None (with a warning naming it) when it is damaged, so the run's other files still count."""
    try:
        return _read_json(path)
    except HyperrestartError as exc:
        warn(f"ignoring {exc}")
        return None


def _read_csv(path):
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HyperrestartError(f"cannot read {path} as CSV ({exc})") from None


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


def _lr_applied(rows):
    """[(step k, lr optimizer step k applied)] from CSV rows (the project's convention): the `lr_applied` column
    as it is; a trace with only the Hugging Face `learning_rate` column (the lr after step k, i.e. the one step k+1
    applies) is moved one step on."""
    if rows and "lr_applied" in rows[0]:
        return _series(rows, "lr_applied")
    return [(step + 1, lr) for step, lr in _series(rows, "learning_rate")]


P3_SPLITS = {"validation": "eval", "eval": "eval", "val": "eval", "dev": "eval"}


def read_p3(run_dir, select="last", warn=print):
    """P3 runner logs; the split is the runner's --eval_split (run_config.json; default validation = eval)."""
    evals = _read_csv(run_dir / "eval_log.csv")
    rows = [r for r in evals if _float(r.get("rougeL_micro")) is not None]
    if not rows:
        raise HyperrestartError(f"{run_dir / 'eval_log.csv'} has no evaluations yet")
    chosen = rows[-1] if select == "last" else max(rows, key=lambda r: float(r["rougeL_micro"]))
    train = _read_csv(run_dir / "train_log.csv") if (run_dir / "train_log.csv").exists() else []
    loss = _series(train, "loss")
    extra = {"step": int(float(chosen["step"])), "rougeL_macro": _float(chosen.get("rougeL_macro")),
             "final_loss": loss[-1][1] if loss else None}
    per_task = run_dir / "eval" / f"step_{extra['step']}.json"
    if per_task.exists():
        data = _read_json_or_warn(per_task, warn)
        if isinstance(data, dict):
            extra["num_tasks"] = len(data.get("per_task", {}))
    eval_split = "validation"
    if (run_dir / "run_config.json").exists():
        info = _read_json_or_warn(run_dir / "run_config.json", warn) or {}
        eval_split = (info.get("args") or {}).get("eval_split") or eval_split
    # the P3 runner's `lr` column is the lr read before optimizer.step(): the lr step k applied
    lr = _series(train, "lr_applied") if train and "lr_applied" in train[0] else _series(train, "lr")
    curves = {"metric": _series(rows, "rougeL_micro"), "loss": loss, "lr": lr}
    split = P3_SPLITS.get(eval_split, eval_split)
    return "p3", {split: ({P3_METRIC: float(chosen["rougeL_micro"])}, "eval_log.csv")}, extra, curves


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


def _latest_state(run_dir, warn):
    best = None
    for path in [run_dir / "trainer_state.json", *run_dir.glob("checkpoint-*/trainer_state.json")]:
        if not path.exists():
            continue
        state = _read_json_or_warn(path, warn)
        if isinstance(state, dict) and (best is None or state.get("global_step", 0) >= best.get("global_step", 0)):
            best = state
    return best


# results files per split: hyperformer writes val_/test_results.json, hyperdecoders (patch 0017) eval_/test_results.json
GLUE_FILES = {"test": ("test_results.json",), "eval": ("val_results.json", "eval_results.json")}


def read_glue(run_dir, warn=print):
    """Metrics of every split the run has (a damaged results file is an error: the run is skipped, not read from
    another split); evaluations in trainer_state.json count as the eval split when no eval results file exists."""
    state = _latest_state(run_dir, warn) or {}
    history = state.get("log_history", [])
    splits = {}
    for split, names in GLUE_FILES.items():
        for name in names:
            if (run_dir / name).exists():
                scores = glue_scores(_read_json(run_dir / name))
                if scores:
                    splits[split] = (scores, name)
                    break
    for entry in reversed(history):
        split = "test" if any(str(k).startswith("test_") for k in entry) else "eval"
        if split not in splits and glue_scores(entry):
            splits[split] = (glue_scores(entry), "trainer_state.json")
    if not splits:
        raise HyperrestartError(f"{run_dir}: no metrics (looked for {', '.join(n for v in GLUE_FILES.values() for n in v)}"
                                f" and evaluations in trainer_state.json); did the run evaluate (do_eval/do_test)?")
    last = state.get("global_step")
    loss = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]
    trace = _read_csv(run_dir / "lr_trace.csv") if (run_dir / "lr_trace.csv").exists() else []
    if trace and "lr_applied" in trace[0]:
        lr = _lr_applied(trace)
    else:  # log_history's learning_rate at step k is the lr after step k: step k+1 applied it
        lr = _lr_applied([e for e in history if "learning_rate" in e and "step" in e]) or _lr_applied(trace)
    if last is not None:
        lr = [(step, value) for step, value in lr if step <= last]
    metric = [(int(e["step"]), glue_scores(e)[AVERAGE]) for e in history
              if "step" in e and AVERAGE in glue_scores(e)]
    extra = {"step": last, "final_loss": loss[-1][1] if loss else None}
    return "glue", splits, extra, {"metric": metric, "loss": loss, "lr": lr}


_SEED_SUFFIX = re.compile(r"[_-]+(?:seed|s)[-_=]?(\d+)$")
# where a run's seed is when sweep-run.json does not say: the sweep's P3 config, `hyperrestart run`'s resolved config
# (hyperrestart_config.json; its config.json is the trainer's model config), the P3 runner's record
SEED_FILES = ("sweep-config.json", "hyperrestart_config.json", "run_config.json")


def load_run(run_dir, select="last", warn=print):
    """One run directory -> RunResult; HyperrestartError (naming the file) when it cannot be used."""
    run_dir = Path(run_dir)
    info = _read_json(run_dir / RUN_INFO) if (run_dir / RUN_INFO).exists() else {}
    if (run_dir / "eval_log.csv").exists():
        kind, splits, extra, curves = read_p3(run_dir, select, warn)
    else:
        kind, splits, extra, curves = read_glue(run_dir, warn)
    name = info.get("name", run_dir.name)
    seed, arm = info.get("seed"), info.get("arm")
    if arm is None:
        match = _SEED_SUFFIX.search(name)
        arm = name[:match.start()] if match else name
        if seed is None and match:
            seed = int(match.group(1))
    for config in SEED_FILES:
        if seed is not None:
            break
        if (run_dir / config).exists():
            data = _read_json_or_warn(run_dir / config, warn)
            if isinstance(data, dict):
                args = data.get("args") if isinstance(data.get("args"), dict) else {}
                seed = data.get("seed", args.get("seed"))
    return RunResult(run_dir, name, arm, seed, info.get("labels", {}), info.get("report") or {},
                     int(info.get("index", 10 ** 6)), (run_dir / COMPLETE_MARKER).exists() or not info,
                     kind, splits, extra, curves)


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


def load_runs(paths, select="last", include_unfinished=False, warn=print, skipped=None):
    """Every usable run among `paths`; a run that cannot be read (damaged file, no metrics) or has not finished is
    skipped with a warning naming it (and its name appended to `skipped`). An error when none is left."""
    results = []
    skipped = [] if skipped is None else skipped
    for run_dir in find_runs(paths):
        try:
            result = load_run(run_dir, select, warn)
        except HyperrestartError as exc:
            warn(f"skipping {run_dir}: {exc}")
            skipped.append(run_dir.name)
            continue
        if not result.finished and not include_unfinished:
            warn(f"skipping {run_dir}: not finished (no {COMPLETE_MARKER}); --include-unfinished to use it")
            skipped.append(run_dir.name)
            continue
        results.append(result)
    if not results:
        raise HyperrestartError("no finished runs with metrics among " + ", ".join(map(str, paths)))
    return results


SPLIT_PREFERENCE = ("test", "eval")
SPLIT_NAMES = {"test": "test", "eval": "eval", "val": "eval", "validation": "eval"}


def choose_split(results, split="auto", warn=print, skipped=None):
    """Score every run on one split, so no arm mixes test and eval numbers: `auto` takes test when every run has
    it, else eval when every run has that, else the split most runs have (test on a tie). Runs without the chosen
    split are skipped with a warning. Returns (kept results, split)."""
    skipped = [] if skipped is None else skipped
    if split == "auto":
        have = {s: sum(s in r.splits for r in results) for s in
                dict.fromkeys(SPLIT_PREFERENCE + tuple(s for r in results for s in r.splits))}
        split = max(have, key=lambda s: (have[s], -list(have).index(s)))
    else:
        split = SPLIT_NAMES.get(split, split)
    kept = []
    for result in results:
        if split not in result.splits:
            warn(f"skipping {result.path}: it has no {split} metrics (only {', '.join(sorted(result.splits))}) and "
                 f"the table shows the {split} split for every run" + ("" if len(result.splits) != 1 else
                 f"; --split {next(iter(result.splits))} reports that split for every run instead"))
            skipped.append(result.name)
            continue
        result.split = split
        result.scores, result.extra["source"] = dict(result.splits[split][0]), result.splits[split][1]
        kept.append(result)
    if not kept:
        raise HyperrestartError(f"no run has {split} metrics; choose another --split")
    return kept, split


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
    paper_row: str = None   # the paper's name of the matching published row


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


def aggregate(results, with_loss=False):
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
    return columns, rows


def match_published(rows, columns, published):
    """Put the paper's numbers on the rows whose arm a published row names (published.json `arms`, any case);
    returns notes for every arm without a published row, every published row without an arm, and a published metric
    that is not a column here, so nothing goes missing silently."""
    title = published.get("title", "the published table").split(":")[0]
    notes, matched = [], set()
    by_arm = {arm.lower(): entry for entry in published["rows"] for arm in entry["arms"]}
    for row in rows:
        entry = by_arm.get(row.arm.lower())
        if entry is None:
            continue
        matched.add(entry["row"])
        row.paper_row = entry["row"]
        row.published = {c: (entry[c], entry.get(f"{c}_std")) for c in columns if c in entry}
    metric = published.get("metric")
    if metric and metric not in columns:
        notes.append(f"{title} reports {metric}, which is not a column of these runs: no published numbers shown")
    for row in rows:
        if row.paper_row is None:
            notes.append(f"arm {row.arm} has no published counterpart in {title}")
    for entry in published["rows"]:
        if entry["row"] not in matched:
            value = fmt_value(entry[metric], entry.get(f"{metric}_std"), _decimals(entry[metric])) \
                if metric in entry else "?"
            notes.append(f"{title} row \"{entry['row']}\" ({metric} {value}) has no arm here (it matches an arm "
                         f"named {' or '.join(entry['arms'])})")
    return notes


def load_published(table):
    """The published table `table` (table2, Table 2, 2 ...) from published.json."""
    data = json.loads(PUBLISHED_FILE.read_text())
    key = re.sub(r"\s+", "", str(table)).lower()
    key = f"table{key}" if key.isdigit() else key
    if key not in data or key.startswith("_"):
        known = ", ".join(k for k in data if not k.startswith("_"))
        raise HyperrestartError(f"no published numbers for {table!r} in {PUBLISHED_FILE.name}; known: {known}")
    return data[key]


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


def markdown_table(columns, rows, digits=2, title=None, show_published=False, notes=()):
    """The table; with show_published a `Paper row` column and the paper's value per column; `notes` go below."""
    pub_columns = [c for c in columns if any(r.published and c in r.published for r in rows)] if show_published else []
    head = ["Arm", "n"] + [column_title(c) for c in columns]
    if show_published:
        head += ["Paper row"] + [f"Paper {column_title(c)}" for c in pub_columns]
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
        if show_published:
            cells.append(row.paper_row or "–")
        for column in pub_columns:
            value = (row.published or {}).get(column)
            cells.append(fmt_value(value[0], value[1], max(digits, _decimals(value[0]))) if value else "–")
        lines.append("| " + " | ".join(cells) + " |")
    below = [f"mean ± sample std over the n seeds; ({'+'}x)/({MINUS}x) = difference of the means vs the baseline arm"]
    baselines = sorted({f"{r.arm} vs {r.baseline}" for r in rows if r.baseline})
    if baselines:
        below.append("deltas: " + "; ".join(baselines))
    below.extend(notes)
    return "\n".join(lines) + "\n\n" + "\n".join(f"_{n}_" for n in below) + "\n"


def _decimals(value):
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 2


def table_csv(columns, rows, show_published=False):
    """One line per arm: n, then per column mean, std, delta (and published, published_std)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    head = ["arm", "n", "split", "baseline"] + (["paper_row"] if show_published else [])
    for column in columns:
        head += [f"{column}_mean", f"{column}_std", f"{column}_delta"]
        if show_published:
            head += [f"{column}_published", f"{column}_published_std"]
    writer.writerow(head)
    for row in rows:
        line = [row.arm, len(row.runs), row.runs[0].split or "", row.baseline or ""]
        line += [row.paper_row or ""] if show_published else []
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
    writer.writerow(["run", "arm", "seed", "finished", "kind", "split", *columns, *extras, "path"])
    for r in sorted(results, key=lambda r: (r.index, r.name)):
        writer.writerow([r.name, r.arm, "" if r.seed is None else r.seed, int(r.finished), r.kind, r.split,
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
            writer.writerow([row.arm, step, _num(mean), _num(low), _num(high), n, _num(lr.get(step))])
    return buffer.getvalue()


def draw_curves(rows, bands, kind, title=None, metric_label="metric"):
    """The figure: per arm the mean over seeds (line) and the min–max over seeds (shaded band), and the lr each
    optimizer step applied on a second axis (dashed); None when no arm has a curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not bands:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
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
            lr_ax.plot(*zip(*lr), color=color, linestyle="--", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric_label if kind == "metric" else "training loss")
    lr_ax.set_ylabel("learning rate applied at the step (dashed)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.legend(loc="best", fontsize="small")
    name = "evaluation" if kind == "metric" else "training loss"
    ax.set_title(f"{title or name}\nline: mean over seeds; band: min–max over seeds", fontsize="medium")
    fig.tight_layout()
    return fig


def plot_curves(rows, kind, path, title=None, metric_label="metric"):
    """Write PATH (PNG) and PATH with .csv (the plotted numbers); returns the PNG path, or None without curves."""
    import matplotlib.pyplot as plt

    bands = curve_bands(rows, kind)
    fig = draw_curves(rows, bands, kind, title, metric_label)
    if fig is None:
        return None
    path = Path(path)
    _write(path.with_suffix(".csv"), curves_csv(rows, bands))
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# --- entry point ------------------------------------------------------------------------------------------------
def _write(path, text):
    atomic_write_text(path, text)


def build_report(paths, out=None, published=None, split=None, select="last", digits=2, title=None,
                 include_unfinished=False, figures=True, with_loss=False, warn=None):
    """Load runs, score them on one split, aggregate, write table.md/table.csv/runs.csv (+ figures and their CSVs)
    into `out`; returns the Markdown. Unusable runs are skipped with a warning (and listed under the table);
    HyperrestartError when no run is left. split: auto (default: the spec's report.split, else auto), test, eval."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    skipped = []
    results = load_runs(paths, select, include_unfinished, warn, skipped)
    spec_report = next((r.report for r in results if r.report), {})
    results, split = choose_split(results, split or spec_report.get("split") or "auto", warn, skipped)
    table = published if published not in (None, True) else spec_report.get("published")
    if published is True and not table:
        raise HyperrestartError("--published: the runs do not say which paper table they reproduce (the sweep "
                                "spec's report.published); pass --published TABLE (table1, table2, table5)")
    published_data = load_published(table) if published and table else None
    columns, rows = aggregate(results, with_loss)
    notes = match_published(rows, columns, published_data) if published_data else []
    sources = sorted({r.extra["source"] for r in results})
    notes.insert(0, f"scores: the {split} split of every run (from {', '.join(sources)})")
    if skipped:
        notes.append(f"{len(skipped)} run(s) skipped (see the warnings): {', '.join(skipped)}")
    title = title or spec_report.get("title") or (published_data or {}).get("title")
    markdown = markdown_table(columns, rows, digits, title, show_published=published_data is not None, notes=notes)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "table.md", markdown)
        _write(out / "table.csv", table_csv(columns, rows, show_published=published_data is not None))
        _write(out / "runs.csv", runs_csv(columns, results))
        if figures:
            label = P3_METRIC if results[0].kind == "p3" else "average metric (eval)"
            plot_curves(rows, "metric", out / "metric_curves.png", title, label)
            plot_curves(rows, "loss", out / "loss_curves.png", title)
    return markdown

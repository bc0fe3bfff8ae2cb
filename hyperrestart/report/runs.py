"""Reading finished runs back: what each run folder holds, its scores and curves, and one split per table.

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
import json
import math
import re
import statistics
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.sweep.jobs import COMPLETE_MARKER, RUN_INFO
from hyperrestart.tune.trial import STOPPED_MARKER

P3_METRIC = "Rouge-L"
AVERAGE = "Avg"
NOT_METRICS = ("loss", "gen_len", "runtime", "samples_per_second", "steps_per_second", "epoch", "mem", "flos")

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
        return json.loads(Path(path).read_text(encoding="utf-8"))
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
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HyperrestartError(f"cannot read {path} as CSV ({exc})") from None


def _float(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value):
    """A metric as a float, NaN and infinities included (so they can be flagged), or None when it is no number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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
    rows = [r for r in evals if _number(r.get("rougeL_micro")) is not None]
    if not rows:
        raise HyperrestartError(f"{run_dir / 'eval_log.csv'} has no evaluations yet")
    chosen = rows[-1] if select == "last" else max(rows, key=lambda r: _float(r["rougeL_micro"]) or -math.inf)
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
        number = _number(value)  # NaN kept: the run is flagged and excluded from averages (exclude_non_finite)
        if number is None:
            continue
        match = re.fullmatch(r"(?:(?:eval|test|val)_)?(?P<task>[A-Za-z0-9]+(?:_[a-z]+)?)_(?:eval|test|val)_(?P<m>.+)",
                             key)
        if not match or any(word in match.group("m") for word in NOT_METRICS):
            continue
        per_task.setdefault(match.group("task"), []).append(number)
        values.append(number)
    scores = {task: statistics.fmean(vals) for task, vals in per_task.items()}
    average = next((_number(metrics[k]) for k in ("eval_average_metrics", "test_average_metrics",
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
              if "step" in e and _float(glue_scores(e).get(AVERAGE)) is not None]
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
    stopped = (run_dir / STOPPED_MARKER).exists()  # a search trial its scheduler stopped early: done, not failed
    if stopped:
        extra["stopped_early_at"] = extra.get("step")
    return RunResult(run_dir, name, arm, seed, info.get("labels", {}), info.get("report") or {},
                     int(info.get("index", 10 ** 6)), (run_dir / COMPLETE_MARKER).exists() or stopped or not info,
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


def exclude_non_finite(results, warn=print, skipped=None):
    """Runs whose scores hold NaN or an infinity (a diverged run, a failed evaluation) are flagged with a warning
    naming them and kept out of every average; returns the others (an error when none is left)."""
    skipped = [] if skipped is None else skipped
    kept = []
    for result in results:
        bad = {column: value for column, value in result.scores.items() if not math.isfinite(value)}
        if bad:
            warn(f"excluding {result.path} from the averages: its {result.split} metrics are not numbers ("
                 + ", ".join(f"{column}={value}" for column, value in bad.items())
                 + f", from {result.extra.get('source')}); the run diverged or its evaluation failed")
            skipped.append(f"{result.name} (NaN metrics)")
            continue
        kept.append(result)
    if not kept:
        raise HyperrestartError("every run's metrics are NaN or infinite; nothing to average")
    return kept

"""The paper's P3 metric and run summaries.

The metric's single source is the runner (overlay/hyperdecoders/hyperdecoder/p3_runner/evaluation.py, which must
also work inside the hyperdecoders tree without this package); it is loaded from there (hyperrestart.p3.runner).
"""
import csv
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.p3.runner import runner_module  # noqa: F401  (the runner's loader, imported here by callers)


def rouge_l(predictions, references, tasks=None):
    """rouge_score RougeScorer(["rougeL"], use_stemmer=True) F-measure, mean x 100 (micro) and per-task macro."""
    return runner_module().rouge_l(predictions, references, tasks)


def summarize(run_dir):
    """{'final': last eval row, 'best': best-micro eval row, 'evals': n} from a run's eval_log.csv."""
    path = Path(run_dir) / "eval_log.csv"
    if not path.exists():
        raise HyperrestartError(f"{path} not found; is {run_dir} a P3 run folder (hyperrestart p3 --output-dir)?")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        raise HyperrestartError(f"{path} has no evaluations yet")
    return {"final": rows[-1], "best": max(rows, key=lambda r: r["rougeL_micro"]), "evals": len(rows)}

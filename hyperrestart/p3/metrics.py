"""The paper's P3 metric and run summaries.

The metric's single source is the runner (overlay/hyperdecoders/hyperdecoder/p3_trainer.py, which must also work
inside the hyperdecoders tree without this package); it is loaded from there, like hyperrestart.upstream.scheduler.
"""
import csv
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.overlay_import import load_overlay_module
from hyperrestart.core.paths import OVERLAY_DIR

RUNNER_FILE = OVERLAY_DIR / "hyperdecoders" / "hyperdecoder" / "p3_trainer.py"


def runner_module():
    """The P3 runner as a module (imports torch)."""
    return load_overlay_module("hyperrestart._p3_trainer", RUNNER_FILE)


def rouge_l(predictions, references, tasks=None):
    """rouge_score RougeScorer(["rougeL"], use_stemmer=True) F-measure, mean x 100 (micro) and per-task macro."""
    return runner_module().rouge_l(predictions, references, tasks)


def summarize(run_dir):
    """{'final': last eval row, 'best': best-micro eval row, 'evals': n} from a run's eval_log.csv."""
    path = Path(run_dir) / "eval_log.csv"
    if not path.exists():
        raise HyperrestartError(f"{path} not found; is {run_dir} a P3 run folder (hyperrestart p3 --output-dir)?")
    with open(path, newline="") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        raise HyperrestartError(f"{path} has no evaluations yet")
    return {"final": rows[-1], "best": max(rows, key=lambda r: r["rougeL_micro"]), "evals": len(rows)}

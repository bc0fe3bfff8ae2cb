"""Rows of a report: each arm's mean ± std per column over seeds, its difference from its baseline arm, and the
paper's published rows beside it."""
import dataclasses
import json
import re
import statistics
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.report.runs import AVERAGE
from hyperrestart.report.tables import decimals, fmt_value

PUBLISHED_FILE = Path(__file__).resolve().parent / "published.json"
LOSS = "Final loss"
GLUE_ORDER = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")

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
            value = fmt_value(entry[metric], entry.get(f"{metric}_std"), decimals(entry[metric])) \
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

"""The report's tables as Markdown and CSV (numbers at full precision in CSV)."""
import csv
import io
from pathlib import Path


TASK_TITLES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
               "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
MINUS = "\u2212"

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
            cells.append(fmt_value(value[0], value[1], max(digits, decimals(value[0]))) if value else "–")
        lines.append("| " + " | ".join(cells) + " |")
    below = [f"mean ± sample std over the n seeds; ({'+'}x)/({MINUS}x) = difference of the means vs the baseline arm"]
    baselines = sorted({f"{r.arm} vs {r.baseline}" for r in rows if r.baseline})
    if baselines:
        below.append("deltas: " + "; ".join(baselines))
    below.extend(notes)
    return "\n".join(lines) + "\n\n" + "\n".join(f"_{n}_" for n in below) + "\n"


def decimals(value):
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
            line += [csv_number(row.mean.get(column)), csv_number(row.std.get(column)), csv_number(row.delta.get(column))]
            if show_published:
                value = (row.published or {}).get(column)
                line += [csv_number(value[0]) if value else "", csv_number(value[1]) if value else ""]
        writer.writerow(line)
    return buffer.getvalue()


def runs_csv(columns, results):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extras = sorted({k for r in results for k in r.extra})
    writer.writerow(["run", "arm", "seed", "finished", "kind", "split", *columns, *extras, "path"])
    for r in sorted(results, key=lambda r: (r.index, r.name)):
        writer.writerow([r.name, r.arm, "" if r.seed is None else r.seed, int(r.finished), r.kind, r.split,
                         *[csv_number(r.scores.get(c)) for c in columns], *[csv_number(r.extra.get(k)) for k in extras],
                         _display_path(r.path)])
    return buffer.getvalue()


def _display_path(path):
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def csv_number(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return value

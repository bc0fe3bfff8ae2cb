"""The paper's own tables as published: mean ± std per row, the number of runs behind them (which the paper never
states), and what each published difference would mean if every row were over n runs."""
import math

from hyperrestart.report.evidence import ALPHA, ASSUMED_NS, published_p_values
from hyperrestart.report.tables import column_title, decimals, fmt_value

MAX_N = 1000  # smallest_significant_n stops searching here


def smallest_significant_n(mean_a, std_a, mean_b, std_b):
    """The fewest runs per row at which the published difference has p < ALPHA (Welch); None without a std,
    '>MAX_N' past the search limit."""
    if std_a is None or std_b is None:
        return None
    for n in range(2, MAX_N + 1):
        if published_p_values(mean_a, std_a, mean_b, std_b, (n,))[n] < ALPHA:
            return n
    return f">{MAX_N}"


def _n_text(published):
    n = published.get("n")
    return "not stated in the paper" if n is None else str(n)


def _rows_table(published, metric):
    n_cell = "not stated" if published.get("n") is None else str(published["n"])
    lines = [f"| Paper row | n | {column_title(metric)} |", "|---|---:|---:|"]
    for row in published["rows"]:
        value = row.get(metric)
        cell = "–" if value is None else fmt_value(value, row.get(f"{metric}_std"), max(2, decimals(value)))
        lines.append(f"| {row['row']} | {n_cell} | {cell} |")
    return lines


def _comparisons_table(published, metric):
    by_name = {row["row"]: row for row in published["rows"]}
    head = " | ".join(f"p if n = {n}" for n in ASSUMED_NS)
    lines = [f"| Comparison | \u0394 | {head} | p < {ALPHA} from n = |", "|---|" + "---:|" * (len(ASSUMED_NS) + 2)]
    for name, baseline in published.get("comparisons", []):
        a, b = by_name[name], by_name[baseline]
        std_a, std_b = a.get(f"{metric}_std"), b.get(f"{metric}_std")
        diff = a[metric] - b[metric]
        p_values = published_p_values(a[metric], std_a, b[metric], std_b)
        cells = ["n/a" if math.isnan(p) else f"{p:.3g}" for p in p_values.values()]
        needed = smallest_significant_n(a[metric], std_a, b[metric], std_b)
        lines.append(f"| {name} vs {baseline} | {diff:+.3f} | " + " | ".join(cells)
                     + f" | {'n/a (no ± published)' if needed is None else needed} |")
    return lines


def paper_markdown(published):
    """The published table with its n, then each comparison's Welch p-value at assumed n (Markdown)."""
    metric = published["metric"]
    title = published.get("title", "the published table")
    lines = [f"**{title}, as published** (n = runs per row: {_n_text(published)})", ""]
    lines += _rows_table(published, metric)
    notes = [f"the paper's mean ± its ±, read as a sample std; n (runs per row) is {_n_text(published)}, so whether a "
             f"difference is more than noise cannot be read from the paper alone"]
    has_std = any(f"{metric}_std" in row for row in published["rows"])
    if published.get("comparisons") and has_std:
        lines += ["", "What each published difference would mean if every row were over n runs (Welch t on the "
                      "published mean ± std):", ""]
        lines += _comparisons_table(published, metric)
    elif not has_std:
        notes.append("this table publishes no ±, so no difference in it can be tested at any n")
    return "\n".join(lines) + "\n\n" + "\n".join(f"_{note}_" for note in notes) + "\n"

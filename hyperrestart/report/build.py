"""`hyperrestart report`: read runs, aggregate them into the paper's table layouts, write tables and figures."""
import sys
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_text
from hyperrestart.report import curvature
from hyperrestart.report.aggregate import aggregate, load_published, match_published, order_as_published
from hyperrestart.report.evidence import arm_evidence, evidence_csv, evidence_markdown
from hyperrestart.report.figures import plot_curves, plot_diagnostics
from hyperrestart.report.paper import paper_markdown
from hyperrestart.report.runs import AVERAGE, P3_METRIC, choose_split, exclude_non_finite, load_runs
from hyperrestart.report import search
from hyperrestart.report.tables import markdown_table, runs_csv, table_csv

# --- entry point ------------------------------------------------------------------------------------------------
def build_report(paths, out=None, published=None, split=None, select="last", digits=2, title=None,
                 include_unfinished=False, figures=True, with_loss=False, warn=None):
    """Load runs, score them on one split, aggregate, write table.md/table.csv/runs.csv (+ figures and their CSVs)
    into `out`; returns the Markdown. Unusable runs are skipped with a warning (and listed under the table);
    HyperrestartError when no run is left. split: auto (default: the spec's report.split, else auto), test, eval."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    skipped = []
    results = load_runs(paths, select, include_unfinished, warn, skipped)
    results, stopped = _set_aside_stopped(results)
    spec_report = next((r.report for r in results if r.report), {})
    results, split = choose_split(results, split or spec_report.get("split") or "auto", warn, skipped)
    results = exclude_non_finite(results, warn, skipped)
    table = published if published not in (None, True) else spec_report.get("published")
    if published is True and not table:
        raise HyperrestartError("--published: the runs do not say which paper table they reproduce (the sweep "
                                "spec's report.published); pass --published TABLE (table1, table2, table5)")
    published_data = load_published(table) if published and table else None
    columns, rows = aggregate(results, with_loss)
    notes = match_published(rows, columns, published_data) if published_data else []
    if published_data:
        rows = order_as_published(rows, published_data)
    sources = sorted({r.extra["source"] for r in results})
    notes.insert(0, f"scores: the {split} split of every run (from {', '.join(sources)})")
    if skipped:
        notes.append(f"{len(skipped)} run(s) skipped (see the warnings): {', '.join(skipped)}")
    if stopped:
        notes.append(f"{len(stopped)} trial(s) stopped early by the search's scheduler, not in the table (see the "
                     f"search below): {', '.join(stopped)}")
    title = title or spec_report.get("title") or (published_data or {}).get("title")
    markdown = markdown_table(columns, rows, digits, title, show_published=published_data is not None, notes=notes)
    main_column = P3_METRIC if P3_METRIC in columns else AVERAGE
    found = arm_evidence(rows, main_column)
    if found:
        markdown += "\n" + evidence_markdown(found, main_column, digits)
    searches = [(root, record, search.trials(root, record)) for root, record in search.search_roots(paths)]
    for root, record, trials in searches:
        markdown += "\n" + search.search_markdown(root, record, trials, digits)
    if published_data:
        markdown += "\n" + paper_markdown(published_data)
    bands = curvature.arm_bands(rows, warn)
    if bands:
        markdown += curvature.section_markdown(bands, curvature.FIGURE if out and figures else None)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "table.md", markdown)
        atomic_write_text(out / "table.csv", table_csv(columns, rows, show_published=published_data is not None))
        atomic_write_text(out / "runs.csv", runs_csv(columns, results))
        if found:
            atomic_write_text(out / "evidence.csv", evidence_csv(found))
        if figures:
            label = P3_METRIC if results[0].kind == "p3" else "average metric (eval)"
            plot_curves(rows, "metric", out / "metric_curves.png", title, label)
            plot_curves(rows, "loss", out / "loss_curves.png", title)
            plot_diagnostics(rows, out)
            if bands:
                curvature.draw(rows, bands, out / curvature.FIGURE, title)
            for root, record, trials in searches:
                name = "search_scores.png" if len(searches) == 1 else f"search_scores_{record['name']}.png"
                search.plot_search(record, trials, out / name)
        if bands:
            atomic_write_text(out / "curvature.csv", curvature.section_csv(bands))
    return markdown


def _set_aside_stopped(results):
    """(runs for the table, names of search trials stopped early): a trial scored after fewer steps is no row of a
    table of finished runs; the search section lists it."""
    kept = [r for r in results if "stopped_early_at" not in r.extra]
    stopped = [r.name for r in results if "stopped_early_at" in r.extra]
    if not kept:
        raise HyperrestartError("every run was stopped early by its search's scheduler; nothing finished to "
                                "tabulate")
    return kept, stopped


def published_report(table, out=None):
    """The paper's table `table` alone, with its n and what its differences mean at assumed n (no runs needed);
    written to out/paper.md when out is given."""
    markdown = paper_markdown(load_published(table))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "paper.md", markdown)
    return markdown


def summary_lines(paths, digits=2):
    """A sweep's result in a few lines (what `report` would tabulate): per arm the average column's mean ± std over
    its seeds and the difference to its baseline arm. Runs that cannot be read are left out silently (`report`
    names them)."""
    results = load_runs(paths, warn=lambda message: None)
    if not results:
        return []
    results, split = choose_split(results, "auto", lambda message: None, [])
    columns, rows = aggregate(results)
    column = AVERAGE if AVERAGE in columns else columns[0]
    lines = [f"{column} on the {split} split, mean ± std over seeds:"]
    for row in rows:
        if column not in row.mean:
            continue
        std = row.std.get(column)
        delta = row.delta.get(column)
        lines.append(f"  {row.arm}: {row.mean[column]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
                     + f" ({len(row.runs)} run{'s' if len(row.runs) > 1 else ''})"
                     + (f", {delta:+.{digits}f} vs {row.baseline}" if delta is not None else ""))
    return lines

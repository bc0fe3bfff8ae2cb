"""`hyperrestart report RUN_DIR...`: the paper's table layout (Markdown + CSV) and curve figures from finished runs."""
from pathlib import Path


def register(subparsers):
    parser = subparsers.add_parser(
        "report", help="tables (mean ± std over seeds, restart deltas) and curves from runs or a sweep's output root",
        description="Rows = arms, columns = per task and the average, mean ± std over seeds; a restart arm shows "
                    "its difference to the matching no-restart arm as (+x.xx)/(−x.xx). Every run is scored on one "
                    "split (--split). Writes table.md, table.csv, runs.csv, metric_curves.png and loss_curves.png "
                    "(mean over seeds with a min–max band, the lr each step applied on a second axis; the plotted "
                    "numbers in the .csv beside each) into --out and prints the Markdown table. Runs holding `analyse track` "
                    "results (RUN_DIR/analysis/track.csv) add a curvature section, curvature.png and curvature.csv "
                    "(per arm, mean over its tracked runs). A run that cannot "
                    "be used (a damaged JSON file, no metrics, unfinished, no metrics of the table's split) is skipped "
                    "with a warning naming it and listed under the table; the exit status is 0 when at least one "
                    "run is reported, 1 when none is.")
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR",
                        help="run directories, or folders of them (a sweep's --output-root); none with "
                             "--published TABLE prints the paper's table alone, with its n")
    parser.add_argument("--out", help="folder for the table, CSV and figures (default: print the table only)")
    parser.add_argument("--published", nargs="?", const=True, default=None, metavar="TABLE",
                        help="show the paper's published numbers beside ours, row by row (TABLE: table1, table2, "
                             "table5; without TABLE: the sweep spec's report.published); arms and paper rows "
                             "without a counterpart are listed under the table")
    parser.add_argument("--split", choices=("auto", "test", "eval", "val"), default=None,
                        help="the split every run is scored on (val = eval): auto (default, or the spec's "
                             "report.split) takes test when every run has test metrics, else eval; runs without "
                             "the chosen split are skipped with a warning, never mixed in from another split")
    parser.add_argument("--select", choices=("last", "best"), default="last",
                        help="P3 runs: the last evaluation (default) or the best one")
    parser.add_argument("--digits", type=int, default=2, help="decimals in the Markdown table (default 2)")
    parser.add_argument("--title", help="table/figure title")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="use sweep runs without a completion marker too (their latest metrics)")
    parser.add_argument("--with-loss", action="store_true", help="add the final training loss as a column")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.set_defaults(func=run)


def run(args):
    from hyperrestart.core.errors import HyperrestartError
    from hyperrestart.report.build import build_report, published_report

    if not args.runs:
        if args.published in (None, True):
            raise HyperrestartError("report: give RUN_DIR(s) to report on, or --published TABLE (table1, table2, "
                                    "table5) for the paper's table alone")
        print(published_report(args.published, args.out), end="")
        return 0

    markdown = build_report(args.runs, out=args.out, published=args.published, split=args.split, select=args.select,
                            digits=args.digits, title=args.title, include_unfinished=args.include_unfinished,
                            figures=not args.no_figures, with_loss=args.with_loss)
    print(markdown, end="")
    if args.out:
        names = ["table.md", "table.csv", "runs.csv", "evidence.csv", "metric_curves.png", "metric_curves.csv",
                 "loss_curves.png", "loss_curves.csv", "curvature.png", "curvature.csv"]
        written = [n for n in names if (Path(args.out) / n).exists()]  # a figure with no curve data is not drawn
        written += sorted(p.name for p in Path(args.out).glob("diagnostics_*.png"))
        written += sorted(p.name for p in Path(args.out).glob("search*.png")) + \
            (["search.csv"] if (Path(args.out) / "search.csv").exists() else [])
        print(f"\nwritten in {args.out}: {', '.join(written)}")
    return 0

"""`hyperrestart plot-lr CONFIG`: parse the options and plot (hyperrestart.upstream.lr_plot)."""


def register(subparsers):
    parser = subparsers.add_parser(
        "plot-lr", help="plot the lr schedule a config produces and check that a restart run ends at a cycle end",
        description="Write a PNG of the lr used by every optimizer step 1..max_steps (the restart scheduler on a "
                    "dummy parameter, or transformers' schedule), cycle ends marked, and print whether max_steps "
                    "ends at a cycle end (the nearest aligned values otherwise).")
    parser.add_argument("config", help="JSON training arguments")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training argument, as for `hyperrestart run` (JSON value; a bare word for "
                             "a string argument); repeatable")
    parser.add_argument("--out", help="PNG to write (default: runs/plots/<config name>.png in the project)")
    parser.add_argument("--max-steps", type=int, help="plot this many steps instead of the config's max_steps")
    parser.add_argument("--x-scale", choices=("auto", "linear", "log"), default="auto",
                        help="auto: log from 10000 steps on (cycles of T_mult=2 are evenly spaced)")
    parser.set_defaults(func=cmd_plot_lr)


def cmd_plot_lr(args):
    from hyperrestart.upstream.lr_plot import plot_lr
    return plot_lr(args)

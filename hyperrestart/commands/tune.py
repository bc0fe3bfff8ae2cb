"""`hyperrestart tune SPEC`: hyperparameter search with Ray Tune; every trial is a P3 run folder."""


def register(subparsers):
    parser = subparsers.add_parser(
        "tune", help="search hyperparameters (Ray Tune: random or Optuna TPE; ASHA or PBT); trials are run folders",
        description="A tune spec (sweeps/tune_*.yaml) is a sweep spec whose grid is a `search:` section: a "
                    "distribution per key, the metric and mode, num_samples, the searcher (random | optuna) and the "
                    "scheduler (asha | pbt | fifo). Each trial writes OUTPUT_ROOT/<trial>; `hyperrestart report "
                    "OUTPUT_ROOT` tabulates them with the best configuration and a score-per-key plot.")
    parser.add_argument("spec", help="tune spec (YAML)")
    parser.add_argument("--list", action="store_true", help="print what would be searched (runs nothing)")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke test: the tiny learnable P3 and a tiny random T5 (as `sweep --tiny`)")
    parser.add_argument("--output-root", default=None, help="where trial folders go (default: runs/<spec name>)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="fixed override for every trial (repeatable)")
    parser.add_argument("--address", default=None, metavar="RAY_ADDRESS",
                        help="run on this Ray cluster (e.g. HEAD:6379); default: a local Ray on this machine")
    parser.add_argument("--cpus", type=int, default=None,
                        help="CPUs of the local Ray (default: this machine's cores); ignored with --address")
    parser.add_argument("--nproc", type=int, default=1, help="processes per trial (CPUs per trial), via torchrun")
    parser.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs Ray gives each trial (default 0)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs and the workers' output")
    parser.set_defaults(func=run)


def run(args):
    from hyperrestart.tune.launch import run_tune
    return run_tune(args)

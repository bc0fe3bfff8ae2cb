"""`hyperrestart analyse landscape|hessian|track RUN_DIR`: the paper's mechanism measured on a run (parsing only; the
work is hyperrestart.analysis)."""
from ..core.errors import HyperrestartError

SPACE_CHOICES = ("hypernetwork", "main", "backbone", "all")


def _steps(text):
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise HyperrestartError(f"--steps {text}: give optimizer steps separated by commas, e.g. 0,1,3,7") from None
    if not steps or min(steps) < 0:
        raise HyperrestartError(f"--steps {text}: give optimizer steps >= 0 separated by commas, e.g. 0,1,3,7")
    return steps


def cmd_landscape(args):
    from ..analysis import tasks
    tasks.landscape(args.run_dir, args.checkpoint, args.space, out=args.out, nproc=args.nproc, upstream=args.upstream,
                    range=args.range, resolution=args.resolution, batches=args.batches, seed=args.seed,
                    batch_points=args.batch_points)
    return 0


def _hessian_options(args):
    return dict(k=args.k, lanczos_steps=args.lanczos_steps, density_runs=args.density_runs,
                trace_samples=args.trace_samples, ratio_vectors=args.ratio_vectors, batches=args.batches,
                seed=args.seed, nproc=args.nproc)


def cmd_hessian(args):
    from ..analysis import tasks
    tasks.hessian(args.run_dir, args.checkpoint, args.space, out=args.out, upstream=args.upstream,
                  **_hessian_options(args))
    return 0


def cmd_track(args):
    from ..analysis import track
    track.track(args.run_dir, out=args.out, steps=_steps(args.steps) if args.steps else None,
                upstream=args.upstream, space=args.space, against=args.against, **_hessian_options(args))
    return 0


def _common(parser, checkpoint=True):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --output-dir of a `hyperrestart run` or `hyperrestart p3`")
    if checkpoint:
        parser.add_argument("--checkpoint", default="last",
                            help="init (the run's initial weights), N (checkpoint-N), last, final (the model saved in RUN_DIR "
                                 "when training ended) or all (default: last; a run without checkpoint-N folders: "
                                 "final)")
    parser.add_argument("--space", choices=SPACE_CHOICES, default="all",
                        help="hypernetwork: the weight generators' parameters; main: the weights they generate "
                             "(perturbed through hooks); backbone: the model's other trainable weights (default: all)")
    parser.add_argument("--batches", type=int, help="evaluate the loss on the run's first K training batches "
                                                    "(default 1)")
    parser.add_argument("--seed", type=int, help="seed of the random directions / probe vectors (default 0)")
    parser.add_argument("--out", help="folder for the results (default: RUN_DIR/analysis)")
    parser.add_argument("--upstream", choices=("hyperdecoders", "hyperformer"),
                        help="the run's upstream, when its config does not tell")


def _hessian_flags(parser):
    parser.add_argument("-k", type=int, help="how many largest and most negative eigenvalues (default 5)")
    parser.add_argument("--lanczos-steps", type=int, help="Lanczos iterations per run (default 20)")
    parser.add_argument("--density-runs", type=int, help="stochastic Lanczos quadrature runs (default 2)")
    parser.add_argument("--trace-samples", type=int, help="Hutchinson probes for the trace (default 10)")
    parser.add_argument("--ratio-vectors", type=int, help="random v for ||Rv||/||H_phi v|| (default 3)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes sharing the work (torchrun): per checkpoint, each space's spectrum and the R "
                             "term are separate units; the result is the same as with one process")


def register(subparsers):
    parser = subparsers.add_parser(
        "analyse", help="loss landscapes (Fig. 3) and Hessian spectra per parameter space of a run",
        description="Measure the paper's mechanism on a run: landscapes of the hypernetwork, main-network and "
                    "backbone parameter spaces, their Hessian spectra, the neglected term R of eq. 4, and how they "
                    "change across restarts.")
    verbs = parser.add_subparsers(dest="analysis", metavar="WHAT", required=True)

    land = verbs.add_parser("landscape", help="2-D loss surface and 1-D slices along filter-normalised random "
                                              "directions (Li et al. 2018), per space, plotted like Figure 3")
    _common(land)
    land.add_argument("--range", type=float, help="the grid spans [-R, R] along each direction (default 10, the "
                                                  "paper's)")
    land.add_argument("--resolution", type=int, help="points per axis (default 256, the paper's: 65,536 losses "
                                                     "per surface)")
    land.add_argument("--batch-points", type=int,
                      help="grid points per forward pass (torch.func.vmap over stacked shifts; default 8; 1: one "
                           "pass per point; a model vmap cannot batch goes one by one, with a note in the log)")
    land.add_argument("--nproc", type=int, default=1, help="processes sharing the grid (torchrun; one GPU each on "
                                                           "a GPU node)")
    land.set_defaults(func=cmd_landscape)

    hess = verbs.add_parser("hessian", help="extreme eigenvalues, trace, spectral density and inertia per space, "
                                            "and ||R v|| / ||H_phi v|| (is eq. 4 justified here?)")
    _common(hess)
    _hessian_flags(hess)
    hess.set_defaults(func=cmd_hessian)

    trk = verbs.add_parser("track", help="the Hessian summary at init, at every cycle end of lr_trace.csv and at "
                                         "the end, plotted against the lr curve")
    _common(trk, checkpoint=False)
    _hessian_flags(trk)
    trk.add_argument("--steps", help="analyse these steps instead (comma-separated; 0 = init)")
    trk.add_argument("--against", metavar="OTHER_RUN_DIR",
                     help="also track this run (e.g. the no-restart arm) at the same steps and plot both together")
    trk.set_defaults(func=cmd_track)

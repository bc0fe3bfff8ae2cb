"""`hyperrestart prepare-p3`: a local copy of bigscience/P3 -> the datasets folder the P3 runner trains on."""
import json


def register(subparsers):
    parser = subparsers.add_parser(
        "prepare-p3", help="build the P3 training folder from a local copy of bigscience/P3 (no TensorFlow)",
        description="Read the P3 tasks (default: the paper's 193) from a local bigscience/P3 copy in its tfrecord "
                    "layout (data/{task}/train.tfrecord-*) or parquet conversion ({task}/train/*.parquet), apply "
                    "T0's per-dataset cap (--caps-as truncation: a seeded sample of each capped task; --caps-as mixing-rates: every "
                    "row kept, each task's T0 mixing rate recorded for the P3 runner's sampler), hold out a seeded validation/test "
                    "split, and write OUT/data/*.parquet + OUT/manifest.json atomically.")
    parser.add_argument("--source", required=True, help="local copy of bigscience/P3")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--tasks", default=None, help="task list file, one P3 task per line (default: the paper's 193)")
    parser.add_argument("--format", default="auto", choices=("auto", "tfrecord", "parquet", "jsonl"))
    parser.add_argument("--split", default="train", help="P3 split to read (default: train)")
    parser.add_argument("--cap-per-dataset", type=int, default=500000,
                        help="T0's cap: a dataset with more train examples than this has each of its templates "
                             "capped at this / its number of templates in P3 (0 = no cap)")
    parser.add_argument("--cap-per-task", type=int, default=0,
                        help="also cap every task at this many rows (0 = no cap; not T0's rule: 26981 gives Table 8's "
                             "3,301,000 rows and 3301 validation rows, see README)")
    parser.add_argument("--caps-as", choices=("truncation", "mixing-rates"), default="truncation",
                        help="truncation (default): same proportions, rows dropped (a capped task keeps a seeded "
                             "sample of cap rows); mixing-rates: T0's mixing, every row kept and each task's rate "
                             "min(rows, cap) recorded, so the P3 runner samples tasks in proportion to their rates")
    parser.add_argument("--holdout", type=float, default=0.002,
                        help="fraction held out and halved into validation/test (paper: 0.002)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of the capped samples")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an OUT that prepare-p3 wrote before (atomically); any other folder is refused")
    parser.add_argument("--no-input-hashes", action="store_true", help="skip sha256 of the input files (faster)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args):
    from hyperrestart.p3.prepare import prepare, summary

    manifest = prepare(args.source, args.out, tasks_file=args.tasks, fmt=args.format,
                       cap_per_dataset=args.cap_per_dataset, cap_per_task=args.cap_per_task, holdout=args.holdout,
                       seed=args.seed, split=args.split, caps_as=args.caps_as,
                       overwrite=args.overwrite, hash_inputs=not args.no_input_hashes, progress=not args.quiet)
    print(json.dumps(summary(manifest, args.out)))
    return 0

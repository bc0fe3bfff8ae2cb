"""`hyperrestart p3`: launch the P3 runner (overlay/hyperdecoders/hyperdecoder/p3_trainer.py).

`--model t5` runs the project's copy of the runner with the current python; no upstream tree is needed.
`--model hyperdecoder` needs hyperdecoders' adapter T5: it runs the runner copy inside the materialised tree
(upstream/hyperdecoders/hyperdecoder/p3_trainer.py and p3_runner/) when bootstrap put it there and it equals the
project's copy, else the project's copy pointed at the tree with --hyperdecoders_path. `--python` picks another
interpreter (e.g. the tree's own environment); `--nproc-per-node N` launches N processes with torchrun. Runner
options not listed here go after `--`.
`--tiny`: the tiny learnable P3 data and tiny random T5 (generated once, cached), hyperrestart.p3.synthetic's
TINY_SETTINGS (255 steps, evaluated every 51), offline, on the CPU; prints where the outputs are.
"""
import shlex
import sys

from hyperrestart.core.paths import DEFAULT_DEST


def register(subparsers):
    parser = subparsers.add_parser(
        "p3", help="P3 instruction tuning (Table 2, Fig. 4/5): T5 or Hyperdecoders, with or without restart",
        description=__doc__ + "\nExample: hyperrestart p3 --config table2_t5_restart --data-dir P3_PREPARED "
                              "--model-name-or-path flan-t5-base --output-dir runs/t5_restart -- --max_steps 2000")
    parser.add_argument("--config", help="runner config: a JSON file or a name under configs/p3/ "
                                          "(e.g. table2_hyperdecoder_restart)")
    parser.add_argument("--model", choices=("t5", "hyperdecoder"), help="overrides the config's model")
    parser.add_argument("--data-dir", help="folder from `hyperrestart prepare-p3`")
    parser.add_argument("--output-dir", help="run folder")
    parser.add_argument("--model-name-or-path", help="T5 checkpoint folder (e.g. a local google/flan-t5-base)")
    parser.add_argument("--hyperdecoders-tree", default=str(DEFAULT_DEST / "hyperdecoders"),
                        help="materialised hyperdecoders tree (default: upstream/hyperdecoders)")
    parser.add_argument("--python", default=None, help="interpreter that runs the runner (default: this one)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per node, via torchrun")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny learnable P3 + tiny random T5, 255 steps, offline, CPU: a run that learns in about "
                             "a minute (default config table2_t5_restart, output runs/p3-tiny-TIME)")
    parser.add_argument("--tiny-mixing", action="store_true",
                        help="with --tiny: the tiny data prepared with `prepare-p3 --caps-as mixing-rates` (every row "
                             "kept; the runner samples the four tasks by T0's rates 199/199/199/124)")
    parser.add_argument("--repeat", metavar="RUN_DIR",
                        help="run the P3 run in RUN_DIR again with its recorded command, seed, threads and "
                             "environment (into --output-dir, default RUN_DIR-repeat) and check that its train_log.csv "
                             "(loss, lr per step), eval_log.csv and eval predictions equal the original's bit for bit")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("runner_args", nargs="*", metavar="-- RUNNER_ARGS",
                        help="further p3_trainer.py options, after `--` (python p3_trainer.py --help lists them)")
    parser.set_defaults(func=run)


def run(args):
    from hyperrestart.p3.launch import Launch, prepare_launch, run_runner

    launch = Launch(config=args.config, model=args.model, data_dir=args.data_dir, output_dir=args.output_dir,
                    model_name_or_path=args.model_name_or_path, hyperdecoders_tree=args.hyperdecoders_tree,
                    python=args.python or sys.executable, nproc_per_node=args.nproc_per_node, tiny=args.tiny,
                    tiny_mixing=args.tiny_mixing, repeat=args.repeat,
                    runner_args=list(args.runner_args or []))
    launch, command, recorded = prepare_launch(launch, python_given=args.python is not None)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    return run_runner(launch, command, recorded)

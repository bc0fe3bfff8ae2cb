"""`hyperrestart run CONFIG`: parse the options and train (hyperrestart.upstream.training)."""
import dataclasses

from hyperrestart.core.errors import HyperrestartError

from hyperrestart.upstream.registry import UPSTREAMS
from hyperrestart.upstream.resolve import RunRequest
from hyperrestart.upstream.run_folder import RUN_CONFIG
from hyperrestart.upstream.training import run


def cmd_run(args):
    if bool(args.config) == bool(args.repeat):
        raise HyperrestartError("give a CONFIG to run, or --repeat RUN_DIR to run a finished run again (not both)")
    fields = {f.name for f in dataclasses.fields(RunRequest)}
    return run(RunRequest(**{k: v for k, v in vars(args).items() if k in fields}))


def register(subparsers):
    parser = subparsers.add_parser(
        "run", help="train an upstream on a config (configs/hyperdecoders/*.json, configs/hyperformer/*.json)",
        description="Resolve CONFIG (+ --tiny, --set), check every key and the lr scheduler against the upstream's "
                    f"arguments, write it to OUTPUT/{RUN_CONFIG}, run the upstream's training script in its "
                    "materialised tree with its env's python (output in OUTPUT/train.log), then write "
                    "lr_trace.csv (step,lr_applied: the lr each optimizer step used) and print the steps that start "
                    "a new lr cycle, the metrics and the checkpoints.")
    parser.add_argument("config", nargs="?", help="JSON training arguments; its folder names the upstream")
    parser.add_argument("--repeat", metavar="RUN_DIR",
                        help="run RUN_DIR again with its recorded config, seed, threads and environment (into "
                             "--output-dir, default RUN_DIR-repeat) and check that its metrics, log history and "
                             "lr_trace.csv equal the original's bit for bit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training argument; VALUE is JSON (3e-4, 65535, true, null, "
                             "'[\"rte\"]'), and for a string argument a bare word is the string "
                             "(--set model_name_or_path=/models/t5); checked against the argument's type; repeatable")
    parser.add_argument("--nproc", type=int, default=None, help="processes on this machine (torch.distributed.run "
                                                               "--nproc_per_node, standalone)")
    nodes = parser.add_argument_group(
        "across nodes", "one run over N machines (README \"Across nodes\"): start `hyperrestart run` on each with the "
                        "same CONFIG, --set values, --output-dir (a folder every node sees) and these options; node "
                        "rank 0 owns the run folder. Inside a SLURM job the endpoint and node rank default to the "
                        "job's first node, a port derived from the job id, and SLURM_NODEID")
    nodes.add_argument("--nnodes", type=int, help="machines in the run (torchrun --nnodes; c10d rendezvous)")
    nodes.add_argument("--nproc-per-node", type=int, help="processes per machine (default 1)")
    nodes.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                       help="where the nodes meet: a host every node reaches (usually node 0's) and a free port")
    nodes.add_argument("--node-rank", type=int, help="this machine's rank, 0..N-1; 0 writes the run folder")
    nodes.add_argument("--rdzv-timeout", type=int, metavar="SECONDS",
                       help="how long each node waits for the others to join (default 300)")
    parser.add_argument("--tiny", action="store_true",
                        help="the generated tiny T5 and GLUE/MRQA data, 15 steps (a cycle end), offline, CPU: a smoke run in "
                             "seconds")
    parser.add_argument("--dest", help="folder holding the materialised trees (default: upstream/)")
    parser.add_argument("--output-dir", help="where the run writes (default: a new runs/<upstream>-<config>-<time>); "
                                             "a folder holding a run needs --resume or --overwrite")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue the interrupted run in --output-dir from its last checkpoint (same config "
                               "and --set values)")
    existing.add_argument("--overwrite", action="store_true",
                          help="delete the run in --output-dir and start again (a sweep's sweep* files are kept)")
    parser.add_argument("--upstream", choices=sorted(UPSTREAMS), help="override the upstream the folder names")
    parser.add_argument("--python", help="interpreter to run with (default: the upstream's env, `hyperrestart env`)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--verbose", action="store_true", help="stream the trainer's whole output (it always goes "
                                                               "to OUTPUT/train.log)")
    output.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    parser.set_defaults(func=cmd_run)

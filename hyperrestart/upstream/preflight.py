"""Everything `run` checks before it touches the run folder or starts a process: the keys and lr scheduler
(arguments.check_config), the numeric ranges (ranges), local model/tokenizer/data paths and their layout, the
process count. A refused run leaves nothing behind."""
import os
import sys
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.upstream import arguments, ranges, registry

MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "spiece.model")
# gradient accumulation that does not divide an epoch's batch count: a resume at an epoch end is not exact
ACCUMULATION_WARNING = (
    "warning: gradient_accumulation_steps={steps}: a --resume is bit-exact only when gradient_accumulation_steps "
    "divides the number of batches per process in an epoch (examples / (per_device_train_batch_size x processes)); "
    "otherwise the Trainer drops the partial accumulation at each epoch end and a run resumed from a checkpoint "
    "there differs from an uninterrupted one. Choose gradient_accumulation_steps=1 or n_train/batch sizes that "
    "divide evenly for exact resumes.")


def looks_local(value) -> bool:
    """A model/tokenizer name that is a filesystem path rather than a Hugging Face hub id ("t5-base",
    "google/t5-v1_1-base"): absolute, `.`/`~`-relative, with two or more separators, or existing here."""
    text = str(value)
    return (os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") >= 2
            or os.path.exists(text))


def _layout_problem(key, value, wanted, what):
    path = Path(os.path.expanduser(str(value)))
    if not path.exists():
        return f"{key} {value} does not exist (a local {what} is a folder holding {' or '.join(wanted)})"
    if not path.is_dir() or not any((path / name).is_file() for name in wanted):
        return f"{key} {value} is not a {what} folder (it holds no {' or '.join(wanted)})"
    return None


def path_problems(config):
    """Local model, tokenizer and data paths that are missing or lack their expected files."""
    problems = []
    model, tokenizer = config.get("model_name_or_path"), config.get("tokenizer_name")
    if model and looks_local(model):
        problems.append(_layout_problem("model_name_or_path", model, MODEL_FILES, "model"))
        if not tokenizer:
            problems.append(_layout_problem("model_name_or_path (the tokenizer too, with no tokenizer_name)", model,
                                            TOKENIZER_FILES, "tokenizer"))
    if tokenizer and looks_local(tokenizer):
        problems.append(_layout_problem("tokenizer_name", tokenizer, TOKENIZER_FILES, "tokenizer"))
    data_dir = config.get("data_dir")
    if data_dir and not Path(os.path.expanduser(str(data_dir))).is_dir():
        problems.append(f"data_dir {data_dir} is not an existing folder")
    return [p for p in problems if p]


def has_gpu() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*")) and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


def check_processes(upstream, nproc, config, layout=None):
    """Refuse a process count the upstream cannot use; warn when it exceeds the CPU cores of a CPU-only machine.
    layout: a run across nodes (nodes.Layout): its processes per node count here; the run folder is written from one
    node only, so save_on_each_node is refused."""
    if nproc is not None and nproc < 1:
        raise HyperrestartError(f"--nproc {nproc}: give a process count >= 1")
    if layout is not None:
        registry.check_nproc(upstream, layout.nproc_per_node, layout.nnodes)
        if layout.nnodes > 1 and config.get("save_on_each_node"):
            raise HyperrestartError("save_on_each_node=true: across nodes the run folder is one shared folder "
                                    "written by global rank 0 only; drop it (--set save_on_each_node=false)")
        nproc = layout.nproc_per_node
    registry.check_nproc(upstream, nproc)
    cores = os.cpu_count() or 1
    if nproc and nproc > cores and (config.get("no_cuda") or not has_gpu()):
        print(f"warning: --nproc {nproc} starts {nproc} training processes on {cores} CPU core(s) and no GPU: they "
              f"will compete for the cores (use --nproc {cores} or fewer)", file=sys.stderr)


def warn_accumulation(config):
    steps = config.get("gradient_accumulation_steps")
    if isinstance(steps, int) and steps > 1:
        print(ACCUMULATION_WARNING.format(steps=steps), file=sys.stderr)


def preflight(resolved, spec, request, layout=None):
    """Refuse (one error listing every problem) before the run folder is touched or a process starts.
    layout: the run's nodes.Layout across nodes, or None on one node."""
    upstream, config = resolved.upstream, resolved.config
    arguments.check_config(config, spec, upstream, resolved.origin)
    ranges.check_ranges(config, resolved.origin, f"the {upstream.name} config")
    problems = path_problems(config)
    if problems:
        raise HyperrestartError("\n  ".join([f"the {upstream.name} config names {len(problems)} path(s) that "
                                             f"cannot work; fix them in the config file or the --set values:"]
                                            + problems))
    check_processes(upstream, request.nproc, config, layout)

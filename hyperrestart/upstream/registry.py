"""The two upstreams hyperrestart runs: where each one's training script lives, its config, command and environment."""
import os
from dataclasses import dataclass
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.limits import loads_json, read_text_bounded
from hyperrestart.core.paths import CONFIGS_DIR, DEFAULT_DEST


@dataclass(frozen=True)
class Upstream:
    name: str
    workdir: str  # inside the tree: where the script runs
    script: str  # inside workdir
    pythonpath: tuple  # inside the tree, prepended to PYTHONPATH
    args_import: str  # python importing ARGUMENT_CLASSES (run in workdir)
    trainer_module: str  # the module whose arg_to_scheduler picks the lr schedule


ARGUMENT_CLASSES = ("ModelArguments", "DataTrainingArguments", "Seq2SeqTrainingArguments", "AdapterTrainingArguments")

UPSTREAMS = {
    "hyperdecoders": Upstream("hyperdecoders", "hyperdecoder", "finetune_trainer.py", (),
                              "from training_args import " + ", ".join(ARGUMENT_CLASSES),
                              "third_party.trainers.t5_trainer"),
    "hyperformer": Upstream("hyperformer", "hyperformer", "finetune_t5_trainer.py", (".",),
                            "from hyperformer.training_args import " + ", ".join(ARGUMENT_CLASSES),
                            "hyperformer.third_party.trainers.t5_trainer"),
}


# Settings an upstream's argument classes accept but its script never applies: refused at pre-flight (when not null)
# rather than silently doing nothing. T5 has no layer drop and no separate attention dropout.
_NO_T5_SETTING = "T5 has no such setting, so the script never applies it"
INERT_SETTINGS = {
    "hyperdecoders": {"encoder_layerdrop": _NO_T5_SETTING, "decoder_layerdrop": _NO_T5_SETTING,
                      "attention_dropout": _NO_T5_SETTING},
    "hyperformer": {"encoder_layerdrop": _NO_T5_SETTING, "decoder_layerdrop": _NO_T5_SETTING,
                    "attention_dropout": _NO_T5_SETTING,
                    "dropout": "the script copies it into the T5 config under a name T5 does not read (0 is "
                               "skipped, any other value fails its assert), so it changes nothing"},
}


def upstream_named(name) -> Upstream:
    if name not in UPSTREAMS:
        raise HyperrestartError(f"unknown upstream {name!r}; choose one of: {', '.join(UPSTREAMS)}")
    return UPSTREAMS[name]


def upstream_for_config(config_path, explicit=None) -> Upstream:
    """The upstream named by --upstream, else by the config's folder (configs/hyperdecoders/..., .../hyperformer/...)."""
    if explicit:
        return upstream_named(explicit)
    for parent in Path(config_path).resolve().parents:
        if parent.name in UPSTREAMS:
            return UPSTREAMS[parent.name]
        if parent == CONFIGS_DIR.resolve():
            break
    raise HyperrestartError(f"cannot tell which upstream runs {config_path}: put it under configs/hyperdecoders/ or "
                            f"configs/hyperformer/, or pass --upstream {'|'.join(UPSTREAMS)}")


def load_config(path) -> dict:
    """A JSON config: at most MAX_FILE_BYTES, MAX_DEPTH levels, finite numbers only (core.limits)."""
    path = Path(path)
    config = loads_json(read_text_bounded(path, "config"), f"config {path}")
    if not isinstance(config, dict):
        raise HyperrestartError(f"config {path} must hold a JSON object of training arguments, not "
                                f"{type(config).__name__}")
    return config


def tree_dir(upstream: Upstream, dest=None) -> Path:
    """The materialised tree, checked to hold the training script."""
    tree = Path(dest or DEFAULT_DEST) / upstream.name
    if not (tree / upstream.workdir / upstream.script).is_file():
        raise HyperrestartError(f"no materialised {upstream.name} tree at {tree} "
                                f"({upstream.workdir}/{upstream.script} missing); run `python bootstrap.py` first"
                                + (f" (with --dest {dest})" if dest else ""))
    return tree


def process_env(upstream: Upstream, tree: Path, base=None) -> dict:
    env = dict(os.environ if base is None else base)
    paths = [str((tree / p).resolve()) for p in upstream.pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# hyperformer reads no LOCAL_RANK and transformers 3.5.1 hard-codes NCCL: N processes would be N independent runs.
SINGLE_PROCESS = {"hyperformer"}


def check_nproc(upstream: Upstream, nproc, nnodes=1):
    if nnodes and nnodes > 1 and upstream.name in SINGLE_PROCESS:
        raise HyperrestartError(f"--nnodes {nnodes}: {upstream.name} cannot train across nodes (it reads no "
                                f"LOCAL_RANK and its transformers 3.5.1 hard-codes NCCL, so the processes would be "
                                f"independent runs); run it on one process on one node")
    if nproc and nproc > 1 and upstream.name in SINGLE_PROCESS:
        raise HyperrestartError(f"--nproc {nproc}: {upstream.name} cannot train data-parallel (it reads no LOCAL_RANK, "
                                f"so the processes would be independent runs); run it on one process")


def command(upstream: Upstream, python, config_file, nproc=None, launcher=None):
    """The trainer's command line: the script alone, or under torch.distributed.run for --nproc > 1 (standalone)
    or with `launcher`, the torchrun options of a run across nodes (nodes.torchrun_args)."""
    check_nproc(upstream, nproc)
    if launcher:
        return [str(python), "-m", "torch.distributed.run", *launcher, upstream.script, str(config_file)]
    if nproc and nproc > 1:
        return [str(python), "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                upstream.script, str(config_file)]
    return [str(python), upstream.script, str(config_file)]

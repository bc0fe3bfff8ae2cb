"""A run's resolved config: the config file, then --tiny, then --set, checked against the upstream's arguments."""
import dataclasses
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.overrides import parse_set
from hyperrestart.upstream.registry import Upstream, load_config, upstream_for_config

# --tiny: the generated tiny T5 and GLUE/MRQA data, 15 steps with a log line per step; every value can still be --set.
# 15 = 1+2+4+8 ends the fourth SGDR cycle of the paper's T_0=1, T_mult=2 (cycle ends 1, 3, 7, 15, 31, ...): a run must
# stop at eta_min, not at a restart's peak lr. Evaluated and saved every 5 steps (5, 10, 15).
TINY_SETTINGS = {
    "max_steps": 15, "logging_steps": 1, "logging_first_step": True, "eval_steps": 5, "save_steps": 5,
    "save_total_limit": 1, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
    "gradient_accumulation_steps": 1, "max_source_length": 64, "max_target_length": 8, "val_max_target_length": 8,
    "test_max_target_length": 8, "n_val": 16, "n_test": 16,
}
TINY_UPSTREAM_SETTINGS = {
    # small enough to train in seconds on a CPU (the released dims are 64/64/128 on d_model 768)
    "hyperdecoders": {"encoder_adapter_dim": 8, "decoder_adapter_dim": 8, "hypernetwork_bottleneck": 16,
                      "report_to": []},
    "hyperformer": {"task_embedding_dim": 16, "projected_task_embedding_dim": 8, "reduction_factor": 4},
}
# MRQA (hyperdecoders only): a question plus a three-sentence context needs more source tokens than a GLUE pair.
TINY_MRQA_TASKS = {"hyperdecoders": ("mrqa", "mrqa_reg")}
TINY_MRQA_SETTINGS = {"max_source_length": 128}


@dataclasses.dataclass
class Resolved:
    upstream: Upstream
    config: dict
    output_dir: Path  # None: a fresh default folder is made when the run starts
    origin: dict  # key -> "the config" | "--tiny" | "--set", for error messages


def tiny_overrides(upstream, config):
    """The settings --tiny applies (config: the config with --set applied, so --set can pick the tasks)."""
    from hyperrestart.upstream.tiny import GLUE_SCHEMA, tiny_data_dir, tiny_model_dir
    mrqa = TINY_MRQA_TASKS.get(upstream.name, ())
    tasks = list(dict.fromkeys(list(config.get("tasks") or []) + list(config.get("eval_tasks") or [])))
    supported = list(GLUE_SCHEMA) + list(mrqa)
    unsupported = [t for t in tasks if t not in supported]
    if unsupported:
        raise HyperrestartError(f"--tiny has data for {', '.join(supported)} ({upstream.name}), not "
                                f"{', '.join(unsupported)}; choose tasks with --set 'tasks=[\"rte\"]' "
                                f"--set 'eval_tasks=[\"rte\"]'")
    model = str(tiny_model_dir())
    settings = dict(TINY_SETTINGS, model_name_or_path=model, tokenizer_name=model,
                    data_dir=str(tiny_data_dir(mrqa=bool(mrqa))), **TINY_UPSTREAM_SETTINGS.get(upstream.name, {}))
    if any(t in mrqa for t in tasks):
        settings.update(TINY_MRQA_SETTINGS)
    return settings


@dataclasses.dataclass
class RunRequest:
    """What `hyperrestart run` was asked: the CONFIG file and the options (names as on the command line)."""
    config: str
    set: list = dataclasses.field(default_factory=list)
    tiny: bool = False
    nproc: int = None
    dest: str = None
    output_dir: str = None
    resume: bool = False
    overwrite: bool = False
    upstream: str = None
    python: str = None
    verbose: bool = False
    quiet: bool = False
    repeat: str = None  # a run folder to repeat with its recorded settings (upstream/repeat.py)
    # across nodes (upstream/nodes.py): N launchers of K processes meeting at HOST:PORT; node rank 0 owns the folder
    nnodes: int = None
    nproc_per_node: int = None
    rdzv_endpoint: str = None
    node_rank: int = None
    rdzv_timeout: int = None


def resolve(request, spec=None, upstream=None, config=None) -> Resolved:
    """The config from CONFIG, --tiny and --set (each --set parsed once, typed by spec: arguments.argument_spec),
    without touching the output folder. --set applies last, so it wins over --tiny. `upstream` and `config` are
    found from request.config when not given."""
    kinds = spec.kinds if spec else None
    sets = dict(parse_set(item, kinds) for item in request.set)
    if "output_dir" in sets:
        raise HyperrestartError("--set output_dir: `run` sets output_dir itself; choose the folder with --output-dir")
    upstream = upstream or upstream_for_config(request.config, request.upstream)
    config = dict(load_config(request.config) if config is None else config)
    origin = dict.fromkeys(config, "the config")
    if request.tiny:
        tiny = tiny_overrides(upstream, {**config, **sets})
        config.update(tiny)
        origin.update(dict.fromkeys(tiny, "--tiny"))
    config.update(sets)
    origin.update(dict.fromkeys(sets, "--set"))
    output_dir = Path(request.output_dir).resolve() if request.output_dir else None
    if output_dir:
        config["output_dir"] = str(output_dir)
    return Resolved(upstream, config, output_dir, origin)

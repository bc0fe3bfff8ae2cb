"""A run folder of `hyperrestart run`, read for analysis: its upstream, config, checkpoints and lr restarts."""
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import HyperrestartError
from ..upstream import registry
from ..upstream.lr_trace import restart_steps
from ..upstream.run_folder import RUN_CONFIG


@dataclass
class Run:
    dir: Path
    upstream: registry.Upstream
    config: dict
    checkpoints: dict = field(default_factory=dict)  # step -> checkpoint folder
    final_step: int = None  # the run folder's own weights (the model saved when training ended), at this step
    final_dir: Path = None
    kind: str = None  # what builds the model inside the tree: hyperdecoders, hyperformer or p3 (the P3 runner)

    def __post_init__(self):
        self.kind = self.kind or self.upstream.name


@dataclass(frozen=True)
class Checkpoint:
    label: str  # "init" or "checkpoint-N"
    step: int
    path: Path = None  # None: the run's initial weights (rebuilt from its config and seed)

    def as_job(self):
        return {"label": self.label, "step": self.step, "path": None if self.path is None else str(self.path)}


def _weights(folder: Path):
    return (folder / "model.safetensors").is_file() or (folder / "pytorch_model.bin").is_file()


def infer_upstream(config, explicit=None) -> registry.Upstream:
    """--upstream, else the one upstream whose training arguments include every key of the config."""
    if explicit:
        return registry.upstream_named(explicit)
    from ..sweep.runners import recorded_upstream_arguments
    fields = recorded_upstream_arguments()
    matches = [name for name, names in fields.items() if set(config) <= set(names)]
    if len(matches) != 1:
        raise HyperrestartError("cannot tell which upstream trained this run from its config "
                                f"({'both match' if matches else 'no upstream takes all its keys'}); "
                                f"pass --upstream {'|'.join(registry.UPSTREAMS)}")
    return registry.upstream_named(matches[0])


P3_RUN_CONFIG = "run_config.json"  # what the P3 runner writes into its output dir


def _checkpoints(run_dir: Path):
    checkpoints = {}
    for folder in run_dir.glob("checkpoint-*"):
        tail = folder.name.split("-", 1)[1]
        if folder.is_dir() and tail.isdigit() and _weights(folder):
            checkpoints[int(tail)] = folder
    return dict(sorted(checkpoints.items()))


def _open_p3(run_dir: Path) -> Run:
    """A run of the P3 runner (`hyperrestart p3`): its arguments from run_config.json, checkpoint-N folders and
    final_model/ (written when max_steps was reached)."""
    path = run_dir / P3_RUN_CONFIG
    try:
        args = json.loads(path.read_text(encoding="utf-8"))["args"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HyperrestartError(f"{path} is not the P3 runner's run_config.json ({exc}); the run folder is damaged")
    final = run_dir / "final_model"
    final_step = int(args["max_steps"]) if _weights(final) else None
    return Run(run_dir, registry.upstream_named("hyperdecoders"), args, _checkpoints(run_dir), final_step,
               final if final_step is not None else None, kind="p3")


def open_run(run_dir, upstream=None) -> Run:
    """The run in `run_dir` (written by `hyperrestart run` or `hyperrestart p3`), with its checkpoints that hold
    model weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HyperrestartError(f"{run_dir} is not a folder; pass the --output-dir of a `hyperrestart run` or "
                                f"`hyperrestart p3`")
    config_file = run_dir / RUN_CONFIG
    if not config_file.is_file() and (run_dir / P3_RUN_CONFIG).is_file():
        return _open_p3(run_dir)
    if not config_file.is_file():
        raise HyperrestartError(f"{run_dir} holds no {RUN_CONFIG}: it is not a run folder of "
                                f"`hyperrestart run` (pass the folder that `run` printed as `output dir`)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise HyperrestartError(f"{config_file} is not valid JSON ({exc}); the run folder is damaged") from None
    checkpoints = _checkpoints(run_dir)
    final_step = None
    if _weights(run_dir) and (run_dir / "trainer_state.json").is_file():
        try:
            final_step = int(json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
        except (ValueError, KeyError, TypeError):
            final_step = None
    return Run(run_dir, infer_upstream(config, upstream), config, checkpoints, final_step,
               run_dir if final_step is not None else None)


def select(run: Run, which) -> list:
    """Checkpoints for --checkpoint init|N|last|final|all (N: the step of a checkpoint-N folder; final: the weights
    saved in the run folder itself when training ended: with load_best_model_at_end, the best checkpoint's)."""
    init = Checkpoint("init", 0)
    saved = [Checkpoint(f"checkpoint-{step}", step, path) for step, path in run.checkpoints.items()]
    final = None if run.final_step is None else Checkpoint("final", run.final_step, run.final_dir)
    if which == "final":
        if final is None:
            raise HyperrestartError(f"{run.dir} holds no final model (weights and trainer_state.json); "
                                    f"use a checkpoint step, last or init")
        return [final]
    if not saved and final is not None:
        saved = [final]
    if which == "init":
        return [init]
    if which == "all":
        return [init] + saved
    if which == "last":
        if not saved:
            raise HyperrestartError(f"{run.dir} has no checkpoint-N folder with model weights; "
                                    f"use --checkpoint init, or train with save_steps set")
        return [saved[-1]]
    if str(which).isdigit() and int(which) == 0:
        return [init]
    if str(which).isdigit() and any(c.step == int(which) for c in saved):
        return [c for c in saved if c.step == int(which)]
    available = ", ".join(str(c.step) for c in saved) or "none"
    raise HyperrestartError(f"--checkpoint {which}: choose init, last, final, all or a saved step ({available})")


def lr_trace(run: Run):
    """[(step, lr applied)] from the run's lr_trace.csv (the P3 runner's train_log.csv: its lr column)."""
    name, column = ("train_log.csv", "lr") if run.kind == "p3" else ("lr_trace.csv", "lr_applied")
    path = run.dir / name
    if not path.is_file():
        raise HyperrestartError(f"{path} is missing: the run writes it while training; track needs it to find "
                                f"the restarts")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return [(int(r["step"]), float(r[column])) for r in rows]
    except (KeyError, ValueError) as exc:
        raise HyperrestartError(f"{path} is damaged ({exc}); expected the columns step,{column}") from None


def track_steps(run: Run):
    """The steps `track` analyses: 0 (init), the last step of every lr cycle (the weights a restart starts from:
    restart step - 1) and the last step, from lr_trace.csv."""
    trace = lr_trace(run)
    last = trace[-1][0]
    ends = [step - 1 for step in restart_steps(trace) if step - 1 > 0]
    return sorted({0, *ends, last})

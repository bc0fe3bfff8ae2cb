"""What `hyperrestart p3` checks before it starts anything: the runner's effective paths (its --config file, then the
command's flags) exist and have the layout the runner reads (a model folder, a tokenizer, a prepared data folder, a
place for the run folder). Every problem is one line; all of them are reported at once."""
import json
import os
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError

PATH_OPTIONS = ("model_name_or_path", "tokenizer_name", "data_dir", "output_dir", "hdconfig")
READ_OPTIONS = PATH_OPTIONS + ("mixing", "seed")  # the runner options the tool reads before it starts
REQUIRED = ("model_name_or_path", "data_dir", "output_dir")
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".txt")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def effective_options(runner_args):
    """{option: value} of READ_OPTIONS as the runner will see them: its --config file, then the flags (last wins)."""
    values, flags = {}, {}
    args = list(runner_args)
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, _, inline = arg[2:].partition("=")
        name = name.replace("-", "_")
        value = inline if inline else (args[i + 1] if i + 1 < len(args) else None)
        if name in READ_OPTIONS + ("config", "config_file") and value is not None:
            flags[name] = value
    config = flags.pop("config_file", None) or flags.pop("config", None)
    if config:
        try:
            loaded = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HyperrestartError(f"--config {config}: cannot read it as JSON ({exc}); fix the config file")
        if isinstance(loaded, dict):
            values.update({k: v for k, v in loaded.items() if k in READ_OPTIONS and isinstance(v, (str, int))
                           and not isinstance(v, bool)})
    values.update(flags)
    return values


def is_local(value):
    """A path the user means as a local folder (an absolute or ./-relative one, or one that exists), not a hub id
    (hub ids are NAME or ORG/NAME)."""
    return (os.path.exists(value) or os.path.isabs(value) or value.startswith(("./", "../", "~", "."))
            or value.count("/") > 1)


def hub_or_local(option, value, check):
    """Problems of a model or tokenizer value: a local folder is checked by `check`; a hub id needs the network."""
    if not is_local(value):
        offline = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "").lower() in ("1", "true", "yes")]
        if offline:
            return [f"--{option.replace('_', '-')} {value}: no such local folder, and {offline[0]}=1 forbids "
                    "downloading it from the hub; give the local folder of the checkpoint"]
        return []
    path = Path(value).expanduser()
    if not path.exists():
        return [f"--{option.replace('_', '-')} {value} does not exist; give the local folder of a T5 checkpoint "
                "(e.g. a downloaded google/flan-t5-base) or a hub id"]
    if not path.is_dir():
        return [f"--{option.replace('_', '-')} {value} is a file, not a checkpoint folder"]
    return check(option, path)


def model_problems(option, path):
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in WEIGHTS):
        missing.append(f"weights ({' or '.join(WEIGHTS[:2])})")
    return [f"--{option.replace('_', '-')} {path} is not a model folder: no {', no '.join(missing)}; give a "
            "save_pretrained() folder"] if missing else []


def tokenizer_problems(option, path):
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        return []
    return [f"{'--tokenizer-name' if option == 'tokenizer_name' else '--model-name-or-path'} {path} holds no "
            f"tokenizer ({', '.join(TOKENIZER_FILES)}); save the tokenizer there or pass --tokenizer_name DIR "
            "after --"]


def data_problems(value):
    path = Path(value).expanduser()
    hint = f"prepare it with `hyperrestart prepare-p3 --source P3_COPY --out {value}`"
    if not path.exists():
        return [f"--data-dir {value} does not exist; {hint}"]
    if not path.is_dir():
        return [f"--data-dir {value} is a file, not a folder; {hint}"]
    found = any(p.is_file() and p.suffix in DATA_SUFFIXES for level in ("*", "*/*") for p in path.glob(level))
    if not found:
        return [f"--data-dir {value} holds no data files (expected {path / 'data' / 'train.parquet'}); {hint}"]
    return []


def mixing_problems(data_dir, mixing):
    """The manifest's mixing rates checked against its per-task train rows, as the runner checks them against the
    data (p3_runner/mixing.py: declared_rates, check_rates)."""
    from hyperrestart.p3.runner import runner_part

    if mixing == "off":
        return []
    mixing_module = runner_part("mixing")
    path = Path(data_dir).expanduser() / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        rates = mixing_module.declared_rates(manifest, mixing, path)
        if rates is None:
            return []
        train = {task: entry["train"] for task, entry in (manifest.get("per_task") or {}).items()}
        mixing_module.check_rates(rates, train, path)
    except (OSError, AttributeError, KeyError, TypeError) as exc:
        return [f"{path}: cannot read its per-task train rows ({type(exc).__name__}: {exc}); prepare the data again"]
    except ValueError as exc:  # JSON errors too
        return [str(exc) if not isinstance(exc, json.JSONDecodeError) else f"{path}: not JSON ({exc})"]
    return []


def output_problems(value):
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        return [f"--output-dir {value} is a file, not a folder; pick another --output-dir"]
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return [f"--output-dir {value}: {ancestor} is a file, not a folder; pick another --output-dir"]
            if not os.access(ancestor, os.W_OK | os.X_OK) and not path.exists():
                return [f"--output-dir {value}: cannot create it in {ancestor} (not writable); pick another"]
            break
    return []


def problems(runner_args):
    """Every problem with the runner's paths and the data's mixing rates, one line each (empty when it may start)."""
    values = effective_options(runner_args)
    found = [f"--{name.replace('_', '-')} is required (on the command line or in --config)"
             for name in REQUIRED if not values.get(name)]
    if values.get("model_name_or_path"):
        found += hub_or_local("model_name_or_path", values["model_name_or_path"], model_problems)
        model = Path(values["model_name_or_path"]).expanduser()
        if not values.get("tokenizer_name") and is_local(values["model_name_or_path"]) and model.is_dir():
            found += tokenizer_problems("model_name_or_path", model)
    if values.get("tokenizer_name"):
        found += hub_or_local("tokenizer_name", values["tokenizer_name"], tokenizer_problems)
    if values.get("data_dir"):
        found += data_problems(values["data_dir"]) or mixing_problems(values["data_dir"], values.get("mixing", "auto"))
    if values.get("output_dir"):
        found += output_problems(values["output_dir"])
    if values.get("hdconfig") and not Path(values["hdconfig"]).expanduser().is_file():
        found.append(f"--hdconfig {values['hdconfig']} is not a file; give the adapter settings JSON")
    return found


def check(runner_args):
    """Raise one HyperrestartError listing every problem (one line each) before anything starts."""
    if any(arg in ("-h", "--help") for arg in runner_args):
        return
    found = problems(runner_args)
    if found:
        raise HyperrestartError("\n".join(found))

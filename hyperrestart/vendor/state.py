"""The state file a materialised tree carries (.git/hyperrestart-state.json): what was built, from what. Read back
checked, so a damaged one is reported with its repair, never followed."""
import json
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json

STATE_FILE = "hyperrestart-state.json"  # kept inside .git: not part of the tree
# key -> (type, required); patches, overlay and git_metadata map names to hashes
SHAPE = {"upstream": (str, True), "url": (str, True), "commit": (str, True), "profile": (str, True),
         "result_tree": (str, True), "lock_result_tree": (str, True), "patches": (dict, True),
         "overlay": (dict, True), "head": (str, False), "git_metadata": (dict, False)}


class DamagedStateError(HyperrestartError):
    """The state file exists but cannot be trusted."""

    def __init__(self, path, reason):
        self.path, self.reason = Path(path), reason
        tree = self.path.parent.parent
        super().__init__(f"{path} is damaged ({reason}); repair: `python bootstrap.py --force --dest {tree.parent} "
                         f"--only {tree.name}` moves the tree, whole, to {tree.parent}/.hyperrestart-backups/ and "
                         f"builds it again")


def state_path(tree: Path) -> Path:
    return Path(tree) / ".git" / STATE_FILE


def shape_problem(state):
    """What is wrong with the shape of a parsed state file, or None."""
    if type(state) is not dict:
        return f"holds a JSON {type(state).__name__}, not an object"
    for key, (kind, required) in SHAPE.items():
        if key not in state:
            if required:
                return f"no {key!r}"
            continue
        value = state[key]
        if type(value) is not kind:
            return f"{key!r} is {type(value).__name__} {value!r:.40}, not {kind.__name__}"
        if kind is dict and not all(type(k) is str and type(v) is str for k, v in value.items()):
            return f"{key!r} must map names to hash strings"
    return None


def read_state(tree: Path):
    """The state of TREE, None when it has no state file; DamagedStateError when it is unreadable or misshapen."""
    path = state_path(tree)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedStateError(path, f"not readable JSON: {exc}") from None
    problem = shape_problem(state)
    if problem:
        raise DamagedStateError(path, problem)
    return state


def write_state(tree: Path, state: dict):
    atomic_write_json(state_path(tree), state, sort_keys=True)

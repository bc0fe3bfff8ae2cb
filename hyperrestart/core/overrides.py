"""`KEY=VALUE` settings (`--set`, sweep grids): the one parser, typed by the kinds an argument takes."""
import json
import re

from hyperrestart.core.errors import HyperrestartError

KIND_EXAMPLES = {"int": "an integer, e.g. 65535", "float": "a number, e.g. 3e-4", "bool": "true or false",
                 "list": "a JSON list, e.g. '[\"rte\", \"mrpc\"]'", "dict": "a JSON object, e.g. '{\"a\": 1}'",
                 "str": "a string", "null": "null"}


def _json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list", dict: "dict"}[type(value)]


def parse_set(item, kinds=None):
    """"key=value" -> (key, value). `kinds` maps an argument name to the JSON kinds it takes (argument_spec): the
    value must be JSON of one of them, except that a string argument also takes a bare word as the string. Without
    a known kind the value is JSON when it parses, else the string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise HyperrestartError(f"--set {item!r}: expected key=value with a training-argument name as key, "
                                f"e.g. --set max_steps=65535")
    accepted = (kinds or {}).get(key)
    try:
        value, parsed = json.loads(raw), True
    except ValueError:
        value, parsed = raw, False
    if not accepted or "any" in accepted:
        return key, value
    if parsed:
        kind = _json_kind(value)
        if kind in accepted or (kind == "int" and "float" in accepted):
            return key, value
    if "str" in accepted:
        return key, raw
    wanted = " or ".join(KIND_EXAMPLES[k] for k in sorted(accepted) if k != "null")
    raise HyperrestartError(f"--set {item}: {key} takes {wanted}" + (" (or null)" if "null" in accepted else "")
                            + f", not {raw!r}")


def apply_overrides(config, items, kinds=None):
    resolved = dict(config)
    for item in items or ():
        key, value = parse_set(item, kinds)
        resolved[key] = value
    return resolved

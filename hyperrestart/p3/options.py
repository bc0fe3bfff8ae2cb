"""The P3 runner's option names and the JSON kinds each takes, read from its argument dataclasses (what a sweep may
set for `runner: p3`)."""
import dataclasses
import enum
import types
import typing

from hyperrestart.p3.runner import arguments_module

NOT_SETTABLE = ("config",)  # the option naming the config file itself: a sweep writes that file


def json_kinds(tp) -> set:
    """The JSON kinds a field of type `tp` takes: null, bool, int, float, str, list, dict, any (the vocabulary of
    the upstream argument spec, hyperrestart.upstream.arguments)."""
    if tp is type(None):
        return {"null"}
    if tp is bool:
        return {"bool"}
    if tp is int:
        return {"int"}
    if tp is float:
        return {"float"}
    if tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return {"str"}
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return set().union(*(json_kinds(type(value)) for value in typing.get_args(tp)))
    if origin is typing.Union or origin is types.UnionType:
        return set().union(*(json_kinds(arg) for arg in typing.get_args(tp)))
    if tp in (list, tuple) or origin in (list, tuple):
        return {"list"}
    if tp is dict or origin is dict:
        return {"dict"}
    return {"any"}


def runner_option_kinds() -> dict:
    """{option name: set of JSON kinds} of every P3 runner option, from the fields of its argument dataclasses
    (ModelArguments, DataArguments, P3TrainingArguments); no torch, no argparse."""
    module = arguments_module()
    hints = {}
    for cls in module.ARGUMENT_CLASSES:
        hints.update(typing.get_type_hints(cls))
    return {f.name: json_kinds(hints[f.name]) for cls in module.ARGUMENT_CLASSES for f in dataclasses.fields(cls)
            if f.name not in NOT_SETTABLE}

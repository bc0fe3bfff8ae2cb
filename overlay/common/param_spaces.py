"""The paper's parameter spaces, defined once (Zhang et al., NAACL 2025, Sec. 3 and Fig. 3).

- ``hypernetwork`` (phi): the parameters of the weight-generating modules: hyperdecoders' parameter generators
  (``ParameterGenerator``, with the encoder-output MLP and task embedding that feed them) and hyperformer's
  task-conditioned hypernetworks (``TaskEmbeddingController``, ``AdapterHyperNet``, ``AdapterLayersHyperNet(One)Controller``,
  ``LayerNormHyperNet`` ...).
- ``main`` (theta = H(C; phi)): the tensors those modules generate (adapter and layer-norm weights), not parameters:
  ``weight_generator_modules`` names the modules whose outputs they are (the analysis perturbs them with forward hooks).
- ``backbone``: the main model's own (trainable) parameters: every parameter that is not the hypernetwork's.

Modules are found BY CLASS NAME (the class or any base class), so this file works for both upstreams without importing
them. It is dropped into both trees (``third_party/trainers/param_spaces.py``) and loaded by the tool from overlay/;
Python-3.7 syntax, torch and the standard library only.
"""
from collections import OrderedDict

SPACES = ("hypernetwork", "main", "backbone")
GROUPS = ("hypernetwork", "backbone")  # the optimizer-side split: main holds generated tensors, not parameters

# Classes whose modules (and everything inside them) form the hypernetwork.
HYPERNETWORK_CLASSES = (
    # allenai/hyperdecoders (hyperdecoder/modeling/adapter_generators.py)
    "ParameterGenerator", "SimpleGenerator",
    # rabeehk/hyperformer (hyperformer/adapters/)
    "TaskEmbeddingController", "TaskHyperNet", "AdapterHyperNet", "AdapterLayersHyperNet",
    "AdapterLayersHyperNetController", "AdapterLayersOneHyperNetController", "LayerNormHyperNet",
)
# Children (by attribute name) of other classes that only feed a generator: hyperdecoders' T5StackWithAdapter pools
# the encoder output through `mlp` (process_encoder_output) or embeds the task (`adapter_task_embedding`) before its
# `param_gen`.
HYPERNETWORK_CHILDREN = {"T5StackWithAdapter": ("mlp", "adapter_task_embedding")}
# Modules whose outputs are the generated main-network weights theta, and whether those outputs carry a leading batch
# dimension (hyperdecoders generates per example from the encoder output; hyperformer per task and layer).
WEIGHT_GENERATORS = OrderedDict([
    ("ParameterGenerator", True),
    ("AdapterLayersHyperNet", False),
    ("AdapterHyperNet", False),
    ("LayerNormHyperNet", False),
])


def _class_names(module):
    return set(cls.__name__ for cls in type(module).__mro__)


def _topmost(model, is_match):
    """[(qualified name, module)] of the matches nearest the root, in registration order."""
    found = []

    def visit(prefix, module):
        for name, child in module.named_children():
            qualified = prefix + name
            if is_match(module, name, child):
                found.append((qualified, child))
            else:
                visit(qualified + ".", child)

    visit("", model)
    return found


def _is_hypernetwork(parent, name, child):
    if _class_names(child) & set(HYPERNETWORK_CLASSES):
        return True
    return any(name in HYPERNETWORK_CHILDREN.get(cls, ()) for cls in _class_names(parent))


def hypernetwork_modules(model):
    """[(qualified_name, module)]: the weight-generating modules, top-most matches only (none inside another)."""
    if _class_names(model) & set(HYPERNETWORK_CLASSES):
        return [("", model)]
    return _topmost(model, _is_hypernetwork)


def weight_generator_modules(model):
    """[(qualified_name, module, batched)]: the modules whose outputs are the generated weights (the `main` space),
    innermost generators included (a generator may sit inside a hypernetwork controller); `batched` is True when
    the outputs' first dimension is the batch."""
    found = []
    for name, module in model.named_modules():
        for cls in type(module).__mro__:
            if cls.__name__ in WEIGHT_GENERATORS:
                found.append((name, module, WEIGHT_GENERATORS[cls.__name__]))
                break
    return found


def parameter_groups(model, trainable_only=True):
    """{"hypernetwork": [(name, param)], "backbone": [(name, param)]}: disjoint, every (trainable) parameter once
    (shared parameters under their first name), in model.named_parameters() order."""
    hyper_ids = set()
    for _, module in hypernetwork_modules(model):
        hyper_ids.update(id(p) for p in module.parameters())
    groups = {"hypernetwork": [], "backbone": []}
    for name, param in model.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        groups["hypernetwork" if id(param) in hyper_ids else "backbone"].append((name, param))
    return groups


def has_space(model, space):
    """Whether `model` has parameter space `space` (one of SPACES); e.g. False for "hypernetwork" on plain T5."""
    if space not in SPACES:
        raise ValueError("unknown parameter space %r; choose one of: %s" % (space, ", ".join(SPACES)))
    if space == "main":
        return bool(weight_generator_modules(model))
    return bool(parameter_groups(model, trainable_only=True)[space])


def _count(items):
    counts = OrderedDict()
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join("%s x%d" % (name, n) for name, n in counts.items()) or "none"


def describe(model):
    """One line per space: the module classes found and the parameter counts."""
    hyper = hypernetwork_modules(model)
    every = parameter_groups(model, trainable_only=False)
    trainable = parameter_groups(model, trainable_only=True)

    def numel(group):
        return sum(p.numel() for _, p in group)

    generators = weight_generator_modules(model)
    lines = [
        "hypernetwork: %s; %d parameters (%d trainable)" % (
            _count(type(m).__name__ for _, m in hyper), numel(every["hypernetwork"]), numel(trainable["hypernetwork"])),
        "main: the outputs of %s%s" % (
            _count(type(m).__name__ for _, m, _ in generators),
            " (per example)" if any(b for _, _, b in generators) else ""),
        "backbone: %d parameters (%d trainable)" % (numel(every["backbone"]), numel(trainable["backbone"])),
    ]
    return "\n".join(lines)

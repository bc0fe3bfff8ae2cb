"""overlay/common/param_spaces.py: the hypernetwork / main / backbone split, on small torch modules named like the
upstreams' classes, and on the real module classes of both upstreams (built tiny, in each upstream's environment)."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from hyperrestart.core.overlay_import import load_overlay_module

ROOT = Path(__file__).resolve().parent.parent
PARAM_SPACES = ROOT / "overlay" / "common" / "param_spaces.py"
ps = load_overlay_module("hyperrestart_param_spaces", PARAM_SPACES)
UPSTREAM = Path(os.environ.get("HYPERRESTART_UPSTREAM_DEST") or ROOT / "upstream")


class SimpleGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(4, 3)
        self.weight_up = nn.Linear(3, 6)

    def forward(self, x):
        return self.weight_up(torch.relu(self.linear1(x)))


class ParameterGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer_embed = nn.Embedding(2, 4)
        self.decoder = SimpleGenerator()

    def forward(self, x):
        return [self.decoder(x + self.layer_embed.weight[i]) for i in range(2)]


class MyGenerator(ParameterGenerator):
    """A subclass is matched through its base class's name."""


class T5StackWithAdapter(nn.Module):
    def __init__(self, generator=ParameterGenerator):
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.param_gen = generator()


class Model(nn.Module):
    def __init__(self, generator=ParameterGenerator):
        super().__init__()
        self.shared = nn.Embedding(10, 4)
        self.encoder = T5StackWithAdapter(generator)
        self.lm_head = nn.Linear(4, 10, bias=False)
        self.lm_head.weight = self.shared.weight  # tied: one parameter, listed once


def names(pairs):
    return [name for name, _ in pairs]


def test_hypernetwork_modules_are_the_topmost_generators_and_their_feeders():
    model = Model()
    found = ps.hypernetwork_modules(model)
    assert names(found) == ["encoder.mlp", "encoder.param_gen"]
    assert [type(m).__name__ for _, m in found] == ["Sequential", "ParameterGenerator"]


def test_groups_are_disjoint_complete_and_in_model_order():
    model = Model()
    groups = ps.parameter_groups(model)
    assert set(groups) == set(ps.GROUPS)
    hyper, backbone = names(groups["hypernetwork"]), names(groups["backbone"])
    assert hyper == [n for n, _ in model.named_parameters() if n.startswith(("encoder.mlp", "encoder.param_gen"))]
    assert backbone == ["shared.weight", "encoder.block.weight", "encoder.block.bias"]
    assert not set(hyper) & set(backbone)
    ids = [id(p) for _, p in groups["hypernetwork"] + groups["backbone"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once (tied included)


def test_trainable_only_drops_frozen_parameters_from_both_groups():
    model = Model()
    model.shared.weight.requires_grad_(False)
    model.encoder.param_gen.layer_embed.weight.requires_grad_(False)
    trainable = ps.parameter_groups(model)
    every = ps.parameter_groups(model, trainable_only=False)
    assert "shared.weight" not in names(trainable["backbone"]) and "shared.weight" in names(every["backbone"])
    frozen = "encoder.param_gen.layer_embed.weight"
    assert frozen not in names(trainable["hypernetwork"]) and frozen in names(every["hypernetwork"])


def test_subclasses_match_by_base_class_name():
    model = Model(MyGenerator)
    assert names(ps.hypernetwork_modules(model)) == ["encoder.mlp", "encoder.param_gen"]
    assert [(n, b) for n, _, b in ps.weight_generator_modules(model)] == [("encoder.param_gen", True)]


def test_plain_model_has_no_hypernetwork_and_no_main_space():
    plain = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    assert ps.hypernetwork_modules(plain) == []
    assert not ps.has_space(plain, "hypernetwork") and not ps.has_space(plain, "main")
    assert ps.has_space(plain, "backbone")
    assert names(ps.parameter_groups(plain)["backbone"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(ValueError, match="unknown parameter space 'theta'; choose one of: hypernetwork, main"):
        ps.has_space(plain, "theta")


def test_a_model_that_is_a_generator_is_all_hypernetwork():
    gen = ParameterGenerator()
    assert names(ps.hypernetwork_modules(gen)) == [""]
    assert ps.parameter_groups(gen)["backbone"] == []


def test_describe_names_classes_and_counts():
    model = Model()
    text = ps.describe(model).splitlines()
    n_hyper = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("encoder.mlp", "encoder.param_gen")))
    assert text[0] == f"hypernetwork: Sequential x1, ParameterGenerator x1; {n_hyper} parameters ({n_hyper} trainable)"
    assert text[1] == "main: the outputs of ParameterGenerator x1 (per example)"
    assert text[2] == "backbone: 60 parameters (60 trainable)"


def test_file_is_python37_syntax_and_imports_only_torch_and_stdlib():
    source = PARAM_SPACES.read_text(encoding="utf-8")
    import ast
    tree = ast.parse(source, feature_version=(3, 7))
    imported = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"collections", "torch"}


# --- the real upstream classes ---------------------------------------------------------------------------------

HYPERDECODERS_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
import param_spaces as ps
from modeling.adapter_t5 import T5ForConditionalGenerationWithAdapter, T5WithAdapterConfig
cfg = T5WithAdapterConfig(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2, decoder_start_token_id=0,
                          encoder_adapter="manual", decoder_adapter="generated", encoder_adapter_dim=4,
                          decoder_adapter_dim=4, hypernetwork_bottleneck=6, tasks=["rte"])
cfg.process_encoder_output = True
model = T5ForConditionalGenerationWithAdapter(cfg)
groups = ps.parameter_groups(model, trainable_only=False)
print(json.dumps({
    "modules": [[n, type(m).__name__] for n, m in ps.hypernetwork_modules(model)],
    "generators": [[n, b] for n, _, b in ps.weight_generator_modules(model)],
    "hyper": [n for n, _ in groups["hypernetwork"]], "backbone": [n for n, _ in groups["backbone"]],
    "all": [n for n, _ in model.named_parameters()],
}))
"""

HYPERFORMER_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
import torch
torch.optim.lr_scheduler.SAVE_STATE_WARNING = ""
import param_spaces as ps
from hyperformer.adapters import MetaAdapterConfig
from hyperformer.third_party.models import T5Config, T5ForConditionalGeneration
out = {}
for variant in ("meta", "unique", "efficient"):
    adapter = MetaAdapterConfig()
    adapter.input_dim, adapter.tasks, adapter.task_to_adapter, adapter.task_to_embeddings = 8, ["rte", "cola"], None, None
    adapter.device, adapter.task_embedding_dim, adapter.reduction_factor = "cpu", 8, 2
    adapter.train_task_embeddings, adapter.conditional_layer_norm = True, True
    adapter.unique_hyper_net, adapter.efficient_unique_hyper_net = variant == "unique", variant == "efficient"
    cfg = T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2, train_adapters=True)
    model = T5ForConditionalGeneration(cfg, adapter_config=adapter)
    groups = ps.parameter_groups(model, trainable_only=False)
    out[variant] = {
        "modules": [[n, type(m).__name__] for n, m in ps.hypernetwork_modules(model)],
        "generators": [[n, type(m).__name__] for n, m, _ in ps.weight_generator_modules(model)],
        "hyper": [n for n, _ in groups["hypernetwork"]], "backbone": [n for n, _ in groups["backbone"]],
        "all": [n for n, _ in model.named_parameters()],
    }
print(json.dumps(out))
"""


def _probe(upstream, python, probe, package_dir):
    tree = UPSTREAM / upstream
    if not (tree / package_dir / "third_party" / "trainers" / "param_spaces.py").exists():
        pytest.skip(f"{tree} is not materialised with param_spaces.py: run `python bootstrap.py`")
    result = subprocess.run([str(python), "-c", probe, str(tree / package_dir / "third_party" / "trainers"),
                             str(tree / package_dir) if upstream == "hyperdecoders" else str(tree)],
                            capture_output=True, text=True, cwd=tree, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env_python(name):
    from hyperrestart.upstream import envs
    from hyperrestart.core.errors import HyperrestartError
    try:
        return envs.python_for(name)
    except HyperrestartError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
def test_real_hyperdecoders_generated_decoder_adapters():
    got = _probe("hyperdecoders", _env_python("hyperdecoders"), HYPERDECODERS_PROBE, "hyperdecoder")
    assert got["modules"] == [["decoder.param_gen", "ParameterGenerator"], ["decoder.mlp", "Sequential"]]
    assert got["generators"] == [["decoder.param_gen", True]]
    assert all(n.startswith(("decoder.param_gen.", "decoder.mlp.")) for n in got["hyper"])
    assert any(".adapter_layer.adapter_down_manual" in n for n in got["backbone"])  # the encoder's manual adapters
    assert sorted(got["hyper"] + got["backbone"]) == sorted(got["all"])


@pytest.mark.slow
def test_real_hyperformer_task_conditioned_hypernetworks():
    got = _probe("hyperformer", _env_python("hyperformer"), HYPERFORMER_PROBE, "hyperformer")
    for variant, data in got.items():
        assert sorted(data["hyper"] + data["backbone"]) == sorted(data["all"]), variant
        assert ["task_embedding_controller", "TaskEmbeddingController"] in data["modules"], variant
        assert not any("layer_norm" in n and "hypernet" not in n for n in data["hyper"]), variant
    meta = got["meta"]  # hyperformer: per-layer MetaAdapterController with AdapterHyperNet / LayerNormHyperNet
    assert {c for _, c in meta["generators"]} == {"AdapterHyperNet", "LayerNormHyperNet"}
    assert any(n.endswith("adapter_controller.meta_up_sampler") for n, _ in meta["modules"])
    unique = got["unique"]  # one AdapterLayersHyperNetController per stack generates every layer's adapters
    assert ["encoder.adapter_layers_hyper_net", "AdapterLayersHyperNetController"] in unique["modules"]
    assert {c for _, c in unique["generators"]} == {"AdapterLayersHyperNet", "LayerNormHyperNet"}
    efficient = got["efficient"]
    assert ["decoder.adapter_layers_hyper_net", "AdapterLayersOneHyperNetController"] in efficient["modules"]

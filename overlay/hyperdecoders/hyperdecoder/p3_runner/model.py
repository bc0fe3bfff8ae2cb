"""The model (T5, or hyperdecoders' adapter T5 with the released runner's adapter settings) and its optimizer."""
import json
import sys
from pathlib import Path

import torch

ENTRY_DIR = Path(__file__).resolve().parents[1]  # p3_trainer.py's folder: hyperdecoders' hyperdecoder/ in the tree
# hdconfig.json of the released runner (configs/hdConfig/hdconfig.json): the adapter settings it reads.
HDCONFIG_ADAPTER_DEFAULTS = {
    "encoder_adapter": "manual", "decoder_adapter": "generated", "encoder_adapter_dim": 64, "decoder_adapter_dim": 64,
    "hypernetwork_bottleneck": 128, "adapter_norm_input": True, "process_encoder_output": True,
    "mean_task_embeddings": False, "freeze_model": False, "unfreeze_encoder_adapters": True,
    "unfreeze_decoder_adapters": True, "unfreeze_encoder": True, "unfreeze_decoder": True,
    "unfreeze_layer_norms": True,
}


def load_model(args, source, tokenizer, tasks):
    """The model at `source` (a checkpoint folder); the hyperdecoder's task embeddings are `tasks`."""
    if args.model == "t5":
        from transformers import T5ForConditionalGeneration

        return T5ForConditionalGeneration.from_pretrained(source)
    tree = Path(args.hyperdecoders_path) if args.hyperdecoders_path else ENTRY_DIR
    if not (tree / "modeling" / "adapter_t5.py").exists():
        raise SystemExit(f"--model hyperdecoder needs hyperdecoders' adapter T5: {tree}/modeling/adapter_t5.py is "
                         "missing; run this file inside upstream/hyperdecoders/hyperdecoder or pass "
                         "--hyperdecoders_path (python bootstrap.py materialises the tree)")
    sys.path.insert(0, str(tree))
    from modeling.adapter_t5 import T5ForConditionalGenerationWithAdapter, T5WithAdapterConfig

    adapter = dict(HDCONFIG_ADAPTER_DEFAULTS)
    if args.hdconfig:
        with open(args.hdconfig, encoding="utf-8") as handle:
            given = json.load(handle)
        adapter.update({k: v for k, v in given.items() if k in HDCONFIG_ADAPTER_DEFAULTS})
    if adapter["freeze_model"]:
        raise SystemExit("freeze_model=true is not supported by the P3 runner (the paper's hdconfig trains everything)")
    config = T5WithAdapterConfig.from_pretrained(source)
    config.update({k: v for k, v in adapter.items() if not k.startswith(("freeze", "unfreeze"))})
    config.update({"tasks": sorted(tasks)})
    return T5ForConditionalGenerationWithAdapter.from_pretrained(source, config=config)


def build_optimizer(args, model):
    """AdamW, or Adafactor with a fixed lr (the released runner's settings), over the trainable parameters; one
    group per parameter space under --restart_scope hypernetwork/backbone (a scope the model lacks is refused)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if args.restart_scope != "all":
        from .schedules import trainer_hooks

        try:
            params = trainer_hooks().scoped_param_groups(model, [{"params": params}], args)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                 betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=args.learning_rate, scale_parameter=False, relative_step=False, warmup_init=False,
                     weight_decay=0.0)

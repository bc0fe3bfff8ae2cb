"""Evaluation: greedy generation on the eval split and the paper's Rouge-L, written to OUTPUT_DIR/eval/."""
import json
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoints import unwrap
from .data import collate


def rouge_l(predictions, references, tasks=None):
    """The paper's metric: rouge_score RougeScorer(["rougeL"], use_stemmer=True) F-measure, mean over examples x 100
    (micro), plus the mean over tasks of each task's mean (macro) and the per-task scores."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    result = {"rougeL_micro": 100.0 * float(np.mean(scores)) if scores else float("nan"), "num_examples": len(scores)}
    if tasks is not None:
        by_task = {}
        for task, score in zip(tasks, scores):
            by_task.setdefault(task, []).append(score)
        per_task = {task: 100.0 * float(np.mean(values)) for task, values in sorted(by_task.items())}
        result.update(rougeL_macro=float(np.mean(list(per_task.values()))) if per_task else float("nan"),
                      num_tasks=len(per_task), per_task=per_task)
    result["scores"] = scores
    return result


@torch.no_grad()
def evaluate(args, model, tokenizer, dataset, device, autocast, step):
    """Greedy-generate the eval split (longest sources first), score it, write OUTPUT_DIR/eval/step_STEP.json and
    its predictions (.jsonl); returns the scores."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    start = time.time()
    order = np.argsort(-np.asarray(dataset["source_length"]), kind="stable")
    predictions = [None] * len(dataset)
    generation = {"max_new_tokens": args.generation_max_new_tokens, "num_beams": args.generation_num_beams,
                  "do_sample": False}
    for begin in range(0, len(order), args.per_device_eval_batch_size):
        idx = order[begin:begin + args.per_device_eval_batch_size].tolist()
        rows = dataset[idx]
        batch = collate(rows["input_ids"], rows["labels"], tokenizer.pad_token_id)
        extra = {"tasks": rows["task"]} if args.model == "hyperdecoder" else {}
        with autocast():
            output = model.generate(input_ids=batch["input_ids"].to(device),
                                    attention_mask=batch["attention_mask"].to(device), **generation, **extra)
        for i, text in zip(idx, tokenizer.batch_decode(output, skip_special_tokens=True)):
            predictions[i] = text
    references, tasks = dataset["targets"], dataset["task"]
    result = rouge_l(predictions, references, tasks)
    scores = result.pop("scores")
    result.update(step=step, eval_seconds=round(time.time() - start, 3), generation=generation,
                  metric="rouge_score RougeScorer(['rougeL'], use_stemmer=True) F-measure, mean x 100")
    folder = Path(args.output_dir) / "eval"
    folder.mkdir(exist_ok=True)
    (folder / f"step_{step}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    with open(folder / f"step_{step}_predictions.jsonl", "w", encoding="utf-8") as handle:
        for task, ref, pred, score in zip(tasks, references, predictions, scores):
            handle.write(json.dumps({"task": task, "target": ref, "prediction": pred, "rougeL": score}) + "\n")
    if was_training:
        model.train()
    return result

"""P3 task lists, the task -> original dataset mapping, T0's per-dataset caps and the seeded sample a capped task
keeps.

A P3 task name is ``{dataset}_{prompt template}``, where ``{dataset}`` is a Hugging Face dataset name with its subset
joined by ``_`` (``adversarial_qa_dbidaf``, ``duorc_SelfRC``, ``super_glue_boolq``). The split between dataset and
template is not recoverable from the name alone, so we match the longest prefix from P3_TEMPLATES (every dataset in
the P3/T0 mixtures). T0 treats each dataset *subset* as its own dataset for the caps (adversarial_qa_dbidaf and
adversarial_qa_dbert are capped separately), and so do we.
"""
import hashlib
from importlib import resources
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError

# Every dataset (with subset) in bigscience/P3, as the prefix of its task names, with its number of prompt templates
# in P3 (its train tasks, without the *_score_eval copies). T0's cap divides by this number whatever subset of the
# templates one trains on. anli: 15 templates, each published once per round (r1, r2, r3).
P3_TEMPLATES = {
    "adversarial_qa_dbert": 5, "adversarial_qa_dbidaf": 5, "adversarial_qa_droberta": 5, "ag_news": 7,
    "ai2_arc_ARC_Challenge": 6, "ai2_arc_ARC_Easy": 6, "amazon_polarity": 9, "anli": 15, "app_reviews": 4,
    "cnn_dailymail_3.0.0": 9, "common_gen": 9, "cos_e_v1.11": 11, "cosmos_qa": 13, "dbpedia_14": 4, "dream": 5,
    "duorc_ParaphraseRC": 9, "duorc_SelfRC": 9, "gigaword": 9, "glue_mrpc": 7, "glue_qqp": 6, "hellaswag": 11,
    "imdb": 11, "kilt_tasks_hotpotqa": 5, "multi_news": 6, "openbookqa_main": 7, "paws_labeled_final": 12, "piqa": 11,
    "qasc": 8, "quail": 13, "quarel": 5, "quartz": 8, "quoref": 11, "race_high": 8, "race_middle": 8, "ropes": 12,
    "rotten_tomatoes": 10, "samsum": 7, "sciq": 5, "social_i_qa": 6, "squad_v2": 12, "story_cloze_2016": 5,
    "super_glue_boolq": 10, "super_glue_cb": 15, "super_glue_copa": 12, "super_glue_multirc": 10,
    "super_glue_record": 20, "super_glue_rte": 10, "super_glue_wic": 10, "super_glue_wsc.fixed": 10, "trec": 18,
    "trivia_qa_unfiltered": 5, "web_questions": 5, "wiki_bio": 5, "wiki_hop_original": 9, "wiki_qa": 11,
    "winogrande_winogrande_debiased": 5, "winogrande_winogrande_xl": 5, "wiqa": 8, "xsum": 10, "yelp_review_full": 7,
}
KNOWN_DATASETS = tuple(P3_TEMPLATES)


def paper_tasks():
    """The 193 P3 tasks of the paper (Table 8), in the paper's order."""
    text = resources.files(__package__).joinpath("P3_tasks.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def dataset_of(task):
    """The original dataset a P3 task belongs to (longest known prefix), or None when no known prefix matches."""
    matches = [name for name in KNOWN_DATASETS if task == name or task.startswith(name + "_")]
    return max(matches, key=len) if matches else None


def load_task_list(path=None):
    """Tasks from a file (one per line, '#' comments allowed), or the paper's 193 when path is None.

    Raises HyperrestartError naming the file and line for empty lists, duplicates and tasks of unknown datasets."""
    if path is None:
        return paper_tasks()
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise HyperrestartError(f"cannot read task list {path}: {exc.strerror}; pass an existing file to --tasks")
    tasks, seen, problems = [], {}, []
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name in seen:
            problems.append(f"line {number}: {name!r} repeats line {seen[name]}")
            continue
        if dataset_of(name) is None:
            problems.append(f"line {number}: unknown task {name!r} (its name starts with no known P3 dataset)")
        seen[name] = number
        tasks.append(name)
    if problems:
        raise HyperrestartError(f"task list {path}: " + "; ".join(problems)
                                + ". P3 task names are {dataset}_{template}, e.g. 'quarel_choose_between'; "
                                  "fix or remove these lines")
    if not tasks:
        raise HyperrestartError(f"task list {path} names no tasks; put one P3 task name per line")
    return tasks


def per_task_caps(rows, cap_per_dataset=500000, cap_per_task=None):
    """T0's rule (promptsource/T0 seqio tasks): a dataset whose train set holds more than cap_per_dataset examples has
    each of its templates capped at cap_per_dataset // (its number of templates in P3); smaller datasets are not
    capped. rows: {task: rows in the source}; a dataset's train size is its largest task there (a P3 task holds one
    row per original example; a few templates drop the examples they do not apply to). cap_per_task additionally
    caps every task (not T0's rule; see README). 0/None = no such cap. Returns {task: cap or None}."""
    sizes = {}
    for task, count in rows.items():
        dataset = dataset_of(task)
        if dataset is None:
            raise HyperrestartError(f"unknown P3 task {task!r}: its name starts with no known P3 dataset")
        sizes[dataset] = max(sizes.get(dataset, 0), count)
    caps = {}
    for task in rows:
        dataset = dataset_of(task)
        cap = cap_per_dataset // P3_TEMPLATES[dataset] if cap_per_dataset and sizes[dataset] > cap_per_dataset else None
        if cap_per_task:
            cap = min(cap, cap_per_task) if cap is not None else cap_per_task
        caps[task] = cap
    return caps


def mixing_rates(rows, cap_per_dataset=500000, cap_per_task=None):
    """T0's mixing rates: how often each task is sampled when every row is kept (examples-proportional mixing):
    min(the task's rows, its cap), the cap being 500_000 // templates for a task of a dataset T0 caps and
    cap_per_task for every task (per_task_caps), or the task's rows when uncapped. Returns {task: rate}."""
    caps = per_task_caps(rows, cap_per_dataset, cap_per_task)
    return {task: min(count, caps[task]) if caps[task] is not None else count for task, count in rows.items()}


def sample_rows(total, cap, seed, task):
    """Sorted indices of the `cap` rows kept of a task's `total` (uniform, without replacement, reproducible):
    numpy default_rng([seed, first 8 bytes of sha256(task name) as a little-endian integer])."""
    import numpy as np

    task_key = int.from_bytes(hashlib.sha256(task.encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng([seed, task_key]).choice(total, size=cap, replace=False))

"""P3 task lists and the task -> original dataset mapping used for T0's per-dataset caps.

A P3 task name is ``{dataset}_{prompt template}``, where ``{dataset}`` is a Hugging Face dataset name with its subset
joined by ``_`` (``adversarial_qa_dbidaf``, ``duorc_SelfRC``, ``super_glue_boolq``). The split between dataset and
template is not recoverable from the name alone, so we match the longest prefix from KNOWN_DATASETS (every dataset in
the P3/T0 mixtures). T0 treats each dataset *subset* as its own dataset for the caps (adversarial_qa_dbidaf and
adversarial_qa_dbert are capped separately), and so do we.
"""
from importlib import resources
from pathlib import Path

from ..errors import HyperrestartError

# Every dataset (with subset) in bigscience/P3, as the prefix of its task names.
KNOWN_DATASETS = (
    "adversarial_qa_dbert", "adversarial_qa_dbidaf", "adversarial_qa_droberta", "ag_news", "ai2_arc_ARC_Challenge",
    "ai2_arc_ARC_Easy", "amazon_polarity", "anli", "app_reviews", "cnn_dailymail_3.0.0", "common_gen", "cos_e_v1.11",
    "cosmos_qa", "dbpedia_14", "dream", "duorc_ParaphraseRC", "duorc_SelfRC", "gigaword", "glue_mrpc", "glue_qqp",
    "hellaswag", "imdb", "kilt_tasks_hotpotqa", "multi_news", "openbookqa_main", "paws_labeled_final", "piqa", "qasc",
    "quail", "quarel", "quartz", "quoref", "race_high", "race_middle", "ropes", "rotten_tomatoes", "samsum", "sciq",
    "social_i_qa", "squad_v2", "story_cloze_2016", "super_glue_boolq", "super_glue_cb", "super_glue_copa",
    "super_glue_multirc", "super_glue_record", "super_glue_rte", "super_glue_wic", "super_glue_wsc.fixed", "trec",
    "trivia_qa_unfiltered", "web_questions", "wiki_bio", "wiki_hop_original", "wiki_qa", "winogrande_winogrande_debiased",
    "winogrande_winogrande_xl", "wiqa", "xsum", "yelp_review_full",
)


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


def per_task_caps(tasks, cap_per_dataset):
    """T0's rule: each dataset is capped at cap_per_dataset examples, divided evenly over its templates in `tasks`.

    Returns {task: cap or None (no cap)}."""
    if not cap_per_dataset:
        return {task: None for task in tasks}
    templates = {}
    for task in tasks:
        templates.setdefault(dataset_of(task) or task, []).append(task)
    return {task: cap_per_dataset // len(templates[dataset_of(task) or task]) for task in tasks}

"""A tiny random T5 and tiny GLUE-shaped data, generated once and cached, so the upstreams can run offline in seconds.

`tiny_model_dir()`: a randomly initialised T5ForConditionalGeneration (d_model 32) with a SentencePiece unigram vocab
trained on the same generated English-like text, saved in Hugging Face format (config.json with plain T5Config fields,
pytorch_model.bin + model.safetensors, spiece.model + tokenizer files) so both today's transformers and 3.5.1 read it.

`tiny_data_dir()`: `<dir>/glue` is a datasets folder whose README.md YAML declares one config per GLUE task
(columns and splits as in the hub's "glue" dataset), so `datasets.load_dataset(<dir>/glue, "rte", split="train")`
works offline; `<dir>/mrqa/{train,validation,test}.jsonl` has the hub "mrqa" columns (the hyperdecoders loader reads
`load_dataset(<dir>/mrqa, split=...)`). Labels and answers are derived from the text, so a model can learn them and
metrics are not constant. `tiny_glue_dir()` is the same without mrqa/.
"""
import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from hyperrestart.core.paths import cache_dir as _default_cache_dir

# Bump when the generated files change: the cache key includes it, so old caches are never reused.
MODEL_VERSION = "t5-tiny-v2"
DATA_VERSION = "data-tiny-v3"  # v2/v3: mrqa/ beside glue/ (v1, "glue-tiny-v1", was glue only)
SEED = 1234

MODEL_CONFIG = dict(d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=2,
                    relative_attention_num_buckets=8, dropout_rate=0.1, feed_forward_proj="relu",
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
SPM_VOCAB_SIZE = 700
EXTRA_IDS = 100

GLUE_TASKS = ("rte", "mrpc", "stsb", "cola", "sst2", "qqp", "mnli", "qnli")
ALL_GLUE_TASKS = GLUE_TASKS + ("wnli",)
# Tasks upstream treats as "large" with split_validation_test (1000 train rows become validation).
LARGE_TASKS = ("qqp", "qnli", "sst2", "mnli")
SMALL_ROWS = {"train": 300, "validation": 100, "test": 100}
MRQA_ROWS = {"train": 128, "validation": 32, "test": 32}
# The MRQA subsets hyperdecoders knows (finetune_trainer adds them to config.tasks; adapters index them).
MRQA_SUBSETS = ("HotpotQA", "NaturalQuestionsShort", "NewsQA", "SearchQA", "SQuAD", "TriviaQA-web")
LARGE_ROWS = {"train": 1200, "validation": 100, "test": 100}

# Columns of the hub's "glue" dataset per config; label names as its ClassLabel features (None: float regression).
GLUE_SCHEMA = {
    "cola": (("sentence",), ["unacceptable", "acceptable"]),
    "sst2": (("sentence",), ["negative", "positive"]),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"]),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"]),
    "stsb": (("sentence1", "sentence2"), None),
    "mnli": (("premise", "hypothesis"), ["entailment", "neutral", "contradiction"]),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"]),
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"]),
    "wnli": (("sentence1", "sentence2"), ["not_entailment", "entailment"]),
}
MNLI_SPLITS = ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")

# --- English-like text -------------------------------------------------------------------------------------------
NOUNS = ("cat dog bird horse teacher student doctor farmer child river city garden house car train ship book letter "
         "song story window door table chair apple bread coffee market school village forest mountain road bridge "
         "painter writer singer king queen soldier driver baker player friend neighbour lawyer nurse pilot").split()
VERBS = ("sees likes finds carries watches follows helps visits builds paints reads writes cleans opens closes "
         "buys sells loves hates brings takes moves fixes owns leaves").split()
POSITIVE = "good happy bright kind lovely wonderful pleasant beautiful great warm friendly brilliant".split()
NEGATIVE = "bad sad dark cruel awful terrible boring ugly poor cold angry broken".split()
NEUTRAL = "old young small large quiet busy green red tall short new long".split()
PLACES = "park station harbour valley kitchen office library museum hospital square".split()
TIMES = "today yesterday tonight often sometimes every morning in winter at noon".split()
SYLLABLES = "ka lo mi ra ve na tor sel an dun bri ho gar pen wil os ter mak li zu fen dor ca bel rin".split()
SYNONYMS = {"sees": "notices", "likes": "enjoys", "finds": "discovers", "helps": "assists", "builds": "makes",
            "buys": "purchases", "loves": "adores", "takes": "grabs", "fixes": "repairs", "visits": "calls on"}

# The environment of a --tiny run: nothing reaches a hub, no GPU, no wandb, no tokenizer threads.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "CUDA_VISIBLE_DEVICES": "", "WANDB_DISABLED": "true", "WANDB_MODE": "disabled",
               "TOKENIZERS_PARALLELISM": "false"}



class _Text:
    """Seeded generator of simple English-like sentences with the parts needed to derive labels."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

        # Made-up town names: a larger vocabulary with subword structure for the tokenizer.
        names = random.Random(SEED).sample([a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES], 600)
        self.towns = sorted(names)

    def parts(self, adjectives=None):
        r = self.rng
        adjectives = adjectives or POSITIVE + NEGATIVE + NEUTRAL
        return {"adj": r.choice(adjectives), "subj": r.choice(NOUNS), "verb": r.choice(VERBS),
                "obj": r.choice(NOUNS), "place": r.choice(PLACES), "time": r.choice(TIMES),
                "town": r.choice(self.towns)}

    @staticmethod
    def sentence(p, verb=None, negate=False):
        verb = verb or p["verb"]
        if negate:
            verb = "does not " + verb[:-1] if verb.endswith("s") else "does not " + verb
        return f"the {p['adj']} {p['subj']} from {p['town']} {verb} the {p['obj']} in the {p['place']} {p['time']} ."

    @staticmethod
    def question(p):
        return f"what does the {p['subj']} {p['verb'][:-1]} in the {p['place']} ?"

    def other(self, p):
        """Parts sharing nothing with p's subject, object and verb."""
        while True:
            q = self.parts()
            if q["subj"] != p["subj"] and q["obj"] != p["obj"] and q["verb"] != p["verb"]:
                return q

    def paraphrase(self, p):
        verb = SYNONYMS.get(p["verb"], p["verb"])
        return f"in the {p['place']} , the {p['adj']} {p['subj']} {verb} the {p['obj']} {p['time']} ."

    def corpus(self, n):
        """Sentences for tokenizer training: every word of every generator plus task prefixes and labels."""
        fixed = ["sentence: sentence1: sentence2: question: question1: question2: premise: hypothesis: hypothesis",
                 " ".join(GLUE_TASKS + ALL_GLUE_TASKS), " ".join(str(i / 10) for i in range(0, 51)),
                 " ".join(NOUNS + VERBS + POSITIVE + NEGATIVE + NEUTRAL + PLACES + TIMES),
                 " ".join(SYNONYMS.values()), "0 1 2 3 4 5 6 7 8 9 yes no true false , . ? ! : ; ' \" ( ) - "]
        lines = list(fixed)
        for _ in range(n):
            p = self.parts()
            lines += [self.sentence(p), self.question(p), self.paraphrase(p), self.sentence(p, negate=True)]
        return lines


def _rows_for_task(task, text, n):
    """n rows of one GLUE task: dicts with the hub's columns (without idx)."""
    rows = []
    r = text.rng
    for _ in range(n):
        if task == "cola":  # acceptable = the template word order; unacceptable = the words shuffled
            words = text.sentence(text.parts()).split()
            label = r.randint(0, 1)
            if not label:
                head = words[:-1]
                while head == words[:-1]:
                    r.shuffle(head)
                words = head + ["."]
            rows.append({"sentence": " ".join(words), "label": label})
        elif task == "sst2":  # sentiment of the adjective
            label = r.randint(0, 1)
            p = text.parts(POSITIVE if label else NEGATIVE)
            rows.append({"sentence": text.sentence(p), "label": label})
        elif task in ("mrpc", "qqp", "rte", "wnli"):
            p = text.parts()
            same = r.randint(0, 1)
            q = p if same else dict(text.other(p), place=p["place"], time=p["time"])
            if task == "qqp":
                first, second = text.question(p), text.question(dict(q, place=r.choice(PLACES)))
            elif task == "rte":
                first, second = text.sentence(p), f"the {q['subj']} {q['verb']} the {q['obj']} ."
            else:
                first, second = text.sentence(p), text.paraphrase(q)
            cols = GLUE_SCHEMA[task][0]
            positive = GLUE_SCHEMA[task][1].index({"mrpc": "equivalent", "qqp": "duplicate", "rte": "entailment",
                                                   "wnli": "entailment"}[task])
            rows.append({cols[0]: first, cols[1]: second, "label": positive if same else 1 - positive})
        elif task == "stsb":  # similarity = 5 x share of the five content slots that match
            p = text.parts()
            q = dict(p)
            keys = ["adj", "subj", "verb", "obj", "place"]
            changed = r.sample(keys, r.randint(0, 5))
            fresh = text.other(p)
            fresh["adj"] = next(a for a in r.sample(POSITIVE + NEGATIVE + NEUTRAL, 3) if a != p["adj"])
            fresh["place"] = next(a for a in r.sample(PLACES, 3) if a != p["place"])
            for key in changed:
                q[key] = fresh[key]
            score = round(5.0 * (5 - len(changed)) / 5 + r.choice((-0.2, 0.0, 0.0, 0.2)), 1)
            rows.append({"sentence1": text.sentence(p), "sentence2": text.sentence(q),
                         "label": float(min(5.0, max(0.0, score)))})
        elif task == "mnli":  # 0 entailment (shorter restatement), 1 neutral (unrelated), 2 contradiction (negated)
            p = text.parts()
            label = r.randint(0, 2)
            if label == 0:
                hypothesis = f"the {p['subj']} {p['verb']} the {p['obj']} ."
            elif label == 1:
                q = text.other(p)
                hypothesis = f"the {q['subj']} {q['verb']} the {q['obj']} ."
            else:
                hypothesis = text.sentence(p, negate=True)
            rows.append({"premise": text.sentence(p), "hypothesis": hypothesis, "label": label})
        elif task == "qnli":  # 0 entailment: the sentence is about the question's subject and verb
            p = text.parts()
            label = r.randint(0, 1)
            s = p if label == 0 else text.other(p)
            rows.append({"question": text.question(p), "sentence": text.sentence(s), "label": label})
        else:
            raise ValueError(f"unknown GLUE task {task!r}; known: {', '.join(ALL_GLUE_TASKS)}")
    return rows


def _mrqa_rows(text, n, split):
    """n MRQA questions: a context of three sentences, a question about one of them ("what does the <subject>
    <verb> ?" / "who <verbs> the <object> ?"), its answer the sentence's object / subject phrase, with its char span
    (end inclusive) and token span (whitespace tokens of the context), as in MRQA."""
    r = text.rng
    rows = []
    for i in range(n):
        parts = []
        while len(parts) < 3:  # distinct subjects and objects, so the question has one answer
            p = text.parts()
            if all(p["subj"] != q["subj"] and p["obj"] != q["obj"] for q in parts):
                parts.append(p)
        sentences = [f"the {p['adj']} {p['subj']} {p['verb']} the {p['obj']} in the {p['place']} ." for p in parts]
        context = " ".join(sentences)
        k = r.randrange(3)
        p = parts[k]
        if r.randint(0, 1):
            question, answer = f"what does the {p['subj']} {p['verb'][:-1]} ?", f"the {p['obj']}"
            offset = sentences[k].index(f" {p['verb']} {answer} ") + len(p["verb"]) + 2
        else:
            question, answer = f"who {p['verb']} the {p['obj']} ?", f"the {p['adj']} {p['subj']}"
            offset = 0
        start = sum(len(s) + 1 for s in sentences[:k]) + offset
        token = len(context[:start].split())
        rows.append({"subset": MRQA_SUBSETS[i % len(MRQA_SUBSETS)], "context": context, "qid": f"{split}-{i}",
                     "question": question, "answers": [answer],
                     "detected_answers": {"text": [answer],
                                          "char_spans": [{"start": [start], "end": [start + len(answer) - 1]}],
                                          "token_spans": [{"start": [token],
                                                           "end": [token + len(answer.split()) - 1]}]}})
    return rows


def _build_mrqa(out: Path):
    mrqa = out / "mrqa"
    mrqa.mkdir()
    text = _Text(SEED + 99)
    for split, n in MRQA_ROWS.items():
        with open(mrqa / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in _mrqa_rows(text, n, split):
                handle.write(json.dumps(row) + "\n")


def _splits(task):
    return MNLI_SPLITS if task == "mnli" else ("train", "validation", "test")


def _row_count(task, split, rows):
    kind = "train" if split == "train" else split.split("_")[0]
    counts = dict(LARGE_ROWS if task in LARGE_TASKS else SMALL_ROWS)
    counts.update((rows or {}).get(task, {}))
    return counts[kind]


def expected_rows(task, split, rows=None):
    """Number of rows tiny_glue_dir() writes for task/split (with the same `rows` overrides)."""
    return _row_count(task, split, rows)


# --- cache plumbing -----------------------------------------------------------------------------------------------
def _build_once(final: Path, build, what=None):
    """Return final; if absent, build into a temp dir beside it and rename it into place (atomic; a racing
    builder's result wins and ours is discarded). `what` names the build in the progress lines (stderr)."""
    if (final / ".complete").exists():
        return final
    from hyperrestart.core.progress import announce
    with announce(f"generating {what or final.name}", f"once; cached in {final}"):
        return _build_into(final, build)


def _build_into(final: Path, build):
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache is read like any other model folder
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n", encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ".complete").exists():
                shutil.rmtree(final, ignore_errors=True)  # a half-written leftover from an old interrupted build
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _tiny_root(cache_dir):
    return Path(cache_dir) if cache_dir is not None else _default_cache_dir() / "tiny"


# --- the model ----------------------------------------------------------------------------------------------------
def _train_spm(out_file: Path):
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_Text(SEED).corpus(3000)), model_writer=model, model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        seed_sentencepiece_size=20000, num_threads=1, minloglevel=2)
    out_file.write_bytes(model.getvalue())


def _build_model(out: Path):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    spm_file = out / "_spiece.model"
    _train_spm(spm_file)
    tokenizer = T5Tokenizer(vocab_file=str(spm_file), extra_ids=EXTRA_IDS, legacy=True, model_max_length=512)
    tokenizer.save_pretrained(str(out))
    spm_file.unlink()
    # transformers 3.x re-adds the extra ids listed there and asserts they are consecutive after its own 100 extra
    # ids (they are not: "Non-consecutive added token '<extra_id_99>'"); today's versions rebuild them from
    # tokenizer_config.json, so the file is redundant.
    (out / "added_tokens.json").unlink(missing_ok=True)
    config = T5Config(vocab_size=len(tokenizer), **MODEL_CONFIG)
    torch.manual_seed(SEED)
    model = T5ForConditionalGeneration(config).eval()
    # model.safetensors for today's transformers, pytorch_model.bin for 3.5.1 / 4.14 (both hold the same weights)
    model.save_pretrained(str(out), safe_serialization=True)
    model.save_pretrained(str(out), safe_serialization=False)
    # Only plain T5Config fields (plus the ones new versions add and old ones ignore).
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    cfg.setdefault("architectures", ["T5ForConditionalGeneration"])
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "HYPERRESTART.md").write_text(
        f"Tiny random T5 ({MODEL_VERSION}) generated by hyperrestart.upstream.tiny for offline tests; not a trained model.\n",
        encoding="utf-8")


def _build_model_in_child(out: Path):
    """_build_model in a child python: torch and transformers are not left loaded in the caller, whose exit would
    otherwise spend seconds unloading them, silently, after its last line."""
    import subprocess
    import sys
    from hyperrestart.core.errors import HyperrestartError
    from hyperrestart.core.paths import PROJECT_ROOT
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", "import sys, pathlib; from hyperrestart.upstream.tiny import "
                             "_build_model; _build_model(pathlib.Path(sys.argv[1]))", str(out)],
                            env=env, capture_output=True, text=True, encoding="utf-8")
    if result.returncode != 0:
        raise HyperrestartError("generating the tiny random T5 failed: "
                                + " | ".join(result.stderr.strip().splitlines()[-3:]))


def tiny_model_dir(cache_dir=None) -> Path:
    """Directory of the tiny random T5 (model + tokenizer, Hugging Face format); generated on first use (in a child
    python), then cached under <cache_dir() or cache_dir>/tiny/<MODEL_VERSION>."""
    return _build_once(_tiny_root(cache_dir) / MODEL_VERSION, _build_model_in_child, "the tiny random T5")


# --- the data -----------------------------------------------------------------------------------------------------
def _features_yaml(task):
    columns, names = GLUE_SCHEMA[task]
    lines = [f"- config_name: {task}", "  features:"]
    for col in columns:
        lines += [f"  - name: {col}", "    dtype: string"]
    if names is None:
        lines += ["  - name: label", "    dtype: float32"]
    else:
        lines += ["  - name: label", "    dtype:", "      class_label:", "        names:"]
        lines += [f"          '{i}': {name}" for i, name in enumerate(names)]
    lines += ["  - name: idx", "    dtype: int32"]
    return lines


def _build_glue(out: Path, tasks, rows):
    glue = out / "glue"
    glue.mkdir()
    configs, infos = [], []
    for n, task in enumerate(tasks):
        text = _Text(SEED + 1000 * (n + 1))
        configs += [f"- config_name: {task}", "  data_files:"]
        (glue / task).mkdir()
        for split in _splits(task):
            data = _rows_for_task(task, text, _row_count(task, split, rows))
            with open(glue / task / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for idx, row in enumerate(data):
                    if split.startswith("test"):
                        row["label"] = -1.0 if task == "stsb" else -1  # GLUE test labels are hidden
                    row["idx"] = idx
                    handle.write(json.dumps(row) + "\n")
            configs += [f"  - split: {split}", f"    path: {task}/{split}.jsonl"]
        infos += _features_yaml(task)
    readme = ["---", "configs:"] + configs + ["dataset_info:"] + infos + ["---", "",
              f"Tiny GLUE-shaped data ({DATA_VERSION}) generated by hyperrestart.upstream.tiny: same configs, columns and "
              "splits as the hub's `glue` dataset, synthetic English-like text, labels derived from the text.", ""]
    (glue / "README.md").write_text("\n".join(readme), encoding="utf-8")


def tiny_data_dir(cache_dir=None, tasks=GLUE_TASKS, rows=None, mrqa=True) -> Path:
    """Directory holding `glue/` (a datasets folder, one config per task) and, with mrqa, `mrqa/` (train, validation,
    test jsonl); generated once per (tasks, rows, mrqa), cached.

    rows: optional {task: {"train"|"validation"|"test": n}} overriding the defaults (large tasks 1200 train rows,
    since upstream's split_validation_test takes 1000 of them as validation; small tasks 300; 100 per eval split).
    """
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in GLUE_SCHEMA]
    if unknown:
        raise ValueError(f"unknown GLUE task(s) {unknown}; known: {', '.join(ALL_GLUE_TASKS)}")
    key = hashlib.sha256(json.dumps([tasks, rows or {}, mrqa], sort_keys=True).encode()).hexdigest()[:10]

    def build(out):
        _build_glue(out, tasks, rows)
        if mrqa:
            _build_mrqa(out)
    return _build_once(_tiny_root(cache_dir) / f"{DATA_VERSION}-{key}", build,
                       "the tiny GLUE" + ("/MRQA" if mrqa else "") + " data")


def tiny_glue_dir(cache_dir=None, tasks=GLUE_TASKS, rows=None) -> Path:
    """tiny_data_dir without mrqa/."""
    return tiny_data_dir(cache_dir, tasks, rows, mrqa=False)

"""Whether a difference between two arms is real: pure statistics over per-seed (and per-example) scores.

For an arm against its baseline arm (higher is better unless said otherwise):
- the difference of the means over seeds, with a 95% percentile-bootstrap CI over seeds (paired when both arms have
  the same seeds: the per-seed differences are resampled; otherwise each arm's seeds are resampled on their own),
  and, where per-example scores exist, a 95% CI from a two-level bootstrap (seeds, then eval examples within each
  drawn seed; paired by seed and example when the arms share both);
- a p-value: paired t-test by seed when both arms share their seeds, Welch's t-test otherwise;
- a verdict: "restart better" / "worse" at p < 0.05 in the direction of the difference, else "not distinguishable
  with n = ...";
- the number of seeds needed to detect a 1-point difference at the observed variance (two-sided t-test, alpha 0.05,
  power 0.8; per arm for Welch's test).

The verdict follows the t-test, not the bootstrap: with a handful of seeds a percentile bootstrap cannot see the
tails and its interval is narrower than the t interval (3 vs 4 seeds can give a CI that excludes 0 at p = 0.13).
No I/O: the report reads runs and calls `compare`.
"""
import dataclasses
import math

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
BOOTSTRAPS = 10000
MAX_SEEDS = 100000  # seeds_needed says "more than" this rather than searching on


@dataclasses.dataclass
class Evidence:
    diff: float                 # mean(arm) - mean(baseline), over seeds
    ci_seeds: tuple             # 95% bootstrap CI of diff over seeds; (nan, nan) when a side has one seed
    ci_examples: tuple          # 95% two-level bootstrap CI (seeds and eval examples); None without per-example data
    p_value: float              # nan when a side has fewer than 2 seeds (or no variance)
    test: str                   # "paired t" or "Welch t"
    n_arm: int
    n_baseline: int
    verdict: str
    seeds_needed: object        # int (per arm), None when the variance is unknown (< 2 seeds), or ">N"


def _check_scores(name, scores):
    values = np.asarray(list(scores.values()), dtype=float)
    if values.size == 0:
        raise ValueError(f"{name} has no scores")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} has a non-finite score: {sorted(scores.items(), key=str)}")
    return values


def _percentile_ci(samples):
    low, high = np.percentile(samples, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def bootstrap_ci_seeds(arm, baseline, paired, seed=0):
    """95% percentile CI of mean(arm) - mean(baseline) resampling seeds (scipy.stats.bootstrap)."""
    if paired:
        diffs = np.asarray([arm[s] - baseline[s] for s in sorted(arm, key=str)], dtype=float)
        if diffs.size < 2 or np.all(diffs == diffs[0]):
            return (float(diffs.mean()), float(diffs.mean())) if diffs.size >= 2 else (math.nan, math.nan)
        result = stats.bootstrap((diffs,), np.mean, n_resamples=BOOTSTRAPS, confidence_level=1 - ALPHA,
                                 method="percentile", random_state=np.random.default_rng(seed))
    else:
        a, b = np.asarray(list(arm.values()), float), np.asarray(list(baseline.values()), float)
        if a.size < 2 or b.size < 2:
            return math.nan, math.nan
        if np.all(a == a[0]) and np.all(b == b[0]):
            return float(a[0] - b[0]), float(a[0] - b[0])
        result = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                 n_resamples=BOOTSTRAPS, confidence_level=1 - ALPHA, method="percentile",
                                 vectorized=True, random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _two_level_means(per_seed, rng, n_boot, chunk_values=4_000_000):
    """n_boot bootstrap means: draw seeds with replacement, then examples with replacement within each drawn seed.
    per_seed: a list of 1-D arrays (one per seed); memory is bounded by drawing at most chunk_values at a time."""
    k = len(per_seed)
    picks = rng.integers(0, k, size=(n_boot, k))
    means = np.zeros(n_boot)
    for j, scores in enumerate(per_seed):
        drawn = (picks == j).sum(axis=1)  # how often seed j was drawn in each resample
        for count in np.unique(drawn[drawn > 0]):
            rows = np.flatnonzero(drawn == count)
            step = max(1, chunk_values // (count * scores.size))
            for start in range(0, rows.size, step):
                part = rows[start:start + step]
                idx = rng.integers(0, scores.size, size=(part.size, count, scores.size))
                means[part] += scores[idx].mean(axis=2).sum(axis=1)
    return means / k


def bootstrap_ci_examples(arm_examples, baseline_examples, paired, seed=0, n_boot=BOOTSTRAPS):
    """95% CI of the difference of mean scores from a two-level bootstrap over seeds and eval examples.

    arm_examples / baseline_examples: {seed: [per-example score]}. Paired (same seeds, same number of examples per
    seed): the per-example differences of each seed are resampled together; else each arm on its own."""
    rng = np.random.default_rng(seed)
    if paired:
        per_seed = [np.asarray(arm_examples[s], float) - np.asarray(baseline_examples[s], float)
                    for s in sorted(arm_examples, key=str)]
        return _percentile_ci(_two_level_means(per_seed, rng, n_boot))
    a = [np.asarray(v, float) for _, v in sorted(arm_examples.items(), key=lambda kv: str(kv[0]))]
    b = [np.asarray(v, float) for _, v in sorted(baseline_examples.items(), key=lambda kv: str(kv[0]))]
    return _percentile_ci(_two_level_means(a, rng, n_boot) - _two_level_means(b, rng, n_boot))


def t_test(arm, baseline, paired):
    """(p-value, test name): paired t over shared seeds, else Welch's t; nan when it cannot be computed."""
    if paired:
        keys = sorted(arm, key=str)
        a, b = [arm[s] for s in keys], [baseline[s] for s in keys]
        diffs = np.subtract(a, b)
        if len(keys) < 2 or np.all(diffs == diffs[0]):
            return math.nan, "paired t"
        return float(stats.ttest_rel(a, b).pvalue), "paired t"
    a, b = list(arm.values()), list(baseline.values())
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan, "Welch t"
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue), "Welch t"


def paired_power(n, effect):
    """Power of a two-sided paired (one-sample) t-test with n pairs at standardised effect `effect`."""
    df = n - 1
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    ncp = effect * math.sqrt(n)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def welch_power(n, delta, sd_a, sd_b):
    """Power of a two-sided Welch t-test with n seeds per arm (Welch-Satterthwaite df) for a true difference delta."""
    va, vb = sd_a ** 2 / n, sd_b ** 2 / n
    df = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (n - 1))
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    ncp = delta / math.sqrt(va + vb)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_needed(arm, baseline, paired, delta=1.0):
    """Seeds (per arm) for power 0.8 at alpha 0.05 to detect a difference of `delta` at the observed variance:
    None when a side has < 2 seeds, 2 when there is no variance, ">N" past MAX_SEEDS."""
    if paired:
        keys = sorted(arm, key=str)
        if len(keys) < 2:
            return None
        sd = float(np.std([arm[s] - baseline[s] for s in keys], ddof=1))
        power = (lambda n: paired_power(n, delta / sd)) if sd > 0 else None
    else:
        if len(arm) < 2 or len(baseline) < 2:
            return None
        sd_a, sd_b = float(np.std(list(arm.values()), ddof=1)), float(np.std(list(baseline.values()), ddof=1))
        power = (lambda n: welch_power(n, delta, sd_a, sd_b)) if sd_a + sd_b > 0 else None
    if power is None:
        return 2
    low, high = 2, 2
    while power(high) < POWER:  # power grows with n: double, then bisect
        low, high = high, high * 2
        if high > MAX_SEEDS:
            return f">{MAX_SEEDS}"
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if power(mid) >= POWER else (mid + 1, high)
    return high


def verdict(diff, p_value, n, higher_is_better=True, better="restart better", worse="worse"):
    """Words for the comparison: better/worse at p < ALPHA in the direction of diff, else not distinguishable."""
    if not math.isnan(p_value) and p_value < ALPHA and diff != 0:
        return better if (diff > 0) == higher_is_better else worse
    return f"not distinguishable with n = {n}"


ASSUMED_NS = (2, 3, 5, 10)  # runs per row tried for published tables that do not state theirs


def published_p_values(mean_a, std_a, mean_b, std_b, ns=ASSUMED_NS):
    """Published rows give only mean ± std: the Welch p-value the difference would have if each row were over n
    runs, for each n in `ns` ({n: p}); nan where a std is missing or both are 0."""
    if std_a is None or std_b is None or (std_a == 0 and std_b == 0):
        return {n: math.nan for n in ns}
    return {n: float(stats.ttest_ind_from_stats(mean_a, std_a, n, mean_b, std_b, n, equal_var=False).pvalue)
            for n in ns}


def compare(arm, baseline, arm_examples=None, baseline_examples=None, higher_is_better=True, seed=0):
    """Evidence for arm vs baseline. arm/baseline: {seed: score}; *_examples: {seed: [per-example score]} or None."""
    a, b = _check_scores("arm", arm), _check_scores("baseline", baseline)
    paired = set(arm) == set(baseline) and len(arm) >= 2
    diff = float(a.mean() - b.mean())
    ci_examples = None
    if arm_examples and baseline_examples:
        same_examples = paired and set(arm_examples) == set(arm) == set(baseline_examples) and all(
            len(arm_examples[s]) == len(baseline_examples[s]) for s in arm)
        ci_examples = bootstrap_ci_examples(arm_examples, baseline_examples, same_examples, seed)
    p_value, test = t_test(arm, baseline, paired)
    n = len(arm) if paired else min(len(arm), len(baseline))
    n_text = f"{n} seeds" if paired else f"{len(arm)} and {len(baseline)} seeds"
    return Evidence(diff=diff, ci_seeds=bootstrap_ci_seeds(arm, baseline, paired, seed), ci_examples=ci_examples,
                    p_value=p_value, test=test, n_arm=len(arm), n_baseline=len(baseline),
                    verdict=verdict(diff, p_value, n_text, higher_is_better), seeds_needed=seeds_needed(
                        arm, baseline, paired))


def _signed(x, digits):
    return "nan" if math.isnan(x) else f"{x:+.{digits}f}".replace("-", "\u2212")


def format_ci(ci, digits=2):
    return "n/a" if ci is None or math.isnan(ci[0]) else f"[{_signed(ci[0], digits)}, {_signed(ci[1], digits)}]"


def format_evidence(e, digits=2):
    """One line: difference, CIs, p-value with its test and n, verdict, seeds needed for a 1-point difference."""
    p = "n/a (needs 2 seeds per arm with variance)" if math.isnan(e.p_value) else f"{e.p_value:.3g}"
    examples = f", 95% CI seeds+examples {format_ci(e.ci_examples, digits)}" if e.ci_examples is not None else ""
    needed = "unknown (needs 2 seeds per arm)" if e.seeds_needed is None else e.seeds_needed
    return (f"\u0394 = {_signed(e.diff, digits)}, 95% CI seeds {format_ci(e.ci_seeds, digits)}{examples}; "
            f"p = {p} ({e.test}, n = {e.n_arm} vs {e.n_baseline}); {e.verdict}; "
            f"seeds for a 1-point difference: {needed}")


def mean_std_n(values, digits=2):
    """'mean ± std (n = k)' with the sample std; 'mean (n = 1)' for one value."""
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n = 1)"
    return f"{np.mean(values):.{digits}f} \u00b1 {np.std(values, ddof=1):.{digits}f} (n = {len(values)})"


# --- the report's use: every arm against its baseline arm ----------------------------------------------------------
def per_example_scores(run_path, step, scale=100.0):
    """[per-example Rouge-L x 100] of a P3 run's evaluation at `step` (eval/step_N_predictions.jsonl holds them in
    [0, 1]; the run's Rouge-L is their mean x 100, as the paper reports it), or None."""
    import json
    from pathlib import Path
    path = Path(run_path) / "eval" / f"step_{step}_predictions.jsonl"
    if not path.is_file():
        return None
    scores = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                value = json.loads(line).get("rougeL")
                if value is None:
                    return None
                scores.append(float(value) * scale)
    return scores or None


def arm_evidence(rows, column):
    """[(arm, baseline, Evidence)] for every row that has a baseline arm, on `column` (the table's main score):
    seeds are the runs' seeds; per-example scores where every run of both arms has them (P3 predictions)."""
    by_arm = {row.arm: row for row in rows}
    found = []
    for row in rows:
        base = by_arm.get(row.baseline)
        if base is None:
            continue
        scores = [{_seed(r, i): r.scores[column] for i, r in enumerate(x.runs) if column in r.scores}
                  for x in (row, base)]
        if not scores[0] or not scores[1]:
            continue
        examples = [{_seed(r, i): per_example_scores(r.path, r.extra.get("step")) for i, r in enumerate(x.runs)}
                    for x in (row, base)]
        if any(v is None for e in examples for v in e.values()):
            examples = [None, None]
        found.append((row.arm, base.arm, compare(scores[0], scores[1], examples[0], examples[1])))
    return found


def _seed(run, index):
    return run.seed if run.seed is not None else f"run{index}"


def evidence_markdown(found, column, digits=2):
    """The report's evidence section: one line per arm against its baseline."""
    if not found:
        return ""
    lines = [f"### Is the difference real? ({column}, each arm against its baseline arm)", ""]
    for arm, baseline, e in found:
        lines.append(f"- **{arm}** vs {baseline}: {format_evidence(e, digits)}")
    lines += ["", "_95% CIs by percentile bootstrap (10,000 resamples) over seeds, and over seeds and eval examples "
                  "where per-example scores exist; p from a paired t-test by seed when both arms share their seeds, "
                  "Welch's t-test otherwise; the verdict follows the t-test at p < 0.05; seeds for a 1-point "
                  "difference: power 0.8 at alpha 0.05 at the observed variance._"]
    return "\n".join(lines) + "\n"


def evidence_csv(found):
    import csv
    import io
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "baseline", "diff", "ci_seeds_low", "ci_seeds_high", "ci_examples_low",
                     "ci_examples_high", "p_value", "test", "n_arm", "n_baseline", "verdict", "seeds_needed"])
    for arm, baseline, e in found:
        ce = e.ci_examples or (math.nan, math.nan)
        writer.writerow([arm, baseline, repr(e.diff), repr(e.ci_seeds[0]), repr(e.ci_seeds[1]), repr(ce[0]),
                         repr(ce[1]), repr(e.p_value), e.test, e.n_arm, e.n_baseline, e.verdict, e.seeds_needed])
    return out.getvalue()

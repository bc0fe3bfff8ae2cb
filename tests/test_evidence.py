"""hyperrestart.evidence against analytic values: t statistics computed by hand, normal-theory CIs for large
samples, the textbook sample sizes for power 0.8 (Cohen 1988: paired d = 1 -> 10, d = 0.5 -> 34; two groups
d = 1 -> 17, d = 0.5 -> 64 per group), and the verdict's words."""
import math

import numpy as np
import pytest
from scipy import stats

from hyperrestart.report import evidence as ev


def test_paired_p_value_is_the_hand_computed_paired_t():
    arm = {1: 85.0, 2: 86.5, 3: 84.9, 4: 86.1}
    base = {1: 84.0, 2: 85.1, 3: 84.6, 4: 84.8}
    d = np.array([arm[s] - base[s] for s in arm])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p = 2 * stats.t.sf(abs(t), len(d) - 1)
    e = ev.compare(arm, base)
    assert e.test == "paired t" and e.p_value == pytest.approx(p, rel=1e-12)
    assert e.diff == pytest.approx(d.mean(), rel=1e-12)


def test_welch_p_value_when_the_seeds_differ():
    arm = {1: 85.0, 2: 86.5, 3: 84.9}
    base = {4: 84.0, 5: 85.1, 6: 84.6, 7: 83.0}
    a, b = np.array(list(arm.values())), np.array(list(base.values()))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    e = ev.compare(arm, base)
    assert e.test == "Welch t" and e.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10)
    assert (e.n_arm, e.n_baseline) == (3, 4)
    assert e.p_value == pytest.approx(0.12556, rel=1e-4)
    assert e.verdict == "not distinguishable with n = 3 and 4 seeds"
    # with 3-4 seeds the percentile bootstrap is narrower than the t interval (here it excludes 0): the verdict
    # follows the t-test, not the bootstrap
    assert e.ci_seeds[0] > 0


def test_seed_bootstrap_ci_approaches_the_normal_interval_for_many_seeds():
    rng = np.random.default_rng(1)
    diffs = rng.normal(1.0, 2.0, 400)
    arm = {s: 80.0 + d for s, d in enumerate(diffs)}
    base = {s: 80.0 for s in range(400)}
    low, high = ev.compare(arm, base).ci_seeds
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert low == pytest.approx(diffs.mean() - half, abs=0.03)
    assert high == pytest.approx(diffs.mean() + half, abs=0.03)


def test_unpaired_seed_bootstrap_ci_approaches_the_normal_interval():
    rng = np.random.default_rng(2)
    a, b = rng.normal(3.0, 1.0, 300), rng.normal(0.0, 2.0, 300)
    low, high = ev.bootstrap_ci_seeds(dict(enumerate(a)), {i + 1000: x for i, x in enumerate(b)}, paired=False)
    half = 1.96 * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    centre = a.mean() - b.mean()
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=0.04)


def test_example_bootstrap_with_one_seed_is_the_normal_interval_over_examples():
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 100, 2000)
    base = rng.uniform(0, 100, 2000)
    low, high = ev.bootstrap_ci_examples({0: scores}, {0: base}, paired=True)
    d = scores - base
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert (low, high) == pytest.approx((d.mean() - half, d.mean() + half), abs=0.1 * half)


def test_example_bootstrap_adds_the_seed_variance():
    """Seeds whose means differ by a lot: the two-level CI must be about as wide as the seeds' spread says."""
    rng = np.random.default_rng(4)
    offsets = np.array([-10.0, 0.0, 10.0, -5.0, 5.0, 2.0, -2.0, 7.0])
    arm = {s: o + rng.normal(0, 1, 500) for s, o in enumerate(offsets)}
    base = {s: np.zeros(500) for s in range(len(offsets))}
    low, high = ev.bootstrap_ci_examples(arm, base, paired=True)
    # var of the mean ~ var(offsets, ddof=0)/k + 1/(k*500): dominated by the seeds
    half = 1.96 * math.sqrt(offsets.var() / len(offsets) + 1 / (len(offsets) * 500))
    assert high - low == pytest.approx(2 * half, rel=0.15)


@pytest.mark.parametrize("sd_diff,expected", [(1.0, 10), (2.0, 34)])
def test_seeds_needed_paired_matches_the_textbook(sd_diff, expected):
    diffs = [0.0, sd_diff, 2 * sd_diff]  # sample sd = sd_diff: effect size 1 / sd_diff for a 1-point difference
    arm = {s: 50.0 + d for s, d in enumerate(diffs)}
    base = {s: 50.0 for s in range(3)}
    assert ev.seeds_needed(arm, base, paired=True) == expected
    assert ev.paired_power(expected, 1 / sd_diff) >= 0.8 > ev.paired_power(expected - 1, 1 / sd_diff)


@pytest.mark.parametrize("sd,expected", [(1.0, 17), (2.0, 64)])
def test_seeds_needed_welch_matches_the_two_group_textbook(sd, expected):
    arm = {1: 50.0 - sd, 2: 50.0, 3: 50.0 + sd}
    base = {4: 40.0 - sd, 5: 40.0, 6: 40.0 + sd}
    assert ev.seeds_needed(arm, base, paired=False) == expected


def test_seeds_needed_edge_cases():
    assert ev.seeds_needed({1: 3.0}, {1: 2.0}, paired=True) is None
    assert ev.seeds_needed({1: 3.0, 2: 4.0}, {1: 2.0, 2: 3.0}, paired=True) == 2  # no variance in the differences
    huge = {1: 0.0, 2: 1000.0, 3: -1000.0}
    assert ev.seeds_needed(huge, {1: 0.0, 2: 0.0, 3: 0.0}, paired=True) == f">{ev.MAX_SEEDS}"


def test_verdict_words():
    base = {s: 80.0 + 0.1 * s for s in range(5)}
    better = ev.compare({s: v + 3.0 + 0.01 * (s % 2) for s, v in base.items()}, base)
    assert better.verdict == "restart better" and better.p_value < 1e-6
    worse = ev.compare({s: v - 3.0 + 0.01 * (s % 2) for s, v in base.items()}, base)
    assert worse.verdict == "worse"
    noisy = ev.compare({0: 81.0, 1: 79.0, 2: 80.5}, {0: 80.0, 1: 80.2, 2: 80.1})
    assert noisy.verdict == "not distinguishable with n = 3 seeds"
    loss = ev.compare({s: v - 3.0 + 0.01 * (s % 2) for s, v in base.items()}, base, higher_is_better=False)
    assert loss.verdict == "restart better"
    one = ev.compare({0: 90.0}, {0: 10.0})
    assert one.verdict == "not distinguishable with n = 1 and 1 seeds" and math.isnan(one.p_value)
    assert math.isnan(one.ci_seeds[0]) and one.seeds_needed is None


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError, match="arm has a non-finite score"):
        ev.compare({0: float("nan"), 1: 2.0}, {0: 1.0, 1: 2.0})
    with pytest.raises(ValueError, match="baseline has no scores"):
        ev.compare({0: 1.0}, {})


def test_the_line_says_everything():
    arm = {0: 26.0, 1: 30.5, 2: 28.0}
    base = {0: 27.0, 1: 29.0, 2: 27.5}
    examples = {s: np.full(40, v) for s, v in arm.items()}, {s: np.full(40, v) for s, v in base.items()}
    e = ev.compare(arm, base, *examples)
    line = ev.format_evidence(e)
    assert line.startswith("\u0394 = +0.33, 95% CI seeds [")
    assert "95% CI seeds+examples [" in line and "(paired t, n = 3 vs 3)" in line
    assert "not distinguishable with n = 3 seeds" in line and "seeds for a 1-point difference: " in line
    assert ev.mean_std_n([84.88]) == "84.88 (n = 1)"
    assert ev.mean_std_n([1.0, 2.0, 3.0]) == "2.00 \u00b1 1.00 (n = 3)"


def test_bootstrap_is_reproducible():
    arm, base = {0: 1.0, 1: 3.0, 2: 2.5}, {0: 0.5, 1: 1.0, 2: 2.0}
    assert ev.compare(arm, base).ci_seeds == ev.compare(arm, base).ci_seeds

"""The held-out split of prepared P3: validation and test rows drawn by a seeded permutation (the released runner's
sizes)."""
import math

from hyperrestart.core.errors import HyperrestartError

SPLITS = ("train", "validation", "test")


def split_sizes(total, holdout):
    """The released runner's rule: hold out ceil(holdout * N) rows (datasets' train_test_split rounding) and halve
    them; validation gets the floor half, test the ceil half (the paper's ~3.30M rows: 3301 each; the paper's 193
    tasks with T0's caps, 6.83M rows: 6829 each)."""
    held = math.ceil(holdout * total) if holdout else 0
    test = math.ceil(held / 2)
    return {"train": total - held, "validation": held - test, "test": test}


def split_assignment(total, holdout, seed):
    """Array of split ids (0 train, 1 validation, 2 test) per global row, from a seeded permutation."""
    import numpy as np

    sizes = split_sizes(total, holdout)
    assignment = np.zeros(total, dtype=np.int8)
    order = np.random.default_rng(seed).permutation(total)
    assignment[order[:sizes["validation"]]] = 1
    assignment[order[sizes["validation"]:sizes["validation"] + sizes["test"]]] = 2
    return assignment


def check_split_sizes(total, holdout):
    """split_sizes(), or a HyperrestartError when the held-out part cannot fill one validation row or the train split
    would be empty."""
    sizes = split_sizes(total, holdout)
    if holdout and sizes["validation"] == 0:
        need = max(1, math.floor(1 / holdout))  # the smallest N with ceil(holdout * N) >= 2
        while split_sizes(need, holdout)["validation"] < 1:
            need += 1
        raise HyperrestartError(f"--holdout {holdout} of {total} row(s) holds out {total - sizes['train']} row(s): "
                                f"too few for one validation row (test takes the first); it needs at least {need} "
                                "rows: add tasks or rows, raise --holdout, or pass --holdout 0 for no held-out split")
    if sizes["train"] == 0:
        raise HyperrestartError(f"--holdout {holdout} of {total} row(s) leaves no train rows; lower --holdout")
    return sizes

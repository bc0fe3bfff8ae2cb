"""The figures of `analyse` draw flat, overflowing and ordinary surfaces, and track data, without failing."""
import math

import numpy as np
import pytest

from hyperrestart.analysis import landscape, plots


def surface_data(values):
    r = values.shape[0]
    return {"axis": landscape.axis(1.0, r), "surface": values, "slice_d1": values[r // 2], "slice_d2": values[:, r // 2],
            "loss_at_checkpoint": values[r // 2, r // 2]}


@pytest.mark.slow  # matplotlib's 3-D figures take seconds
def test_landscape_figures_with_flat_and_non_finite_surfaces(tmp_path):
    ax = landscape.axis(1.0, 5)
    bowl = np.add.outer(ax ** 2, ax ** 2)
    broken = bowl.copy()
    broken[0, 0], broken[0, 1] = np.nan, np.inf
    results = {"hypernetwork": surface_data(bowl), "main": surface_data(np.full((5, 5), 3.0)),
               "backbone": surface_data(broken)}
    path = plots.landscape_figure(results, "test", tmp_path / "one.png")
    assert path.stat().st_size > 10000
    path = plots.figure3(results, results, "checkpoint-2", tmp_path / "fig3.png")
    assert path.stat().st_size > 10000


@pytest.mark.slow
def test_track_figures(tmp_path):
    rows = [{"step": s, "space": space, "top_eigenvalue": 1.0 + s, "negative_mass": 0.1,
             "r_ratio": 0.3 if space == "hypernetwork" else None} for s in (0, 1, 3) for space in
            ("hypernetwork", "main", "backbone")]
    trace = [(s, 0.5 * (1 + math.cos(math.pi * s / 4))) for s in range(1, 5)]
    assert plots.track_figure(rows, trace, "t", tmp_path / "t.png").stat().st_size > 10000
    assert plots.track_comparison_figure([("a", rows, trace), ("b", rows, [(s, 1.0) for s in range(1, 5)])], "c",
                                         tmp_path / "c.png").stat().st_size > 10000

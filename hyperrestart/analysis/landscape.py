"""The 2-D loss surface L(w + a d1 + b d2) over a square grid, and the 1-D slices through the trained point (b = 0 and
a = 0), computed in chunks of grid points that are cached on disk, so an interrupted run continues where it stopped
and several processes (rank r of W takes chunks r, r + W, ...) share one grid.

Layout of the points: the R x R grid row by row (row i: b = axis[i], column j: a = axis[j]), then the slice along d1
(a = axis[j], b = 0), then the slice along d2 (a = 0, b = axis[i]).
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..core.files import atomic_path, atomic_write_json

CHUNK_POINTS = 64
CACHE_VERSION = 1


def axis(range_, resolution):
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    if not range_ > 0:
        raise ValueError(f"range must be positive, got {range_}")
    return np.linspace(-float(range_), float(range_), int(resolution))


def points(range_, resolution):
    """(n, 2) array of (a, b): the grid row by row, then the d1 slice, then the d2 slice."""
    ax = axis(range_, resolution)
    b, a = np.meshgrid(ax, ax, indexing="ij")
    grid = np.stack([a.ravel(), b.ravel()], axis=1)
    zeros = np.zeros_like(ax)
    return np.concatenate([grid, np.stack([ax, zeros], 1), np.stack([zeros, ax], 1)])


def split(values, resolution):
    """(surface (R, R) with surface[i, j] = L(axis[j], axis[i]), slice along d1, slice along d2)."""
    r = int(resolution)
    return values[:r * r].reshape(r, r), values[r * r:r * r + r], values[r * r + r:]


class ChunkCache:
    """Finished chunks of one landscape job, as chunk-NNNNNN.npy files in a folder keyed by the job's settings."""

    def __init__(self, root, settings, n_points, chunk_points=CHUNK_POINTS):
        self.settings = dict(settings, cache_version=CACHE_VERSION, chunk_points=chunk_points, n_points=n_points)
        key = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        self.dir = Path(root) / f"landscape-cache-{key}"
        self.chunk_points, self.n_points = chunk_points, n_points
        self.n_chunks = (n_points + chunk_points - 1) // chunk_points

    def prepare(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "settings.json"
        if not meta.exists():
            atomic_write_json(meta, self.settings, indent=1, sort_keys=True)

    def path(self, index):
        return self.dir / f"chunk-{index:06d}.npy"

    def bounds(self, index):
        start = index * self.chunk_points
        return start, min(start + self.chunk_points, self.n_points)

    def done(self, index):
        return self.path(index).is_file()

    def load(self, index):
        return np.load(self.path(index))

    def save(self, index, values):
        with atomic_path(self.path(index)) as tmp:
            np.save(tmp, np.asarray(values, dtype=np.float64))

    def assemble(self):
        return np.concatenate([self.load(i) for i in range(self.n_chunks)])


def compute(evaluate, pts, cache, rank=0, world=1, progress=None, poll_s=0.5, many=None):
    """Evaluate `evaluate(a, b) -> float` at every point not cached yet (or `many(points) -> values` on a chunk's
    (n, 2) points at once): this process takes chunks rank, rank + world, ...; rank 0 then waits for the others'
    chunks and returns all values (other ranks return None). `progress(n)` is called on rank 0 with the number of
    points newly finished or found cached."""
    many = many or (lambda chunk: [float(evaluate(float(a), float(b))) for a, b in chunk])
    cache.prepare()
    reported = set()

    def mark(index):
        if rank == 0 and index not in reported:
            reported.add(index)
            if progress:
                progress(_size(cache, index))

    for index in range(cache.n_chunks):
        if cache.done(index):
            mark(index)
        elif index % world == rank:
            start, stop = cache.bounds(index)
            values = [float(v) for v in many(pts[start:stop])]
            if len(values) != stop - start:
                raise RuntimeError(f"chunk {index}: {len(values)} values for {stop - start} points")
            cache.save(index, values)
            mark(index)
    if rank != 0:
        return None
    while len(reported) < cache.n_chunks:
        for index in range(cache.n_chunks):
            if index not in reported and cache.done(index):
                mark(index)
        if len(reported) < cache.n_chunks:
            time.sleep(poll_s)
    return cache.assemble()


def _size(cache, index):
    start, stop = cache.bounds(index)
    return stop - start

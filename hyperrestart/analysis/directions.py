"""Random directions, filter-normalised as Li et al. (2018, "Visualizing the Loss Landscape of Neural Nets") do.

A filter is one slice along the first dimension of a tensor with two or more dimensions (a row of a Linear weight, an
output channel of a convolution); a tensor of one dimension or none (a bias, a norm scale, a flat generated vector) is
ONE filter. Each filter of the direction is rescaled to the norm of the matching filter of the reference weights:
d_f <- d_f / ||d_f|| * ||w_f||. (Li et al. zero the directions of biases and norm scales by default; hyperdecoders
generates every adapter weight as a flat vector per example, so here a 1-D tensor keeps a direction, normalised as a
whole.) A filter whose weight is zero gets a zero direction.
"""
import torch


def random_directions(shapes, generator, dtype=torch.float32):
    """One Gaussian tensor per shape, drawn in order from `generator` (a torch.Generator on the CPU)."""
    return [torch.randn(tuple(shape), generator=generator, dtype=dtype) for shape in shapes]


def filter_norms(tensor):
    """The norm of each filter of `tensor`: shape (n_filters,)."""
    if tensor.dim() <= 1:
        return tensor.reshape(1, -1).norm(dim=1)
    return tensor.reshape(tensor.shape[0], -1).norm(dim=1)


def filter_normalise(direction, reference, eps=1e-10):
    """Rescale each filter of `direction` (list of tensors) to the norm of the matching filter of `reference`."""
    out = []
    for d, w in zip(direction, reference):
        if d.shape != w.shape:
            raise ValueError(f"direction shape {tuple(d.shape)} does not match weight shape {tuple(w.shape)}")
        d_norms, w_norms = filter_norms(d), filter_norms(w.to(d.dtype))
        scale = torch.where(d_norms > eps, w_norms / d_norms.clamp_min(eps), torch.zeros_like(d_norms))
        shape = (1,) * d.dim() if d.dim() <= 1 else (-1,) + (1,) * (d.dim() - 1)
        out.append(d * scale.reshape(shape))
    return out


def landscape_directions(reference, seed, dtype=None):
    """Two filter-normalised random directions for the reference tensors (in their dtype unless given),
    reproducible from `seed`: drawn on the CPU, so the same on every device."""
    dtype = dtype or reference[0].dtype
    generator = torch.Generator().manual_seed(int(seed))
    shapes = [r.shape for r in reference]
    reference = [r.detach().cpu() for r in reference]
    first = filter_normalise(random_directions(shapes, generator, dtype), reference)
    second = filter_normalise(random_directions(shapes, generator, dtype), reference)
    return first, second

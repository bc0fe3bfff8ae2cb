"""A tune spec's distributions as Ray Tune's: the search space, PBT's mutations and its explore step, which keeps a
perturbed value inside its distribution's bounds."""


def domain(dist):
    """Distribution -> a ray.tune sample domain (randint: both bounds inclusive, as the spec says)."""
    from ray import tune

    if dist.kind == "uniform":
        return tune.uniform(*dist.values)
    if dist.kind == "loguniform":
        return tune.loguniform(*dist.values)
    if dist.kind == "randint":
        return tune.randint(dist.values[0], dist.values[1] + 1)  # Ray's upper bound is exclusive
    return tune.choice(list(dist.values))


def param_space(spec):
    """{key: domain} of every searched key."""
    return {dist.key: domain(dist) for dist in spec.space}


def mutations(spec):
    """PBT's hyperparam_mutations: a domain to resample from (a list for a choice, which PBT shifts along)."""
    keys = spec.scheduler["mutate"]
    return {key: list(spec.distribution(key).values) if spec.distribution(key).kind == "choice"
            else domain(spec.distribution(key)) for key in keys}


def clip(spec, config):
    """PBT's explore step multiplies a value by a perturbation factor; keep each searched value inside its bounds
    (an integer stays an integer), so a perturbed trial never leaves the space the spec allows."""
    clipped = dict(config)
    for dist in spec.space:
        if dist.kind == "choice" or dist.key not in clipped:
            continue
        low, high = dist.values
        value = min(max(clipped[dist.key], low), high)
        clipped[dist.key] = int(round(value)) if dist.kind == "randint" else float(value)
    return clipped


class Clipper:
    """custom_explore_fn for PBT (a picklable callable)."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, config):
        return clip(self.spec, config)

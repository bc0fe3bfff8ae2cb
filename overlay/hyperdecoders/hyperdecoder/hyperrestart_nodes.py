"""A run across nodes (`hyperrestart run --nnodes N --node-rank R`): every launcher passes its node rank to its
processes (HYPERRESTART_NODE_RANK, HYPERRESTART_NNODES). Once the process group is up, the processes compare them, so
that launchers started twice as one node rank (leaving no launcher, or two, owning the run folder) fail with one
clear message instead of training together. The rendezvous itself numbers the nodes in its own order (global ranks),
so the node rank is hyperrestart's, used for this check and for who owns the run folder only."""
import os
from collections import Counter

NODE_RANK, NNODES = "HYPERRESTART_NODE_RANK", "HYPERRESTART_NNODES"


def node_rank_problem(ranks, nnodes):
    """None when `ranks` (each process's node rank, as text) hold every node rank 0..nnodes-1 equally often, else
    what is wrong."""
    counts = Counter(ranks)
    per_node = len(ranks) // nnodes if nnodes else 0
    if per_node and len(ranks) % nnodes == 0 and counts == Counter({str(r): per_node for r in range(nnodes)}):
        return None
    started = ", ".join("{} x{}".format(rank, count // per_node if per_node else count)
                        for rank, count in sorted(counts.items(), key=lambda item: str(item[0])))
    return ("hyperrestart: the {} launchers of this run were started as node ranks {} (launchers per rank); start "
            "each of 0..{} exactly once (node rank 0 owns the run folder)".format(nnodes, started, nnodes - 1))


def check_node_ranks(training_args=None):
    """Raise RuntimeError when the launchers of a run across nodes did not start each node rank once. training_args:
    transformers' TrainingArguments, whose `device` sets up the process group (the first use; cached)."""
    nnodes = int(os.environ.get(NNODES) or 1)
    if nnodes < 2:
        return
    import torch  # here, not at import: node_rank_problem is checked by hyperrestart's tests without torch
    if training_args is not None:
        training_args.device  # noqa: B018 - sets up torch.distributed
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    ranks = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(ranks, os.environ.get(NODE_RANK, "?"))
    problem = node_rank_problem(ranks, nnodes)
    if problem:
        raise RuntimeError(problem)

"""The processes of one run: torchrun's environment, DDP's process group, and the sums over processes."""
import os

import torch


class Dist:
    """This process's rank and device; under torchrun (WORLD_SIZE > 1) it joins the process group."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, *values):
        """The values summed over all processes (one all-reduce, float64), as a list."""
        if self.world == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return total.tolist()


class NullContext:
    """A context that does nothing (DDP's no_sync on the last micro-batch)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

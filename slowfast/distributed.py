"""Scale-out over prompts with ``torchrun`` (``torch.distributed``): one slice of the prompts per rank.

Launched with ``torchrun --nproc_per_node N -m slowfast bench tasks ...`` (or ``sweep``), each
process reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment, joins a
process group (gloo on CPU, nccl on GPU, one GPU per local rank), decodes the prompts
``rank::world`` and hands its results to every rank with ``all_gather_object``; only rank 0
prints and writes. Decoding is one prompt at a time, so a prompt's trace does not depend on
which rank ran it: the gathered results equal a one-process run's, except wall times.

Without those variables (a plain ``python -m slowfast ...``) everything here is a no-op
with rank 0 of 1.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's slice: items ``rank, rank + world, ...``."""
        return list(items[self.rank::self.world])

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` when not distributed)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist  # here: only a torchrun run needs it

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, rows: list[dict]) -> list[dict]:
        """Every rank's rows merged and sorted by their ``index`` key (the prompt's place in the set)."""
        merged = [row for part in self.all_gather(rows) for row in part]
        return sorted(merged, key=lambda r: r["index"])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist  # here: only a torchrun run needs it

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def device(self, requested: Optional[str]) -> str:
        """The device this rank decodes on: the requested one, else this local rank's GPU, else the CPU."""
        if requested:
            if self.active and requested == "cuda":
                return f"cuda:{self.local_rank}"
            return requested
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def close(self) -> None:
        """Nothing to do: the process group lives until the process exits, so a second command
        in the same process (e.g. a bench, then a sweep) joins the same group again."""


def setup(device: Optional[str] = None) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment (no-op without one).

    The backend is nccl when this rank decodes on a GPU, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist  # here: only a torchrun run needs it

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    d = Dist(rank=rank, world=world, local_rank=local)
    if not dist.is_initialized():
        on_gpu = d.device(device).startswith("cuda") and torch.cuda.is_available()
        if on_gpu:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
        atexit.register(_destroy)
    return d


def _destroy() -> None:
    import torch.distributed as dist  # here: only a torchrun run needs it

    if dist.is_initialized():
        dist.destroy_process_group()

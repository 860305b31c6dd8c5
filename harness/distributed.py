"""Data parallel: `torchrun --nproc-per-node N -m harness run ...` runs one copy of the harness per
rank; each computes a share of every chunk of requests, the shares are gathered, and rank 0 reads
and writes the response cache and the results files.

Initialised from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
$HARNESS_DIST_INIT_METHOD replaces `env://` (e.g. `file:///shared/rendezvous`). The process group
is NCCL where CUDA is available, else gloo; answers travel over a gloo group either way (they are
Python objects, not tensors).
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

_group: Group | None = None
_checked = False


@dataclass
class Group:
    rank: int
    world_size: int
    local_rank: int
    objects: Any  # the gloo process group that carries Python objects

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[Any]) -> list[Any]:
        """This rank's share: every world_size-th item, so that long and short requests spread evenly."""
        return items[self.rank :: self.world_size]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def gather(self, mine: dict[str, Any]) -> dict[str, Any]:
        """Every rank's dictionary, merged, on every rank."""
        import torch.distributed as dist

        parts: list[dict[str, Any] | None] = [None] * self.world_size
        dist.all_gather_object(parts, mine, group=self.objects)
        merged: dict[str, Any] = {}
        for part in parts:
            merged.update(part or {})
        return merged

    def total(self, value: float) -> float:
        """The sum of a number over the ranks."""
        return sum(self.gather({str(self.rank): value}).values())


def current() -> Group | None:
    """The data-parallel group when launched by torchrun with more than one process, else None."""
    global _group, _checked
    if _checked:
        return _group
    _checked = True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(
            "nccl" if cuda else "gloo", init_method=os.environ.get("HARNESS_DIST_INIT_METHOD", "env://"),
            rank=rank, world_size=world_size, timeout=dt.timedelta(hours=2),
        )
    objects = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    _group = Group(rank, world_size, local_rank, objects)
    atexit.register(_shutdown)
    return _group


def finish(code: int) -> None:
    """End a distributed process: leave the group together, then exit at once with `code`.

    Exiting through the interpreter's shutdown can abort in gloo's threads ("terminate called
    without an active exception"), turning a finished run into a crash; os._exit skips that.
    """
    if _group is None:
        return
    import sys

    _shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _shutdown() -> None:
    """Leave together: a rank that exits while another still holds the group aborts gloo."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier(group=_group.objects if _group else None)
        finally:
            dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0, and in a run that is not distributed."""
    group = current()
    return group is None or group.is_main


def rank_device(device: str) -> str:
    """Each rank on its own GPU: `cuda` (or `auto` with GPUs) becomes cuda:LOCAL_RANK."""
    group = current()
    if group is None or device not in ("cuda", "auto"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    return f"cuda:{group.local_rank % torch.cuda.device_count()}"

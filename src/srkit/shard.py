"""Splitting a batch command's files across processes started by torchrun, and merging what they report.

    torchrun --nproc_per_node=2 -m srkit.cli upscale photos/ -o out/

Each rank takes every world-th file (rank, rank + world, ...), writes its own outputs, and sends its report to
rank 0, which prints the merged report; every rank exits with the same status. Without torchrun (no WORLD_SIZE in
the environment) there is one shard holding everything, and nothing is initialised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints and writes the merged results."""
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share: items rank, rank + world, rank + 2 * world, ..."""
        return list(items[self.rank :: self.world])


def from_env() -> Shard:
    """The shard torchrun's RANK / WORLD_SIZE describe; one shard of everything when they are not set."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE must be integers (torchrun sets them): {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is not in 0..WORLD_SIZE-1 = 0..{world - 1}")
    return Shard(rank, world)


def gather(shard: Shard, obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (a gloo process group, made once, over torchrun's env)."""
    if shard.world == 1:
        return [obj]
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world)
    out: list[Any] = [None] * shard.world
    dist.all_gather_object(out, obj)
    return out


def finish(shard: Shard) -> None:
    """Leave the process group cleanly (a no-op without torchrun)."""
    if shard.world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

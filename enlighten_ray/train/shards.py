"""On each Ray Train worker: its shards of the two domains' datasets, read ahead in threads and
zipped into training batches."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import ray.train
import torch

__all__ = ["read_ahead", "worker_batches"]

READ_AHEAD_BYTES = 1 << 30  # per domain and worker: a whole CPU epoch fits, a GPU epoch streams
READ_AHEAD_MAX_BATCHES = 1024  # Semaphore.release(n) loops n times: tiny batches must not make it 10^8
SHUFFLE_BUFFER = 64  # augmented crops mixed on each worker, across the blocks Ray Data sends in random order


def read_ahead(batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """Pull a shard's batches in a thread, up to READ_AHEAD_BYTES ahead of the trainer, starting
    now (so both domains' epochs execute at once, not one after the other). While its consumer is
    slower than its tasks, Ray Data's scheduling loop spins on a CPU core (measured: a core of a
    2-core machine for a whole epoch); reading ahead lets the epoch's execution finish and stop
    early."""
    ahead: queue.Queue = queue.Queue()
    room = threading.Semaphore(0)  # free places, set from the first batch's size
    done = object()

    def pull() -> None:
        try:
            for i, batch in enumerate(batches):
                if i == 0:
                    size = sum(t.numel() * t.element_size() for t in batch.values())
                    room.release(min(READ_AHEAD_MAX_BATCHES, max(2, READ_AHEAD_BYTES // max(size, 1))))
                room.acquire()
                ahead.put(batch)
            ahead.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the trainer's thread
            ahead.put(exc)

    def take() -> Iterator[dict[str, torch.Tensor]]:
        while (item := ahead.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            room.release()
            yield item

    threading.Thread(target=pull, daemon=True, name="enlighten-ray-read-ahead").start()
    return take()


def worker_batches(per_worker: int) -> Iterator[dict[str, torch.Tensor]]:
    """Zip this worker's shards of the two (unpaired, equally long) domains into training batches.
    Both iterators are run to their end so each shard finishes its epoch cleanly."""

    # iter(): each iter() of an iter_torch_batches result starts a new epoch, so the drain below
    # must continue these very iterators, not restart the shards.
    def shard(name: str) -> Iterator[dict[str, torch.Tensor]]:
        batches = ray.train.get_dataset_shard(name).iter_torch_batches(
            batch_size=per_worker, drop_last=True, local_shuffle_buffer_size=SHUFFLE_BUFFER
        )
        return read_ahead(iter(batches))

    low, normal = shard("low"), shard("normal")
    for lb, nb in zip(low, normal):
        yield {**lb, "normal": nb["normal"]}
    for rest in (low, normal):  # an item that failed to decode can leave one domain a batch longer
        for _ in rest:
            pass

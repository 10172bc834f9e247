"""Where a training step's images come from: held in memory, or streamed from an image store.

:class:`MemorySource` (folders, the demo photos, the digits) keeps every image on the device for the
whole run, as sflnet always did. :class:`StoreSource` (``--data STORE``, see :mod:`sflnet.io.store`)
holds no image: each step is a :class:`StreamedBatch` whose chunks (the model's ``chunk_plan``, the
same chunks the model would cut from images held in memory, so the same sums bit for bit) are read
from the memory-mapped store and converted to floats by one background thread while the model
computes. The thread runs ahead by at most one step's chunks and never by more than
:data:`PREFETCH_BYTES` of floats; on a GPU each chunk is filled into pinned host memory and
uploaded asynchronously. Under MPI each rank streams only its own share of every step
(:func:`sflnet.training.distributed.shard`).
"""

import collections
import contextlib
import queue
import threading

import numpy as np

from sflnet.backend import pinned_empty, to_device, upload_async
from sflnet.training.distributed import shard

PREFETCH_BYTES = 64 << 20       # most float bytes the prefetch thread holds ahead of the step


def data_source(dataset, xp, model):
    """The source of ``dataset``'s images: streamed for an image store (when the model can plan chunks),
    else held in memory."""
    if hasattr(dataset, "store") and hasattr(model, "chunk_plan"):
        return StoreSource(dataset, xp, model.chunk_plan)
    return MemorySource(dataset, xp)


def _sharing(indices, positions, world):
    return {"batch_count": len(indices), "reduce": world.allreduce_sum, "positions": positions}


class MemorySource:
    """Every image on the device (``images``: list of (C, H_i, W_i)); a step's batch is a list of them."""

    def __init__(self, dataset, xp):
        self.names = dataset.names
        self.images = [to_device(image, xp) for image in dataset.images]
        self.pixels = [int(image.shape[-2] * image.shape[-1]) for image in self.images]

    def steps(self, order, world):
        """``(batch, sharing)`` for each step's ``indices`` of ``order`` (see ``Trainer._share``)."""
        for indices in order:
            if not world.distributed:
                yield [self.images[i] for i in indices], {}
                continue
            positions = shard(indices, self.pixels, world.size, world.rank)
            yield [self.images[indices[p]] for p in positions], _sharing(indices, positions, world)


class DeviceImages:
    """A store's images as a sequence of device arrays, each read when asked for (snapshots)."""

    def __init__(self, dataset, xp):
        self.dataset, self.xp = dataset, xp

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        found = self.dataset.images[key]
        return [to_device(a, self.xp) for a in found] if isinstance(key, slice) else to_device(found, self.xp)


class StreamedBatch:
    """One step's images of a store, as the chunks the model computes on (:meth:`stream`)."""

    def __init__(self, count, n_chunks, take):
        self.count, self.n_chunks, self.take = count, n_chunks, take

    def __len__(self):
        return self.count

    def stream(self):
        """The step's chunks (n, C, H, W) on the device, in the model's order."""
        for _ in range(self.n_chunks):
            yield self.take()


class _Prefetcher:
    """A thread filling the chunks of the planned steps, in order, into a bounded queue."""

    def __init__(self, store, dtype, xp, chunks, depth):
        self.store, self.dtype, self.xp = store, dtype, xp
        self.queue = queue.Queue(maxsize=depth)
        self.uploading = collections.deque(maxlen=2)   # pinned buffers whose asynchronous copy may still run
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(chunks,), daemon=True, name="sflnet-prefetch")
        self.thread.start()

    def _put(self, item):
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunks):
        try:
            for ids in chunks:
                first = self.store.shapes[ids[0]]
                host = pinned_empty((len(ids),) + tuple(first), self.dtype, self.xp)
                for row, i in enumerate(ids):
                    host[row] = self.store.image(i, self.dtype)
                if not self._put(host):
                    return
        except BaseException as exc:   # handed to the consumer, which raises it
            self._put(exc)

    def take(self):
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        self.uploading.append(item)
        return upload_async(item, self.xp)

    def stop(self):
        """End the thread: at once if it waits on a full queue (emptied here, so a stop after a step does
        not wait for its 0.1 s poll), else after the chunk it is filling."""
        self.stopping.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()
            self.thread.join(timeout=0.01)


class StoreSource:
    """The images of a :class:`sflnet.io.store.StoreDataset`, streamed step by step (none held)."""

    def __init__(self, dataset, xp, plan):
        self.store = dataset.store
        self.dtype = dataset.dtype
        self.xp = xp
        self.plan = plan
        self.names = dataset.names
        self.pixels = self.store.pixels
        self.images = DeviceImages(dataset, xp)

    def chunk_indices(self, local):
        """The step's chunks as lists of image indices (``local``: this process's images of the step)."""
        return [[local[p] for p in positions] for positions in self.plan([self.store.shapes[i] for i in local])]

    def steps(self, order, world):
        shares = []
        for indices in order:
            positions = shard(indices, self.pixels, world.size, world.rank) if world.distributed else None
            local = [indices[p] for p in positions] if world.distributed else list(indices)
            shares.append((indices, positions, self.chunk_indices(local)))
        chunks = [ids for _, _, step in shares for ids in step]
        itemsize = np.dtype(self.dtype).itemsize
        largest = max(len(ids) * int(np.prod(self.store.shapes[ids[0]])) * itemsize for ids in chunks)
        depth = max(1, min(len(shares[0][2]), PREFETCH_BYTES // largest))
        prefetcher = _Prefetcher(self.store, self.dtype, self.xp, chunks, depth)
        try:
            for indices, positions, step in shares:
                sharing = _sharing(indices, positions, world) if world.distributed else {}
                yield StreamedBatch(sum(len(c) for c in step), len(step), prefetcher.take), sharing
        finally:
            prefetcher.stop()

"""Data-parallel training on MPI: ``mpiexec -n P sflnet train …``.

A full-batch epoch is a sum of per-image gradients (Eq. 8, 9 summed over the
N_m images, divided by N_m). So P processes ("ranks") can each take a share of
the images of a step, compute the *sum* of their images' losses and gradients
(every loss already divides by the global N_m, passed in as ``batch_count``),
and one collective sum (``Allreduce``) per step gives every rank the full-batch
loss and gradient. Every rank then applies the same update to its own copy of
the parameters, so the copies stay equal without ever being sent.

What this module holds (nothing else in sflnet talks to MPI):

* :func:`current_world` — the :class:`World` of this process: :class:`SingleProcess`
  when sflnet was not started by ``mpiexec`` (mpi4py is then never imported),
  else :class:`MPIWorld` on ``MPI.COMM_WORLD``. Detection reads the process
  manager's environment (``PMI_SIZE`` of MPICH/Hydra and Intel MPI,
  ``OMPI_COMM_WORLD_SIZE`` of Open MPI, ``MV2_COMM_WORLD_SIZE`` of MVAPICH); no flag is needed.
* :func:`shard` — which images of a step a rank takes: balanced by pixel count
  (images differ in size), deterministic, the same answer on every rank.
* ``World.allreduce_sum`` — the one collective sum per step, over a single
  contiguous buffer holding every gradient and every loss total. On the GPU it
  uses NCCL (``cupy.cuda.nccl``) when CuPy has it, else host copies through mpi4py.
* ``World.agree`` — every rank learns of an error on any rank (one ``allgather``),
  so all of them stop together with the same message instead of some hanging in
  the next collective; ``World.gather`` — after each mini-batch step the ranks agree on a stop
  request and a periodic checkpoint (:mod:`sflnet.training.trainer`).

Determinism: MPI sums in an order fixed by the number of ranks and the message
size (MPICH, Open MPI), so a rerun with the same P is bit-identical; against a
single process the sums run in another order, so float64 agrees to rounding
(≈1e-15 relative per step), not bit for bit.

Files: rank 0 alone writes the run folder; every rank reads the checkpoint on
``--resume`` (any P may resume any run). The training data is read by every rank
(each keeps the whole dataset on the host; the device holds the images it uses), except from an
image store: every rank maps the same store and streams only its share of each step
(:mod:`sflnet.training.source`).
"""

import os
import sys

import numpy as np

from sflnet.backend import get_array_module, to_device, to_host
from sflnet.errors import SflnetError

# Environment variables by which MPI process managers announce the number of processes.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                        "PMI_LOCAL_RANK")

_world = None


def launched_size(environ=None):
    """The number of processes the MPI launcher started (1 when not under ``mpiexec``)."""
    environ = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def current_world():
    """This process's :class:`World` (created once): MPI under ``mpiexec -n P`` with P > 1, else single."""
    global _world
    if _world is None:
        size = launched_size()
        _world = SingleProcess() if size == 1 else MPIWorld.connect(size)
    return _world


class World:
    """The processes of one training run. ``rank`` 0 … ``size`` − 1; rank 0 writes the run folder."""

    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_root(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def describe(self):
        """"" for one process, else e.g. " × 2 MPI ranks"."""
        return f" × {self.size} MPI ranks" if self.distributed else ""


class SingleProcess(World):
    """No MPI: every collective is the identity."""

    def allreduce_sum(self, arrays):
        return list(arrays)

    def agree(self, error):
        if error is not None:
            raise SflnetError(error)

    def first_nonzero(self, value):
        return value

    def gather(self, value):
        return [value]

    def abort(self, code):
        sys.exit(code)


class MPIWorld(World):
    """``MPI.COMM_WORLD`` through mpi4py (imported only here, and only under ``mpiexec``)."""

    def __init__(self, comm, mpi):
        self.comm = comm
        self.mpi = mpi
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.local_rank = _local_rank(self.rank)
        self._nccl = None           # (nccl module, communicator) once a GPU reduction asked for it

    @classmethod
    def connect(cls, launched):
        try:
            from mpi4py import MPI  # noqa: PLC0415  (optional extra: pip install "sflnet[mpi]")
        except ImportError as exc:
            raise SflnetError(f"sflnet was started by mpiexec with {launched} processes but mpi4py cannot be "
                              f"imported ({exc}); install the MPI extra: pip install \"sflnet[mpi]\"") from None
        return cls(MPI.COMM_WORLD, MPI)

    # -- the one collective sum per step ----------------------------------------
    def allreduce_sum(self, arrays):
        """Sum each array over all ranks, in one collective; returns new arrays (same shapes, dtype, device).

        arrays: list of arrays of one dtype on one device (gradients (param shapes) and 0-d loss totals).
        The arrays are packed into one contiguous 1-D buffer, so a step costs one message of
        Σ sizes × itemsize bytes per rank, whatever the number of parameters and losses.
        """
        xp = get_array_module(*arrays)
        buffer = xp.concatenate([a.reshape(-1) for a in arrays])
        if xp is np:
            self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)
        else:
            buffer = self._allreduce_device(buffer, xp)
        out, start = [], 0
        for a in arrays:
            out.append(buffer[start:start + a.size].reshape(a.shape))
            start += a.size
        return out

    def _allreduce_device(self, buffer, xp):
        """NCCL on the device buffer when CuPy has NCCL, else a host copy through MPI."""
        nccl = self._nccl_communicator(xp)
        if nccl is None:
            host = np.ascontiguousarray(to_host(buffer))
            self.comm.Allreduce(self.mpi.IN_PLACE, host, op=self.mpi.SUM)
            return to_device(host, xp)
        module, communicator = nccl
        kinds = {np.dtype(np.float32): module.NCCL_FLOAT32, np.dtype(np.float64): module.NCCL_FLOAT64}
        communicator.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, kinds[np.dtype(buffer.dtype)],
                               module.NCCL_SUM, xp.cuda.get_current_stream().ptr)
        return buffer

    def _nccl_communicator(self, xp):
        if self._nccl is None:
            try:
                from cupy.cuda import nccl  # noqa: PLC0415
                available = nccl.available if hasattr(nccl, "available") else True
            except Exception:   # CuPy built without NCCL, or the strict test double
                available = False
            if not available:
                self._nccl = False
            else:
                uid = nccl.get_unique_id() if self.is_root else None
                uid = self.comm.bcast(uid, root=0)
                self._nccl = (nccl, nccl.NcclCommunicator(self.size, uid, self.rank))
        return self._nccl or None

    # -- agreement ---------------------------------------------------------------
    def agree(self, error):
        """Every rank passes its error message (or None); if any rank has one, every rank raises the
        same :class:`SflnetError` (the lowest failing rank's message, naming the rank if not 0)."""
        errors = self.comm.allgather(error)
        for rank, message in enumerate(errors):
            if message is not None:
                raise SflnetError(message if rank == 0 else f"rank {rank}: {message}")

    def first_nonzero(self, value):
        """The first non-zero ``value`` in rank order (0 if none), the same on every rank."""
        return next((v for v in self.comm.allgather(value) if v), 0)

    def gather(self, value):
        """Every rank's ``value`` (small, picklable), in rank order, on every rank (one ``allgather``)."""
        return self.comm.allgather(value)

    def abort(self, code):
        """Stop every rank now (a failure on one rank that the others cannot learn of)."""
        sys.stderr.flush()
        self.comm.Abort(code)


def local_size(environ=None):
    """How many ranks of this run share this node (1 when unknown)."""
    environ = os.environ if environ is None else environ
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE"):
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def _local_rank(rank):
    for name in LOCAL_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return rank


def shard(indices, pixels, size, rank):
    """The images of one step that ``rank`` takes: greedy balance by pixel count.

    indices: the step's image indices (list of int, the shared seeded order)
    pixels:  pixels[i] = H_i · W_i of image i (indexable by those indices)
    returns  this rank's *positions* in ``indices`` (ascending), so ``[indices[p] for p in …]``
             are its images and the positions select its rows of per-step random draws.

    Largest image first (ties: earlier position), each to the rank with the fewest pixels so far
    (ties: lower rank): the classic longest-processing-time rule, within 4/3 of the best balance.
    Every rank computes the same assignment, so no message is needed.
    """
    load = [0] * size
    owner = {}
    order = sorted(range(len(indices)), key=lambda position: (-pixels[indices[position]], position))
    for position in order:
        target = min(range(size), key=lambda r: (load[r], r))
        owner[position] = target
        load[target] += pixels[indices[position]]
    return [position for position in range(len(indices)) if owner[position] == rank]


def step_sizes(n_images, batch_size):
    """Sizes of the steps of an epoch (full batch: one step of n)."""
    if batch_size <= 0 or batch_size >= n_images:
        return [n_images]
    sizes = [batch_size] * (n_images // batch_size)
    if n_images % batch_size:
        sizes.append(n_images % batch_size)
    return sizes


def check_shardable(n_images, batch_size, size):
    """A one-line reason when some step would leave a rank without an image, else None."""
    smallest = min(step_sizes(n_images, batch_size))
    if smallest >= size:
        return None
    if smallest == n_images:
        return f"{size} MPI ranks but only {n_images} training images: use at most {n_images} ranks"
    return (f"{size} MPI ranks but a step of --batch-size {batch_size} over {n_images} images has only "
            f"{smallest} images: every rank needs at least one image per step; use at most {smallest} "
            f"ranks or another --batch-size")

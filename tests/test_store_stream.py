"""Training from an image store streams it: the memory a training epoch allocates does not grow with
the number of images (tracemalloc over two store sizes; the in-memory path, for contrast, does);
under mpiexec -n 2 each rank streams its share and the result equals one process."""

import csv
import os
import shutil
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from sflnet.io.store import load_images, prepare_store
from sflnet.training import source as source_module
from sflnet.training.callbacks import Reporter
from sflnet.training.config import TrainOptions
from sflnet.training.trainer import Trainer

SIDE = 96
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False


def make_images(folder, count, side=SIDE, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    return folder


def epoch_peak(load, batch_size):
    """Peak bytes traced while the data is loaded (``load()``), a Trainer built and one epoch run."""
    options = TrainOptions.for_model("cae", size=SIDE, epochs=1, batch_size=batch_size, dtype="float64",
                                     device="cpu")
    params = options.spec.init(options, np)
    tracemalloc.start()
    try:
        trainer = Trainer(options, load(), np, params, {}, np.random.default_rng(0), 0, Reporter())
        trainer.run_epoch()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    made = {}
    for count in (4, 16):
        source = make_images(root / f"src{count}", count)
        prepare_store([source], root / f"store{count}", size=SIDE)
        made[count] = (source, root / f"store{count}")
    return made


def test_memory_of_an_epoch_does_not_grow_with_the_store(stores):
    per_image = 3 * SIDE * SIDE * 8                       # one float64 image
    peaks = {n: epoch_peak(lambda: load_images([stores[n][1]], dtype=np.float64, lazy=True), 1) for n in stores}
    assert peaks[16] - peaks[4] < 2 * per_image, peaks    # 12 more images would add 12 × per_image
    held = {n: epoch_peak(lambda: load_images([stores[n][0]], size=SIDE, dtype=np.float64), 1) for n in stores}
    assert held[16] - held[4] > 10 * per_image, held      # the folder path holds every image


def test_full_batch_streams_in_bounded_chunks(stores, monkeypatch):
    """Full batch over the store: the prefetch queue is bounded by PREFETCH_BYTES, not by the store.

    The consumer pauses at each chunk, so the thread runs a full queue ahead (with a fast consumer the
    queue never fills and the bound goes untested). The peak is checked against a bound derived from
    the prefetcher's buffers, not against the other store's peak: the 4-image store ends before the
    thread is a full queue ahead, so that difference depended on thread timing."""
    per_image = 3 * SIDE * SIDE * 8
    monkeypatch.setattr(source_module, "PREFETCH_BYTES", 2 * per_image)
    peaks = {}
    for count in stores:
        dataset = load_images([stores[count][1]], dtype=np.float64, lazy=True)
        src = source_module.StoreSource(dataset, np, lambda shapes: [[p] for p in range(len(shapes))])
        tracemalloc.start()
        try:
            for batch, _ in src.steps([list(range(count))], world=_Single()):
                assert len(batch) == count
                chunks = [_slowly(float(chunk.sum())) for chunk in batch.stream()]
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        expected = [float(dataset.store.image(i, np.float64)[None].sum()) for i in range(count)]
        assert chunks == expected
    # Most float images alive at once, whatever the store's size: the queue's 2 (PREFETCH_BYTES), the
    # one the thread is filling, pixels_to_float's 2 temporaries (astype, then / scale), and the 2 the
    # consumer side holds (the uploading deque, maxlen 2, keeps the current and the previous chunk):
    # 7, plus bookkeeping. Holding the store would need 16 images for the larger one.
    bound = 8 * per_image
    assert all(peak < bound for peak in peaks.values()), (peaks, bound)


def _slowly(value):
    """``value``, after a pause: the consumer is slower than the thread, so the queue fills to its bound."""
    time.sleep(0.02)
    return value


class _Single:
    distributed = False


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as stream:
        return np.array([[float(v) for v in row[:-1]] for row in list(csv.reader(stream))[1:]])


@pytest.mark.skipif(not HAVE_MPI, reason="mpi4py/mpiexec not installed (pip install '.[mpi]')")
@pytest.mark.parametrize("extra", [["--batch-size", "3"]])
def test_two_ranks_on_a_store_equal_one_process(tmp_path, extra):
    source = tmp_path / "src"
    rng = np.random.default_rng(5)
    source.mkdir()
    for i, (h, w) in enumerate([(20, 24), (16, 16), (24, 20), (12, 28), (20, 20)]):   # sizes differ: balance
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(source / f"im{i}.png")
    prepare_store([source], tmp_path / "store", size=0)

    def run(out, ranks=None):
        command = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [
            sys.executable, "-m", "sflnet_cli.main", "train", "--data", str(tmp_path / "store"), "--epochs", "3",
            "--dtype", "float64", "--device", "cpu", "--snapshot-every", "0", "--out", str(tmp_path / out), *extra]
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr
        return _history(tmp_path / out)

    single, two, again = run("single"), run("mpi", 2), run("again", 2)
    assert single.shape == two.shape == (3, single.shape[1])
    assert float(np.max(np.abs(single - two) / np.abs(single).clip(1e-300))) < 1e-12
    assert np.array_equal(two, again)


def test_store_source_on_each_backend_equals_the_images_in_memory(tmp_path, xp):
    """NumPy and CuPy (the strict double without a GPU): a store's streamed step (pinned host memory,
    asynchronous upload) gives the same losses and update as the same images held on the device."""
    from sflnet.backend import to_host  # noqa: PLC0415

    source = make_images(tmp_path / "src", 5, side=24, seed=2)
    prepare_store([source], tmp_path / "store", size=24)
    results = []
    for data in (load_images([source], size=24, dtype=np.float64),
                 load_images([tmp_path / "store"], dtype=np.float64, lazy=True)):
        options = TrainOptions.for_model("cae", size=24, epochs=1, batch_size=2, dtype="float64", device="cpu")
        params = {n: xp.asarray(a) for n, a in options.spec.init(options, np).items()}
        trainer = Trainer(options, data, xp, params, {}, np.random.default_rng(0), 0, Reporter())
        row = trainer.run_epoch()
        results.append(([row[k] for k in row if k != "seconds"],
                        {n: to_host(a) for n, a in trainer.model.params.items()}))
    assert results[0][0] == results[1][0]
    assert all(np.array_equal(results[0][1][n], results[1][1][n]) for n in results[0][1])

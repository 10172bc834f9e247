"""Training data larger than memory: measure the image store (sflnet prepare, streamed training).

Generates photo-like 300×300 images (random crops of the built-in demo photos, resized; JPEG
quality 95) into a folder you name (never the repository), prepares a store from them, and measures
training steps from the store and from the folder (held in memory), in a fresh process each, with
the peak anonymous memory (RssAnon, sampled every 20 ms from /proc/self/status).

    python validation/store_scale.py generate --count 20000 --out /tmp/photos
    python validation/store_scale.py steps --data /tmp/store --batch-size 32 --steps 8
    mpiexec -n 2 python validation/store_scale.py steps --data /tmp/store --batch-size 32 --steps 8

``steps`` runs the training loop's own pieces (the Trainer, its data source, train_step) for the
first ``--steps`` steps of epoch 1 and prints one JSON line per rank: wall time, median step,
peak RssAnon, the loader's images/s alone (store only), and the steps' losses (float64 hex, for
equality checks).
"""

import argparse
import json
import os
import pathlib
import sys
import threading
import time

import numpy as np
from PIL import Image

from sflnet.errors import run_script

DEMO = pathlib.Path(__file__).resolve().parents[1] / "sflnet" / "demo_data"


def rss_anon_kib():
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakSampler:
    """The largest RssAnon seen, sampled every 20 ms in a thread."""

    def __init__(self):
        self.peak = rss_anon_kib()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss_anon_kib())

    def stop(self):
        self.done.set()
        self.thread.join()
        return max(self.peak, rss_anon_kib())


def generate(count, out, side=300, seed=0):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(DEMO.glob("*.png"))]
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(count):
        target = out / f"{i // 1000:02d}" / f"img{i:06d}.jpg"
        if target.exists():
            continue
        target.parent.mkdir(exist_ok=True)
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        crop = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        tile = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.BICUBIC)
        tile.save(target, quality=95)
    print(json.dumps({"generated": count, "seconds": time.perf_counter() - start}))


def steps(data, batch_size, n_steps, dtype, size):
    from sflnet.io.store import load_images  # noqa: PLC0415
    from sflnet.training.callbacks import Reporter  # noqa: PLC0415
    from sflnet.training.config import TrainOptions  # noqa: PLC0415
    from sflnet.training.distributed import current_world  # noqa: PLC0415
    from sflnet.training.step import minibatch_order, train_step  # noqa: PLC0415
    from sflnet.training.trainer import Trainer  # noqa: PLC0415

    world = current_world()
    sampler = PeakSampler()
    start = time.perf_counter()
    dataset = load_images([data], size=size, dtype=np.dtype(dtype), lazy=True)
    options = TrainOptions.for_model("cae", data=(os.path.abspath(data),), size=size or 300, epochs=1,
                                     batch_size=batch_size, dtype=dtype, device="cpu")
    params = options.spec.init(options, np)
    trainer = Trainer(options, dataset, np, params, {}, np.random.default_rng((0, 1)), 0, Reporter(), world=world)
    loaded = time.perf_counter() - start
    order = minibatch_order(len(trainer.images), batch_size, trainer.rng)[:n_steps]
    step_seconds, losses = [], []
    source = trainer.source.steps(order, world)
    for batch, sharing in source:
        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            result = train_step(trainer.model, trainer.optimizer, batch, **sharing)
        step_seconds.append(time.perf_counter() - t0)
        losses.append(float(result.E).hex())
    source.close()
    wall = time.perf_counter() - start
    report = {"rank": world.rank, "ranks": world.size, "data": str(data), "kind": type(trainer.source).__name__,
              "images": len(trainer.images), "batch_size": batch_size, "steps": len(step_seconds),
              "load_seconds": loaded, "wall_seconds": wall, "median_step_seconds": float(np.median(step_seconds)),
              "step_seconds": step_seconds, "peak_rss_anon_mib": sampler.stop() / 1024, "losses": losses}
    if hasattr(dataset, "store"):
        t0 = time.perf_counter()
        ids = [i for step in order for i in step]       # the steps' images, in their random order
        count = len(ids)
        for i in ids:
            dataset.store.image(i, np.dtype(dtype))
        report["loader_images_per_second"] = count / (time.perf_counter() - t0)
    report["train_images_per_second"] = batch_size / report["median_step_seconds"]
    print(json.dumps(report), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--out", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--data", required=True)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--steps", type=int, default=8)
    s.add_argument("--dtype", default="float32")
    s.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate(args.count, args.out)
    else:
        steps(args.data, args.batch_size, args.steps, args.dtype, args.size)


if __name__ == "__main__":
    sys.exit(run_script(main))

"""Nearest-neighbour retrieval with the CAE's encoder features: PL-trained against SFL-trained.

The paper trains its CAE "for extracting features from images" for tasks such as matching. This
script asks a simple question of that: on the Willow images, does an image's nearest neighbour
(leave-one-out, cosine similarity) by pooled encoder features belong to its own class more often
than by raw pixels, and is the SFL-trained encoder better or worse than the PL-trained one?

    python validation/retrieval.py [--data ../shared/data/willow] [--size 64] [--epochs 1000]

It trains (or resumes, if they exist) two runs from the same initial weights in
``validation/results/retrieval/runs/{pl,pl_sfl}`` (``--loss pl`` and ``--loss pl+sfl``, the
paper's settings otherwise), then encodes every image with ``sflnet.features.encode_images``
(layer 3, the bottleneck, mean- and max-pooled over space, and their concatenation) and reports
the top-1 class agreement of each feature, beside raw pixels (every image resized to a common
``--pixels``² grid). The class of an image is its folder name up to "(" (``car(G)`` → car).
Results: ``validation/results/retrieval/table.md`` and ``table.json``. The Willow images are
read by path and never copied.
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sflnet.io.checkpoint import load_checkpoint  # noqa: E402
from sflnet.io.images import load_dataset  # noqa: E402
from sflnet.features import encode_images  # noqa: E402
from sflnet.training.config import TrainOptions  # noqa: E402
from sflnet.training.evaluation import model_from_checkpoint  # noqa: E402
from sflnet.training.run import run_training  # noqa: E402
from sflnet.errors import run_script  # noqa: E402

OUT = os.path.join(HERE, "results", "retrieval")
RUNS = {"PL": "pl", "PL+SFL": "pl+sfl"}
SNAPSHOT_EVERY = 100   # fixed, so that a run first made short (a preview) keeps the same schedule when resumed


def class_of(name):
    """``car(G)/img.png`` → ``car``."""
    return name.split("/")[0].split("(")[0]


def top1_agreement(features, labels):
    """Fraction of images whose nearest other image (cosine similarity) has the same label.

    features: (N, D) host array; labels: N strings.
    """
    x = features - features.mean(axis=0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    return float(np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]))


def pixel_features(dataset, side):
    """Every image resized to side × side (bilinear) and flattened: (N, 3·side²)."""
    rows = []
    for image in dataset.images:
        hwc = ((np.transpose(image, (1, 2, 0)) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        small = np.asarray(Image.fromarray(hwc).resize((side, side), Image.BILINEAR), dtype=np.float64)
        rows.append(small.reshape(-1))
    return np.stack(rows)


def train(data, size, epochs, exclude):
    folders = {}
    for label, loss in RUNS.items():
        out = os.path.join(OUT, "runs", loss.replace("+", "_"))
        folders[label] = out
        if os.path.isfile(os.path.join(out, "checkpoint.npz")):
            result = run_training(out=out, resume=True, overrides={"epochs": epochs, "snapshot_every": SNAPSHOT_EVERY})
        else:
            options = TrainOptions.for_model("cae", data=(data,), size=size, epochs=epochs, loss=loss,
                                             exclude=tuple(exclude), device="cpu",
                                             snapshot_every=SNAPSHOT_EVERY).validate()
            result = run_training(options, out)
        print(f"{label}: {result.status} at epoch {result.epoch}", flush=True)
        if result.status == "interrupted":   # Ctrl-C / SIGTERM: stop here; the next call resumes
            signum = result.extra.get("signal")
            sys.exit(128 + signum if signum else 130)
    return folders


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "willow"))
    parser.add_argument("--exclude", action="append", default=None,
                        help="glob of images to leave out (default: winebottle*, giving the paper's 70)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--pixels", type=int, default=16, help="side of the raw-pixel baseline grid")
    args = parser.parse_args(argv)
    exclude = args.exclude if args.exclude is not None else ["winebottle*"]
    if not os.path.isdir(args.data):
        parser.exit(2, f"error: --data {args.data} is not a folder\n")

    folders = train(args.data, args.size, args.epochs, exclude)
    dataset = load_dataset(args.data, size=args.size, exclude=exclude, dtype=np.float32)
    labels = [class_of(n) for n in dataset.names]
    rows = {"raw pixels": {"features": f"{args.pixels}x{args.pixels} RGB",
                           "top1": top1_agreement(pixel_features(dataset, args.pixels), labels)}}
    for label, folder in folders.items():
        checkpoint = load_checkpoint(os.path.join(folder, "checkpoint.npz"))
        model = model_from_checkpoint(checkpoint, np)
        for pool in ("mean", "max"):
            feats = np.stack(encode_images(model, dataset.images, layer=3, pool=pool)).astype(np.float64)
            rows[f"{label} f3 {pool}"] = {"features": f"layer 3, {pool}-pooled (16)",
                                          "top1": top1_agreement(feats, labels)}
        both = np.concatenate([np.stack(encode_images(model, dataset.images, layer=3, pool=p)) for p in
                               ("mean", "max")], axis=1).astype(np.float64)
        rows[f"{label} f3 mean+max"] = {"features": "layer 3, mean and max (32)",
                                        "top1": top1_agreement(both, labels)}
    counts = {c: labels.count(c) for c in sorted(set(labels))}
    chance = sum((n / len(labels)) * ((n - 1) / (len(labels) - 1)) for n in counts.values())
    os.makedirs(OUT, exist_ok=True)
    summary = {"images": len(labels), "classes": counts, "chance_top1": chance, "size": args.size,
               "epochs": args.epochs, "rows": rows}
    with open(os.path.join(OUT, "table.json"), "w") as stream:
        json.dump(summary, stream, indent=2)
    lines = [f"Leave-one-out nearest neighbour (cosine) on {len(labels)} Willow images at {args.size} px, "
             f"classes {counts}; top-1 class agreement (chance {chance:.3f}). Encoders trained "
             f"{args.epochs} epochs from the same initial weights.", "",
             "| features | what | top-1 |", "|---|---|---|"]
    lines += [f"| {name} | {row['features']} | {row['top1']:.3f} |" for name, row in rows.items()]
    with open(os.path.join(OUT, "table.md"), "w") as stream:
        stream.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(run_script(main))

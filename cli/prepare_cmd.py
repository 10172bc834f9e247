"""``sflnet prepare``: decode the images once into an image store (thin over :mod:`sflnet.io.store`)."""

import contextlib
import os
import sys

import click

from sflnet_cli.options import check_size, data_warning


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(), metavar="DATA...")
@click.option("--out", required=True, type=click.Path(), metavar="STORE",
              help="Folder of the store (created; an existing store is finished or refreshed).")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="Keep only images whose path relative to the data folder matches (repeatable).")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="Drop images whose path relative to the data folder matches (repeatable).")
@click.option("--size", type=int, default=300, show_default=True,
              help="Longer image side in pixels, aspect ratio kept; 0 keeps the native size.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable image files with a warning instead of stopping.")
@click.option("--workers", type=click.IntRange(1, None), default=None,
              help="Decoding threads.  [default: every CPU]")
def prepare(data, out, include, exclude, size, skip_bad, workers):
    """Decode, convert and resize the images under DATA once, exactly as training does, into STORE.

    \b
    STORE/pixels.bin   every image's pixels (uint8; uint16 for 16-bit sources; float32 where
                       the image was resized), read with numpy.memmap
    STORE/index.json   names, shapes, offsets, checksums, --size, the sources' sizes and times

    Give STORE to --data of train, evaluate, encode, reconstruct and bench: its --size applies.
    An interrupted prepare continues where it stopped when run again; a store whose sources
    changed is refreshed.
    """
    from sflnet.io.images import find_image_files  # noqa: PLC0415
    from sflnet.io.store import prepare_store  # noqa: PLC0415

    check_size(size)
    # The images are found, and the bar is drawn only once the first one is done, so that an error before
    # any image is stored (no images, --out not a store) is the one line ``Error: ...``, without the bar.
    count = len(find_image_files(list(data), include=include, exclude=exclude))
    with contextlib.ExitStack() as stack:
        bar = None

        def progress(done):
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(click.progressbar(length=count, label="prepare", file=sys.stderr,
                                                            show_pos=True))
            bar.update(done)

        status, store = prepare_store(list(data), out, size=size, include=include, exclude=exclude,
                                      skip_bad=skip_bad, workers=workers, progress=progress, warn=data_warning)
    summary = store.summary()
    verb = "is up to date" if status == "up-to-date" else "written"
    click.echo(f"Image store {os.path.abspath(out)} {verb}: {summary['count']} images, size {summary['size']}, "
               f"{summary['pixels_bytes'] / 1e6:.1f} MB ({', '.join(f'{n} {d}' for d, n in summary['dtypes'].items())}).")

"""The paper's figures (Fig. 3-7) and learning curves, drawn with matplotlib.

Everything here draws on a :class:`matplotlib.figure.Figure` attached to an
Agg canvas (``FigureCanvasAgg``): no pyplot, no global state, no display
needed. Every ``plot_*`` function writes one PNG to ``out_path`` (parent
folders are created) and returns the path as a :class:`pathlib.Path`.

Inputs are NumPy arrays on the host (CuPy arrays are copied over with
:func:`sflnet.backend.to_host`); images are ``(3, H, W)`` with values in
``[-1, 1]``, as everywhere in sflnet. Inputs are never modified.

=================================  ===========================================
function                           paper
=================================  ===========================================
:func:`log_frequency_response`     Fig. 3 (the numbers)
:func:`plot_log_responses`         Fig. 3 (the picture)
:func:`subband_levels`             Fig. 4 (the numbers)
:func:`plot_subbands`              Fig. 4 (the picture)
:func:`plot_curves`                Fig. 5 style, one run
:func:`plot_fig5`                  Fig. 5 (a)-(d), a PL run and an SFL run
:func:`plot_reconstruction_grid`   Fig. 6 and Fig. 7
:func:`plot_overview`              a run's snapshots (Fig. 6 style), from disk
=================================  ===========================================
"""

import os
import pathlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sflnet.backend import to_host
from sflnet.io.images import image_to_uint8
from sflnet.nn import LoGBank
from sflnet.ops.filters import log_kernel
from sflnet.training.run_folder import RunFolder

#: Number of grey levels of the Fig. 4 quantisation ("uniform 10 levels in [0:255]").
SUBBAND_LEVELS = 10

#: Default close-up box (y0, x0, h, w) as fractions of the image: the central 30 % × 30 %.
CENTRAL_CLOSEUP = (0.35, 0.35, 0.3, 0.3)


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _new_figure(width_in, height_in):
    """A Figure on its own Agg canvas (never a window)."""
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_path, dpi):
    """Write ``fig`` as PNG to ``out_path`` (creating folders) and return the Path."""
    path = pathlib.Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _sigma_key(sigma):
    """History column of a subband: ``f"sfl_{sigma:g}"`` (``sfl_0.8``, ``sfl_1.6``, ``sfl_3.2``)."""
    return f"sfl_{float(sigma):g}"


def _column(rows, key):
    """The values of one history column as a float64 array (CSV strings are accepted)."""
    return np.array([float(row[key]) for row in rows], dtype=np.float64)


def _measured(rows, key):
    """True when the history has column ``key`` with at least one finite value (not all ``nan``)."""
    return key in rows[0] and bool(np.isfinite(_column(rows, key)).any())


def _positive(values):
    """Values for a log axis: non-positive entries become NaN (matplotlib leaves a gap)."""
    out = np.array(values, dtype=np.float64)
    out[~(out > 0)] = np.nan
    return out


def _host_image(image):
    """A (3, H, W) image as a float64 NumPy copy."""
    arr = np.array(to_host(image), dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {arr.shape}")
    return arr


# ---------------------------------------------------------------------------
# Fig. 3: frequency responses of the LoG kernels
# ---------------------------------------------------------------------------

def log_frequency_response(sigma, n=256):
    """Power spectrum ``|DFT(K_σ)|²`` of the Eq. 5 kernel, zero-padded to n × n and fftshift-ed.

    The kernel is :func:`sflnet.ops.filters.log_kernel` (k × k, k = 7, 13, 27 for
    σ = 0.8, 1.6, 3.2), placed in the top-left corner of an n × n array of
    zeros. Where it sits only changes the phase of the DFT, never the power.
    After ``fftshift`` the zero frequency is at index (n // 2, n // 2); row i
    is the vertical frequency ``v = (i − n // 2) / n`` and column j the
    horizontal frequency ``u = (j − n // 2) / n``, in cycles per pixel (the
    values of ``np.fft.fftshift(np.fft.fftfreq(n))``).

    What to expect (continuous approximation). ``K_σ = σ² ∇²G_σ`` with the
    normalised Gaussian ``G_σ``, whose Fourier transform is
    ``exp(−σ²ω²/2)`` (ω = 2πf, radians per pixel). A Laplacian multiplies the
    transform by −ω², so ``|K̂_σ(ω)| = σ²ω² exp(−σ²ω²/2)``: zero at DC, a
    single ring-shaped maximum (band-pass), and
    ``d/d(ω²) [ω² exp(−σ²ω²/2)] = 0`` at ``ω² = 2/σ²``, i.e. the peak radial
    frequency is ``f* = √2 / (2πσ)`` cycles/pixel (0.281, 0.141, 0.070 for
    σ = 0.8, 1.6, 3.2) with peak amplitude ``2/e``, whatever σ.

    returns (n, n) float64 array, the power at (v, u).
    """
    kernel = log_kernel(sigma, np.float64)
    k = kernel.shape[0]
    if n < k:
        raise ValueError(f"n = {n} is smaller than the {k}x{k} kernel of sigma = {sigma}")
    padded = np.zeros((n, n), dtype=np.float64)
    padded[:k, :k] = kernel
    spectrum = np.fft.fft2(padded)
    return np.fft.fftshift(np.abs(spectrum) ** 2)


def frequency_axis(n=256):
    """Frequencies (cycles/pixel) of the rows/columns of :func:`log_frequency_response`: (n,) float64."""
    return np.fft.fftshift(np.fft.fftfreq(n))


def plot_log_responses(sigmas, out_path, n=256, dpi=100):
    """Paper Fig. 3: one panel per σ, the power spectrum over (u, v) ∈ [−½, ½)² cycles/pixel.

    Brightness is the power ``|K̂_σ(u, v)|²`` (linear scale, black = 0, each
    panel with its own colour range). A dashed circle marks the predicted
    peak radius √2/(2πσ) (see :func:`log_frequency_response`).
    """
    sigmas = [float(s) for s in sigmas]
    freqs = frequency_axis(n)
    step = 1.0 / n
    extent = (freqs[0] - step / 2, freqs[-1] + step / 2, freqs[-1] + step / 2, freqs[0] - step / 2)
    fig = _new_figure(3.2 * len(sigmas), 3.8)
    for i, sigma in enumerate(sigmas):
        ax = fig.add_subplot(1, len(sigmas), i + 1)
        power = log_frequency_response(sigma, n)
        ax.imshow(power, cmap="gray", extent=extent, interpolation="nearest")
        radius = np.sqrt(2.0) / (2.0 * np.pi * sigma)
        theta = np.linspace(0.0, 2.0 * np.pi, 200)
        ax.plot(radius * np.cos(theta), radius * np.sin(theta), "--", color="tab:orange", lw=0.8,
                label=f"√2/(2πσ) = {radius:.3f}")
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(0.5, -0.5)
        ax.set_title(f"σ = {sigma:g} ({log_kernel(sigma).shape[0]}×{log_kernel(sigma).shape[0]})")
        ax.set_xlabel("u (cycles/pixel)")
        if i == 0:
            ax.set_ylabel("v (cycles/pixel)")
        ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    fig.suptitle("LoG power spectra |K̂σ(u, v)|² (Fig. 3)")
    fig.tight_layout()
    return _save(fig, out_path, dpi)


# ---------------------------------------------------------------------------
# Fig. 4: subband outputs of one image
# ---------------------------------------------------------------------------

def subband_outputs(image, sigmas):
    """Layer 6 applied to one image: (3, H, W) → (S, H, W) float64, S = len(sigmas).

    Uses :class:`sflnet.nn.fixed.LoGBank` on a float64 copy, so band c is the
    LoG of scale σ_c applied to the sum of the three colours.
    """
    x = _host_image(image)[None]             # (1, 3, H, W)
    return LoGBank(sigmas).forward(x)[0]


def subband_levels(bands, levels=SUBBAND_LEVELS):
    """The Fig. 4 display rule: square, then quantise to ``levels`` uniform grey levels in [0, 255].

    For each band separately (bands: (S, H, W) array):

    1. ``p = out²`` (the squared LoG output, ≥ 0);
    2. ``t = p / max(p)`` over that band (0 … 1; an all-zero band stays 0);
    3. level ``q = min(floor(levels · t), levels − 1)`` ∈ {0, …, levels − 1}, i.e. ``levels``
       bins of equal width on [0, max];
    4. grey value ``round(q · 255 / (levels − 1))``: levels 0 … 9 map to 0, 28, 57, …, 255.

    returns (S, H, W) uint8.
    """
    bands = np.asarray(to_host(bands), dtype=np.float64)
    power = bands * bands
    peak = power.max(axis=(-2, -1), keepdims=True)
    scaled = np.divide(power, peak, out=np.zeros_like(power), where=peak > 0)
    q = np.minimum(np.floor(levels * scaled), levels - 1)
    return np.round(q * 255.0 / (levels - 1)).astype(np.uint8)


def plot_subbands(image, sigmas, out_path, dpi=100):
    """Paper Fig. 4: the image and its LoG-bank outputs, squared and quantised to 10 levels.

    image: (3, H, W) in [−1, 1]. See :func:`subband_levels` for the exact rule
    (square, divide by the band's maximum, 10 equal-width levels mapped to
    0 … 255; bright = strong response).
    """
    sigmas = [float(s) for s in sigmas]
    img = _host_image(image)
    levels = subband_levels(subband_outputs(img, sigmas))
    h, w = img.shape[1:]
    panels = 1 + len(sigmas)
    panel_w = 2.6
    fig = _new_figure(panel_w * panels, panel_w * h / w + 0.6)
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(image_to_uint8(img), interpolation="nearest")
    ax.set_title("image", fontsize=9)
    ax.axis("off")
    for i, sigma in enumerate(sigmas):
        ax = fig.add_subplot(1, panels, i + 2)
        ax.imshow(levels[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"σ = {sigma:g}: out², 10 levels", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out_path, dpi)


# ---------------------------------------------------------------------------
# Fig. 5: learning curves
# ---------------------------------------------------------------------------

def _plot_subband_panel(ax, rows, sigmas, title):
    epochs = _column(rows, "epoch")
    for sigma in sigmas:
        ax.plot(epochs, _positive(_column(rows, _sigma_key(sigma))), lw=1.0,
                label=f"SFL σ = {float(sigma):g} (w = 1)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("subband SFL (unit weight)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def plot_curves(history_rows, sigmas, out_path, title=None, dpi=100):
    """Learning curves of one run, in the style of paper Fig. 5.

    history_rows: list of dicts with keys ``epoch, E, E_PL, E_SFL, sfl_<σ:g>, seconds``
    (floats, or strings as read from the history CSV), one per epoch.
    Left panel: E_PL and E_SFL (with the training's subband weights w_SFL, as
    logged); right panel: the unit-weight subband SFLs. Both log-y.
    A run whose history leaves the paper's columns ``nan`` (a VAE not trained with ``pl`` or
    ``sfl``, see :mod:`sflnet.training.history`) shows its own terms instead: left, every
    measured ``E_<TERM>`` column (unit weight); right, the trained objective E.
    """
    rows = list(history_rows)
    if not rows:
        raise ValueError("plot_curves needs at least one history row")
    epochs = _column(rows, "epoch")
    fig = _new_figure(10, 4)
    left = fig.add_subplot(1, 2, 1)
    if _measured(rows, "E_PL") or _measured(rows, "E_SFL"):
        left.plot(epochs, _positive(_column(rows, "E_PL")), lw=1.0, label="E_PL")
        left.plot(epochs, _positive(_column(rows, "E_SFL")), lw=1.0, label="E_SFL (weighted by w_SFL)")
        left.set_title("pixel loss and weighted SFL", fontsize=10)
    else:
        for key in rows[0]:
            if key.startswith("E_") and _measured(rows, key):
                left.plot(epochs, _positive(_column(rows, key)), lw=1.0, label=key)
        left.set_title("the objective's terms (unit weight)", fontsize=10)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    right = fig.add_subplot(1, 2, 2)
    if any(_measured(rows, _sigma_key(sigma)) for sigma in sigmas):
        _plot_subband_panel(right, rows, sigmas, "subband SFLs")
    else:
        right.plot(epochs, _positive(_column(rows, "E")), lw=1.0, label="E (trained)")
        right.set_yscale("log")
        right.set_xlabel("epoch")
        right.set_ylabel("E")
        right.set_title("trained objective", fontsize=10)
        right.legend(fontsize=8)
        right.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out_path, dpi)


def plot_fig5(pl_rows, sfl_rows, sigmas, sfl_weights, out_path, dpi=100):
    """Paper Fig. 5, four panels, log-y.

    (a) E_PL of the PL run; (b) its unit-weight subband SFLs (measured, not
    trained on); (c) E_PL and the unit-weight E_SFL (the sum of the unit-weight
    subband SFLs, as the paper draws it with W_SFL(c) = 1) of the SFL run;
    (d) its unit-weight subband SFLs. ``sfl_weights`` are the weights the SFL
    run was trained with; they appear in the titles only.
    """
    pl_rows, sfl_rows = list(pl_rows), list(sfl_rows)
    if not pl_rows or not sfl_rows:
        raise ValueError("plot_fig5 needs history rows for both runs")
    weights = ", ".join(f"{float(w):g}" for w in sfl_weights)
    fig = _new_figure(10, 7.5)

    ax = fig.add_subplot(2, 2, 1)
    ax.plot(_column(pl_rows, "epoch"), _positive(_column(pl_rows, "E_PL")), lw=1.0, label="E_PL")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("E_PL")
    ax.set_title("(a) learning with E_PL", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)

    _plot_subband_panel(fig.add_subplot(2, 2, 2), pl_rows, sigmas,
                        "(b) subband SFLs in (a) (not backpropagated)")

    ax = fig.add_subplot(2, 2, 3)
    epochs = _column(sfl_rows, "epoch")
    unit_sfl = sum(_column(sfl_rows, _sigma_key(s)) for s in sigmas)
    ax.plot(epochs, _positive(_column(sfl_rows, "E_PL")), lw=1.0, label="E_PL")
    ax.plot(epochs, _positive(unit_sfl), lw=1.0, label="E_SFL drawn with W_SFL(c) = 1")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"(c) learning with E_PL + E_SFL, w_SFL = ({weights})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)

    _plot_subband_panel(fig.add_subplot(2, 2, 4), sfl_rows, sigmas, "(d) subband SFLs in (c)")
    fig.tight_layout()
    return _save(fig, out_path, dpi)


# ---------------------------------------------------------------------------
# Fig. 6 / 7: reconstructions with close-ups
# ---------------------------------------------------------------------------

def closeup_box(shape, closeup=None):
    """Pixel box (y0, x0, h, w) of a close-up inside an image of ``shape`` (…, H, W).

    closeup: (y0, x0, h, w) as fractions of H and W, or None for
    :data:`CENTRAL_CLOSEUP`. The box is rounded to whole pixels, at least 1 × 1
    and clipped to the image.
    """
    fy0, fx0, fh, fw = CENTRAL_CLOSEUP if closeup is None else closeup
    big_h, big_w = shape[-2:]
    h = max(1, min(big_h, int(round(fh * big_h))))
    w = max(1, min(big_w, int(round(fw * big_w))))
    y0 = min(max(0, int(round(fy0 * big_h))), big_h - h)
    x0 = min(max(0, int(round(fx0 * big_w))), big_w - w)
    return y0, x0, h, w


def plot_reconstruction_grid(originals, rows, out_path, closeup=None, dpi=100):
    """Paper Fig. 6/7: originals on top, then one row per reconstruction set, with close-ups.

    originals: list of (3, H_i, W_i) images in [−1, 1].
    rows: list of ``(label, images)`` where ``images`` is a list of
    (3, H_i, W_i) reconstructions in the order of ``originals``
    (e.g. ``("SFL epoch 100", [...])``).
    closeup: (y0, x0, h, w) fraction box, None for the central 30 % box, or
    False for no close-ups. With close-ups, every image gets a second column
    showing the box enlarged (nearest neighbour); the box is outlined on the
    full image.
    """
    originals = [_host_image(im) for im in originals]
    table = [("original", originals)]
    for label, images in rows:
        images = [_host_image(im) for im in images]
        if len(images) != len(originals):
            raise ValueError(f"row {label!r} has {len(images)} images for {len(originals)} originals")
        for o, r in zip(originals, images):
            if o.shape != r.shape:
                raise ValueError(f"row {label!r}: image of shape {r.shape} for an original of shape {o.shape}")
        table.append((label, images))
    with_closeup = closeup is not False
    per_image = 2 if with_closeup else 1
    n_cols = per_image * len(originals)
    n_rows = len(table)
    aspect = max(o.shape[1] / o.shape[2] for o in originals)   # tallest H/W
    cell = 1.6
    fig = _new_figure(cell * n_cols + 0.4, cell * aspect * n_rows + 0.2)
    for r, (label, images) in enumerate(table):
        for i, im in enumerate(images):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + per_image * i + 1)
            ax.imshow(image_to_uint8(im), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
            if not with_closeup:
                continue
            y0, x0, h, w = closeup_box(im.shape, None if closeup is None else closeup)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor="yellow", lw=0.8))
            ax_zoom = fig.add_subplot(n_rows, n_cols, r * n_cols + per_image * i + 2)
            ax_zoom.imshow(image_to_uint8(im[:, y0:y0 + h, x0:x0 + w]), interpolation="nearest")
            ax_zoom.set_xticks([])
            ax_zoom.set_yticks([])
            if r == 0:
                ax_zoom.set_title("close-up", fontsize=7)
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.2)
    return _save(fig, out_path, dpi)


# ---------------------------------------------------------------------------
# A run's overview: its snapshot reconstructions, read back from disk
# ---------------------------------------------------------------------------

def _read_png(path):
    """An 8-bit PNG as a uint8 array (H, W, 3) for imshow (grey pictures are repeated to RGB)."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def _pngs(folder):
    return sorted(name for name in os.listdir(folder) if name.lower().endswith(".png"))


def plot_overview(run_dir, out_path=None, dpi=100):
    """One figure of a run's snapshots: ``RUN_DIR/overview.png`` by default.

    Reads ``snapshots/original/*.png`` (top row) and ``snapshots/epoch_NNNN/*.png``
    (one row per snapshot epoch, labelled, the files matched to the originals by name)
    from disk. The rightmost column shows the central quarter of the row's first image
    enlarged (nearest neighbour). A snapshot folder missing some files gets blank cells.
    Raises ValueError when there is no ``snapshots/original`` folder with PNGs.
    """
    folder = RunFolder(run_dir)
    originals_dir = folder.originals_dir
    names = _pngs(originals_dir) if os.path.isdir(originals_dir) else []
    if not names:
        raise ValueError(f"{originals_dir} holds no PNG snapshots")
    table = [("original", originals_dir)] + [(f"epoch {epoch}", path) for epoch, path in folder.snapshot_epochs()]
    first = _read_png(os.path.join(originals_dir, names[0]))
    aspect = first.shape[0] / first.shape[1]
    n_rows, n_cols = len(table), len(names) + 1
    cell = 1.4
    fig = _new_figure(cell * n_cols + 0.4, cell * aspect * n_rows + 0.3)
    for r, (label, row_dir) in enumerate(table):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            name = names[0] if c == len(names) else names[c]
            path = os.path.join(row_dir, name)
            if not os.path.isfile(path):
                continue
            picture = _read_png(path)
            if c == len(names):   # close-up: the central quarter (half height, half width) of the first image
                height, width = picture.shape[:2]
                y0, x0 = height // 4, width // 4
                picture = picture[y0:y0 + max(1, height // 2), x0:x0 + max(1, width // 2)]
                if r == 0:
                    ax.set_title("close-up", fontsize=7)
            ax.imshow(picture, interpolation="nearest")
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.2)
    return _save(fig, folder.overview if out_path is None else out_path, dpi)

"""The benchmark harness (sflnet.bench, ``sflnet bench``) on tiny data, and the PyTorch reference.

The harness is smoke-tested for its structure (every variant timed, every
breakdown key present, memory figures filled) and checked for transparency:
its instrumentation and its "cae" epoch must compute what training computes.
The PyTorch reference (only where torch is installed) must give our E and
gradients in float64, which validates it as a baseline.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from sflnet import bench
from sflnet.models.cae import PARAM_NAMES, Autoencoder, init_params
from sflnet.optim import MomentumSGD
from sflnet.training.step import train_step


def tiny_images(dtype=np.float64, seed=0):
    """Five images in [-0.9, 0.9] of three sizes, odd and even (not all zeros)."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 9, 11), (3, 8, 8), (3, 9, 11), (3, 7, 10), (3, 8, 8)]
    return [rng.uniform(-0.9, 0.9, size=s).astype(dtype) for s in shapes]


def test_conv_flops_counted_by_hand():
    """A 4×6 image (bottleneck 2×3), multiply-adds written out layer by layer:
    forward conv2 32·3·9·24 = 20736, conv3 16·32·9·6 = 27648, conv4 32·16·9·24 = 110592,
    conv5 3·32·9·24 = 20736 (sum 179712); backward ∂w: 179712 again; ∂x: all but conv2,
    179712 − 20736 = 158976. Total 518400 multiply-adds = 1036800 flops. A 5×5 image has a
    3×3 bottleneck (ceil), and images add up."""
    assert bench.conv_flops([(4, 6)]) == 1036800
    five = 2 * (2 * (32 * 3 * 9 * 25 + 16 * 32 * 9 * 9 + 32 * 16 * 9 * 25 + 3 * 32 * 9 * 25)
                + (16 * 32 * 9 * 9 + 32 * 16 * 9 * 25 + 3 * 32 * 9 * 25))
    assert bench.conv_flops([(5, 5), (4, 6)]) == five + 1036800
    # the figure for Willow70 at 300 px in docs/speed.md: 43200 flops per pixel when H and W are even
    assert bench.conv_flops([(300, 226)]) == 43200 * 300 * 226


def test_group_by_shape_keeps_every_image_once():
    images = tiny_images()
    groups = bench.group_by_shape(images, np, np.float32)
    assert [g.shape for g in groups] == [(1, 3, 7, 10), (2, 3, 8, 8), (2, 3, 9, 11)]
    assert all(g.dtype == np.float32 for g in groups)
    np.testing.assert_array_equal(groups[2][1], images[2].astype(np.float32))


def test_run_benchmark_structure():
    result = bench.run_benchmark(tiny_images(np.float32), np, dtype=np.float32, repeat=2, warmup=0)
    assert set(result["median"]) == {"sflnet epoch", "sflnet cae"}
    assert result["conv_gflop"] == bench.conv_flops(im.shape[1:] for im in tiny_images()) / 1e9
    assert result["gflops"]["sflnet epoch"] == result["conv_gflop"] / result["median"]["sflnet epoch"]
    assert all(len(ts) == 2 and all(t > 0 for t in ts) for ts in result["times"].values())
    assert set(bench.BREAKDOWN_KEYS) | {"epoch"} == set(result["breakdown"])
    timed_parts = sum(result["breakdown"][k] for k in bench.BREAKDOWN_KEYS if k != "other")
    assert 0 < timed_parts <= result["breakdown"]["epoch"] * 1.0001
    assert result["breakdown"]["conv4"] > 0 and result["breakdown"]["LoG loss"] > 0
    assert result["images"] == 5 and result["pixels"] == 2 * 99 + 2 * 64 + 70
    assert result["numpy_peak_bytes"] > 0 and result["max_rss_bytes"] >= result["train_rss_bytes"] > 2**20
    assert "ratios" not in result
    json.dumps(result)   # JSON-ready
    report = bench.format_report(result)
    for key in bench.BREAKDOWN_KEYS:
        assert key in report


def test_breakdown_instrumentation_is_transparent():
    """An instrumented model trains exactly like a plain one (same parameters after two steps)."""
    groups = bench.group_by_shape(tiny_images(), np, np.float64)
    params = init_params(seed=3, dtype=np.float64)
    plain, plain_opt = bench.make_model(params, "pl+sfl", 10**6)
    timed, timed_opt = bench.make_model(params, "pl+sfl", 10**6)
    bench.layer_breakdown(timed, timed_opt, groups, np, epochs=1)   # one warm-up + one timed step
    for _ in range(2):
        train_step(plain, plain_opt, groups)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(timed.params[name], plain.params[name])
    # and the originals were copied, not trained
    np.testing.assert_array_equal(params["w2"], init_params(seed=3, dtype=np.float64)["w2"])


@pytest.mark.parametrize("max_chunk_pixels", [1, 10**6])
def test_cae_epoch_is_a_pixel_loss_training_step(max_chunk_pixels):
    """The 'cae' timing runs the same step as training with loss='pl' (whose SFL is not backpropagated)."""
    groups = bench.group_by_shape(tiny_images(), np, np.float64)
    params = init_params(seed=1, dtype=np.float64)
    cae, cae_opt = bench.make_model(params, "pl", max_chunk_pixels)
    e_pl = bench.cae_epoch(cae, cae_opt, groups)
    ref = Autoencoder({n: p.copy() for n, p in params.items()}, loss="pl")
    result = train_step(ref, MomentumSGD(0.02, 0.5), groups)
    assert e_pl == pytest.approx(result.E_PL, rel=1e-12)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(cae.params[name], ref.params[name], rtol=0, atol=1e-14)


def test_torch_ratios_against_each_layout_and_the_best():
    median = {"sflnet epoch": 1.0, "sflnet cae": 0.6,
              "torch nchw epoch": 2.0, "torch nchw cae": 0.5,
              "torch channels_last epoch": 1.25, "torch channels_last cae": 0.4}
    ratios = bench.torch_ratios(median)
    assert ratios["epoch vs nchw"] == pytest.approx(0.5)
    assert ratios["epoch vs best"] == pytest.approx(0.8)
    assert ratios["epoch best layout"] == "channels_last"
    assert ratios["cae vs best"] == pytest.approx(1.5)


def _write_pngs(folder):
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(12, 16), (12, 16), (16, 10)]):
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_cli_bench_json(tmp_path):
    from sflnet_cli.main import cli  # noqa: PLC0415

    _write_pngs(tmp_path)
    out = CliRunner().invoke(cli, ["bench", "--data", str(tmp_path), "--size", "16", "--device", "cpu",
                                   "--repeat", "1", "--warmup", "0", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["images"] == 3 and result["sizes"] == {"12x16": 2, "16x10": 1}
    assert result["median"]["sflnet epoch"] > 0


@pytest.mark.skipif(bench.torch_available(), reason="torch is installed: the missing-torch error cannot happen")
def test_cli_compare_torch_without_torch_is_one_line_error(tmp_path, capsys):
    from sflnet_cli.main import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--device", "cpu", "--compare-torch"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --compare-torch needs PyTorch")


# ---------------------------------------------------------------------------
# The PyTorch reference (skipped where torch is not installed)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["pl+sfl", "pl"])
def test_torch_reference_matches_sflnet_float64(loss):
    """E, E_PL, E_SFL and every gradient of the PyTorch reference (literal 27×27 LoG conv, autograd)
    equal sflnet's (separable LoG, hand-written backward), on two sizes of float64 images."""
    pytest.importorskip("torch")
    from sflnet.bench.torch_reference import TorchReference  # noqa: PLC0415

    images = tiny_images()
    params = init_params(seed=2, std=0.3, dtype=np.float64)   # large weights: far from linear
    ours = Autoencoder({n: p.copy() for n, p in params.items()}, loss=loss).loss_and_grads(images)
    groups = bench.group_by_shape(images, np, np.float64)
    e, e_pl, e_sfl, grads = TorchReference(params, loss=loss).loss_and_grads(groups)
    assert e == pytest.approx(ours.E, rel=1e-12)
    assert e_pl == pytest.approx(ours.E_PL, rel=1e-12)
    assert e_sfl == pytest.approx(ours.E_SFL, rel=1e-12)
    for name in PARAM_NAMES:
        scale = np.abs(ours.grads[name]).max()
        np.testing.assert_allclose(grads[name], ours.grads[name], rtol=0, atol=1e-11 * scale, err_msg=name)


def test_torch_child_times_every_variant():
    pytest.importorskip("torch")
    groups = bench.group_by_shape(tiny_images(np.float32), np, np.float32)
    child = bench.TorchChild(groups, init_params(seed=0), np, "pl+sfl", warmup=0)
    try:
        first, second = child.time_round(), child.time_round()
    finally:
        child.close()
    names = {f"torch {layout} {kind}" for layout in ("nchw", "channels_last") for kind in ("epoch", "cae")}
    assert set(first) == set(second) == names
    assert all(t > 0 for t in first.values())
    assert child.info["version"]


# ---------------------------------------------------------------------------
# Fast forms against the literal Eq. 2 (float64)
# ---------------------------------------------------------------------------

def literal_im2col(x, k, stride, pad):
    """cols[(c,dy,dx), (n,y,x)] = x_pad[n, c, y·s + dy, x·s + dx], element by element (the definition)."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((c, k, k, n, ho, wo))
    for ci in range(c):
        for dy in range(k):
            for dx in range(k):
                for y in range(ho):
                    for xx in range(wo):
                        cols[ci, dy, dx, :, y, xx] = x_pad[:, ci, y * stride + dy, xx * stride + dx]
    return cols.reshape(c * k * k, n * ho * wo)


def literal_conv2d(x, w, b, stride):
    """Eq. 2 with scipy.signal.correlate per (image, output channel, input channel), subsampled for stride 2."""
    from scipy.signal import correlate  # noqa: PLC0415

    n, c_in = x.shape[:2]
    out = np.stack([np.stack([sum(correlate(x[i, ci], w[co, ci], mode="same") for ci in range(c_in)) + b[co]
                              for co in range(w.shape[0])]) for i in range(n)])
    return out[:, :, ::stride, ::stride]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(5, 6), (7, 7), (4, 9)])
def test_im2col_without_padding_copy_equals_definition(stride, hw):
    x = np.random.default_rng(4).standard_normal((2, 3) + hw)
    from sflnet.ops.im2col import im2col  # noqa: PLC0415

    np.testing.assert_array_equal(im2col(x, 3, 3, stride, 1), literal_im2col(x, 3, stride, 1))
    # channel-major input (the layout the layers produce) gives the same columns
    x_cn = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(im2col(x_cn, 3, 3, stride, 1), literal_im2col(x, 3, stride, 1))


@pytest.mark.parametrize("c_in, c_out, hw", [(32, 3, (9, 8)), (5, 2, (6, 7)), (3, 4, (1, 5))])
def test_conv_output_unfold_equals_eq2(c_in, c_out, hw):
    """unfold="output" (GEMM first, then summing shifted planes) is Eq. 2: forward vs SciPy, and its
    gradients equal those of the textbook unfold="input" path, which other tests check by finite differences."""
    from sflnet.nn import Conv2D  # noqa: PLC0415

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, c_in) + hw)
    w = rng.standard_normal((c_out, c_in, 3, 3))
    b = rng.standard_normal(c_out)
    fast, plain = Conv2D(w, b, 1, unfold="output"), Conv2D(w, b, 1, unfold="input")
    out = fast.forward(x)
    np.testing.assert_allclose(out, literal_conv2d(x, w, b, 1), rtol=0, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dout_before = dout.copy()
    dx = fast.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)   # upstream gradient untouched
    plain.forward(x)
    np.testing.assert_allclose(dx, plain.backward(dout), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.grads["w"], plain.grads["w"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.grads["b"], plain.grads["b"], rtol=0, atol=1e-12)
    # directional finite difference on w, independent of the other path
    r = rng.standard_normal(w.shape)
    eps = 1e-6

    def energy(weights):
        return float(np.sum(Conv2D(weights, b, 1, unfold="output").forward(x) * dout))

    numeric = (energy(w + eps * r) - energy(w - eps * r)) / (2 * eps)
    assert numeric == pytest.approx(float(np.sum(fast.grads["w"] * r)), rel=1e-7)


def test_conv_output_unfold_needs_stride_1():
    from sflnet.nn import Conv2D  # noqa: PLC0415

    with pytest.raises(ValueError, match="stride 1"):
        Conv2D(np.zeros((3, 4, 3, 3)), np.zeros(3), stride=2, unfold="output")


def literal_upsample_axis(x, axis, out_len):
    """Bilinear x2 along ``axis`` by the per-output formula with clamped neighbours (a plain loop)."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    out = np.empty((2 * n,) + x.shape[1:])
    for i in range(n):
        out[2 * i] = 0.75 * x[i] + 0.25 * x[max(i - 1, 0)]
        out[2 * i + 1] = 0.75 * x[i] + 0.25 * x[min(i + 1, n - 1)]
    return np.moveaxis(out[:out_len], 0, axis)


@pytest.mark.parametrize("n", [1, 2, 5, 6])
@pytest.mark.parametrize("crop", [0, 1])
@pytest.mark.parametrize("axis", [2, 3])
def test_upsample_axis_and_adjoint_equal_definition(n, crop, axis):
    from sflnet.ops import resample  # noqa: PLC0415

    rng = np.random.default_rng(n + 10 * crop + axis)
    shape = [2, 3, 4, 5]
    shape[axis] = n
    x = rng.standard_normal(shape)
    out_len = 2 * n - crop
    out = resample.upsample2x_axis(x, axis, out_len)
    np.testing.assert_allclose(out, literal_upsample_axis(x, axis, out_len), rtol=0, atol=1e-15)
    g = rng.standard_normal(out.shape)
    back = resample.upsample2x_axis_adjoint(g, axis, n)
    assert back.shape == x.shape
    assert abs(np.sum(out * g) - np.sum(x * back)) <= 1e-12 * np.sum(np.abs(out * g))   # <Ux, g> = <x, Uᵀg>


@pytest.fixture
def threaded_kernels(monkeypatch):
    """Force the NumPy kernels onto 3 threads even for tiny arrays; restore afterwards."""
    from sflnet.ops import threads  # noqa: PLC0415

    before = threads.get_num_threads()
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 0)
    threads.set_num_threads(3)
    yield threads
    threads.set_num_threads(before)


@pytest.mark.parametrize("setting, expected", [("1", 1), ("3", 3), (" 2 ", 2), ("0", None), ("two", None), ("", None)])
def test_kernel_threads_follow_omp_num_threads(setting, expected):
    """A fresh process takes its kernel threads from OMP_NUM_THREADS when that is a positive integer, else
    from the usable CPUs (so two processes started with OMP_NUM_THREADS=1 do not each spread over every core)."""
    code = "from sflnet.ops import threads; print(threads.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": setting})
    assert done.returncode == 0, done.stderr
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert int(done.stdout) == (cpus if expected is None else expected)


def test_threaded_kernels_give_identical_results(threaded_kernels):
    """Splitting the kernels over threads writes disjoint parts: results are bit-identical to one thread."""
    from sflnet.ops.filters import correlate_separable  # noqa: PLC0415
    from sflnet.ops.im2col import col2im, im2col  # noqa: PLC0415
    from sflnet.ops.resample import upsample2x_axis, upsample2x_axis_adjoint  # noqa: PLC0415

    threads = threaded_kernels
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 9, 8))
    a, b = rng.standard_normal(7), rng.standard_normal(7)
    threaded = [im2col(x, 3, 3, 2, 1), col2im(im2col(x, 3, 3, 1, 1), x.shape, 3, 3, 1, 1),
                upsample2x_axis(x, 3, 15), upsample2x_axis_adjoint(x, 2, 5),
                correlate_separable(x[:, 0], a, b)]
    threads.set_num_threads(1)
    single = [im2col(x, 3, 3, 2, 1), col2im(im2col(x, 3, 3, 1, 1), x.shape, 3, 3, 1, 1),
              upsample2x_axis(x, 3, 15), upsample2x_axis_adjoint(x, 2, 5),
              correlate_separable(x[:, 0], a, b)]
    for t, s in zip(threaded, single):
        np.testing.assert_array_equal(t, s)


def test_threaded_training_step_equals_single_thread(threaded_kernels):
    threads = threaded_kernels
    images = tiny_images()
    params = init_params(seed=4, std=0.3, dtype=np.float64)
    threaded = Autoencoder({n: p.copy() for n, p in params.items()}).loss_and_grads(images)
    threads.set_num_threads(1)
    single = Autoencoder({n: p.copy() for n, p in params.items()}).loss_and_grads(images)
    assert threaded.E == single.E
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(threaded.grads[name], single.grads[name])


@pytest.mark.parametrize("stride, unfold", [(1, "input"), (2, "input"), (1, "output")])
def test_conv_scratch_buffers_are_never_visible(stride, unfold):
    """Reused scratch matrices: outputs of earlier calls stay intact, a smaller input after a larger one
    gives fresh-layer results, and backward can be repeated."""
    from sflnet.nn import Conv2D  # noqa: PLC0415

    rng = np.random.default_rng(8)
    w, b = rng.standard_normal((4, 6, 3, 3)), rng.standard_normal(4)
    big, small = rng.standard_normal((2, 6, 11, 9)), rng.standard_normal((1, 6, 7, 8))
    layer = Conv2D(w, b, stride, unfold=unfold)
    out_big = layer.forward(big)
    kept = out_big.copy()
    dx_big = layer.backward(np.ones_like(out_big))
    kept_dx = dx_big.copy()
    out_small = layer.forward(small)
    np.testing.assert_array_equal(out_big, kept)
    np.testing.assert_array_equal(dx_big, kept_dx)
    fresh = Conv2D(w, b, stride, unfold=unfold)
    np.testing.assert_array_equal(out_small, fresh.forward(small))
    dout = rng.standard_normal(out_small.shape)
    first = layer.backward(dout)
    again = layer.backward(dout)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, fresh.backward(dout))
    np.testing.assert_array_equal(layer.grads["w"], fresh.grads["w"])


def test_chunked_gradient_equals_one_pass_with_reused_scratch():
    """Chunks of one image (scratch buffers re-sliced for every size) give the one-pass gradient."""
    images = tiny_images() + tiny_images(seed=1)
    params = init_params(seed=6, std=0.3, dtype=np.float64)
    one_pass = Autoencoder({n: p.copy() for n, p in params.items()}, max_chunk_pixels=10**9).loss_and_grads(images)
    chunked = Autoencoder({n: p.copy() for n, p in params.items()}, max_chunk_pixels=1).loss_and_grads(images)
    assert chunked.E == pytest.approx(one_pass.E, rel=1e-13)
    for name in PARAM_NAMES:
        scale = np.abs(one_pass.grads[name]).max()
        np.testing.assert_allclose(chunked.grads[name], one_pass.grads[name], rtol=0, atol=1e-12 * scale)

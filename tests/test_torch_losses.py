"""sflnet.torch: sflnet's losses as PyTorch losses, on sflnet's own forward and backward.

Checked here: gradcheck in float64, equality with sflnet's losses called directly, the authors'
focal-frequency-loss package and pytorch-msssim, half precision, grayscale and odd sizes, the
CuPy path (under the strict CuPy double), a small training loop, and the ValueErrors.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sflnet.torch as st  # noqa: E402
from sflnet.losses import LOSSES, LossSettings, make_objective  # noqa: E402
from sflnet.losses.ssim import gaussian_taps  # noqa: E402


def pair(shape, dtype=torch.float64, seed=0, low=-1.0, high=1.0):
    """pred (requires grad) and target, uniform in [low, high): (N, C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    pred = (low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)).to(dtype)
    target = (low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)).to(dtype)
    return pred.requires_grad_(True), target


def sflnet_direct(expression, pred, target, value_range=(-1.0, 1.0)):
    """(value, ∂value/∂pred) of sflnet's own objective on NumPy arrays, one group of N images."""
    channels = pred.shape[1]
    settings = LossSettings(pl_weights=(1.0,) * channels, value_range=value_range)
    objective = make_objective(expression, settings, always=())
    recon, goal = pred.detach().numpy(), target.detach().numpy()
    shares = objective.forward(recon, goal, recon.shape[0])
    value = objective.combine({name: float(share) for name, (share, _) in shares.items()})
    return value, objective.backward()


def test_import_torch_inside_sflnet_torch_is_pytorch_itself():
    assert st.torch is sys.modules["torch"] and st.torch is torch
    assert hasattr(st.torch, "autograd") and "sflnet" not in st.torch.__file__


# ---------------------------------------------------------------------------
# gradcheck in float64
# ---------------------------------------------------------------------------

SMOOTH = [
    (st.PixelLoss(), (2, 3, 6, 7)),
    (st.SpatialFrequencyLoss(), (2, 3, 9, 8)),
    (st.SpatialFrequencyLoss(sigmas=(0.8, 2.0), weights=(1.0, 3.0)), (1, 1, 7, 9)),
    (st.SSIMLoss(), (1, 2, 13, 12)),
    (st.STFTLoss(window=6, stride=3), (1, 2, 9, 12)),
    (st.STFTLoss(window=6, stride=2, window_fn="rect", phase_weight=0.5), (1, 1, 8, 9)),
    (st.Objective("pl+0.5*sfl+2*ssim(  )"), (2, 3, 12, 11)),
]


@pytest.mark.parametrize("loss_fn, shape", SMOOTH, ids=lambda v: getattr(v, "expression", str(v)))
def test_gradcheck_of_every_smooth_loss(loss_fn, shape):
    """Random images keep stft away from its kinks (|A_o − A_i| = 0, ΔP = 0 or π off the real bins)."""
    pred, target = pair(shape, seed=3)
    assert torch.autograd.gradcheck(lambda p: loss_fn(p, target), (pred,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_of_the_focal_frequency_loss_with_its_weights_held_constant():
    """fft's weight matrix is a constant (detached, as in the authors' package); with it given as
    ``matrix=`` (computed once at the base point) the loss is a quadratic and gradcheck holds. A
    finite difference of the plain forward would see the weights move too (3/2 of the gradient on
    every bin but the maximum; see :class:`sflnet.losses.FocalFrequencyLoss`)."""
    from sflnet.losses.fft import focal_weights
    pred, target = pair((2, 3, 7, 6), seed=4)
    matrix = torch.from_numpy(focal_weights(pred.detach().numpy(), target.numpy()))
    loss_fn = st.FocalFrequencyLoss()
    assert torch.autograd.gradcheck(lambda p: loss_fn(p, target, matrix), (pred,), eps=1e-6, atol=1e-8, rtol=1e-6)
    plain, given = loss_fn(pred, target), loss_fn(pred, target, matrix)
    assert plain.item() == given.item()


# ---------------------------------------------------------------------------
# equal to sflnet's own losses
# ---------------------------------------------------------------------------

EXPRESSIONS = ["pl", "1*sfl", "l1", "ssim", "fft", "stft(window=8)", "pl+sfl", "pl+100*fft",
               "500*ssim+0.5*stft(window=8,stride=2,window_fn=rect)+0*l1",
               "pl+3.5*sfl(sigmas=0.5:1:2,weights=1:2:3)"]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_value_and_gradient_equal_sflnets_own(expression):
    pred, target = pair((3, 3, 17, 14), seed=1)
    loss = st.Objective(expression)(pred, target)
    loss.backward()
    value, grad = sflnet_direct(expression, pred, target)
    assert loss.dtype == torch.float64 and loss.shape == ()
    assert abs(loss.item() - value) <= 1e-15 * max(1.0, abs(value))
    np.testing.assert_array_equal(pred.grad.numpy(), grad)


@pytest.mark.parametrize("channels", [1, 3])
def test_pl_plus_sfl_equals_the_same_loss_written_in_plain_torch(channels):
    """Eq. 4 + Eq. 6 with torch's autograd: the literal LoG bank (one conv2d, zero 'same' padding) of
    :func:`sflnet.ops.filters.log_bank_weights`, each kernel on every one of the C channels."""
    from sflnet.losses.base import PAPER_SFL_WEIGHTS
    from sflnet.ops.filters import PAPER_SIGMAS, log_bank_weights
    pred, target = pair((2, channels, 19, 24), seed=18)
    loss = st.Objective("pl+sfl")(pred, target)
    loss.backward()
    ours, pred.grad = pred.grad.clone(), None
    bank = torch.from_numpy(log_bank_weights(PAPER_SIGMAS)[:, :1].repeat(channels, axis=1))
    d = pred - target
    e_pl = (0.5 * (d * d).mean(dim=(2, 3))).sum() / 2
    bands = torch.nn.functional.conv2d(d, bank, padding=bank.shape[-1] // 2)
    e_sfl = (torch.tensor(PAPER_SFL_WEIGHTS, dtype=torch.float64) * 0.5 * (bands * bands).mean(dim=(2, 3))).sum() / 2
    plain = e_pl + e_sfl
    plain.backward()
    assert abs(loss.item() - plain.item()) <= 1e-12 * plain.item()
    assert (ours - pred.grad).abs().max().item() <= 1e-12 * pred.grad.abs().max().item()


def test_the_classes_build_their_one_term_expression():
    assert st.PixelLoss().expression == "pl"
    assert st.L1Loss().expression == "l1"
    assert st.SSIMLoss().expression == "ssim"
    assert st.FocalFrequencyLoss().expression == "fft"
    assert st.SpatialFrequencyLoss().expression == "1*sfl"
    assert st.SpatialFrequencyLoss(sigmas=(1, 2), weights=(3, 4)).expression == "1*sfl(sigmas=1:2,weights=3:4)"
    assert st.STFTLoss().expression == "stft"
    assert st.STFTLoss(window=8, stride=2, window_fn="rect", phase_weight=1).expression == \
        "stft(window=8,stride=2,window_fn=rect,phase_weight=1)"


def test_sum_reduction_is_n_times_the_mean():
    pred, target = pair((4, 3, 12, 12), seed=2)
    mean = st.Objective("pl+sfl+ssim")(pred, target)
    mean.backward()
    mean_grad = pred.grad.clone()
    pred.grad = None
    total = st.Objective("pl+sfl+ssim", reduction="sum")(pred, target)
    total.backward()
    assert total.item() == pytest.approx(4 * mean.item(), rel=1e-15)
    np.testing.assert_allclose(pred.grad.numpy(), 4 * mean_grad.numpy(), rtol=1e-15, atol=0)


def test_the_target_is_a_constant_and_two_calls_before_backward_keep_their_own_gradients():
    pred, target = pair((2, 3, 12, 12), seed=5)
    target.requires_grad_(True)
    other = torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    loss_fn = st.Objective("pl+sfl")
    (loss_fn(pred, target) + 2 * loss_fn(pred, other)).backward()
    assert target.grad is None
    expected = sflnet_direct("pl+sfl", pred, target)[1] + 2 * sflnet_direct("pl+sfl", pred, other)[1]
    np.testing.assert_allclose(pred.grad.numpy(), expected, rtol=1e-14, atol=1e-16)


def test_a_plugin_loss_works_in_an_objective(tmp_path, monkeypatch):
    (tmp_path / "torch_test_plugin.py").write_text(
        "from sflnet.losses import Loss\n"
        "class Doubled(Loss):\n"
        "    def __init__(self, scale=2.0):\n"
        "        self.scale = scale\n"
        "    def forward(self, recon, target, batch_count):\n"
        "        self.d, self.n = recon - target, batch_count\n"
        "        return self.scale * (self.d * self.d).mean(axis=(1, 2, 3)).sum() / batch_count, {}\n"
        "    def backward(self):\n"
        "        return self.d * (2 * self.scale / (self.n * self.d[0].size))\n")
    info = tmp_path / "torch_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sflnet.losses]\ndoubled = torch_test_plugin:Doubled\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    LOSSES.forget_plugins()
    try:
        pred, target = pair((2, 1, 5, 4), seed=6)
        loss = st.Objective("pl+doubled(scale=3)")(pred, target)
        loss.backward()
        d = (pred - target).detach()
        assert loss.item() == pytest.approx(0.5 * (d * d).mean().item() + 3 * (d * d).mean().item(), rel=1e-14)
        np.testing.assert_allclose(pred.grad.numpy(), (d / d[0].numel() * (1 + 6) / 2).numpy(), rtol=1e-13)
    finally:
        LOSSES.forget_plugins()


# ---------------------------------------------------------------------------
# the references: the authors' focal-frequency-loss, pytorch-msssim
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3, 16, 16), (2, 1, 9, 14)])
def test_fft_equals_the_authors_focal_frequency_loss_package(shape):
    """Same number, no constant factor: the package's mean over (N, 1, C, H, W) of w|D|² is the mean
    over the batch of per-image means; its weights are detached, so the gradients agree too."""
    ffl = pytest.importorskip("focal_frequency_loss")
    pred, target = pair(shape, seed=7)
    ours = st.FocalFrequencyLoss()(pred, target)
    ours.backward()
    our_grad, pred.grad = pred.grad.clone(), None
    theirs = ffl.FocalFrequencyLoss()(pred, target)
    theirs.backward()
    assert abs(ours.item() - theirs.item()) <= 1e-12
    assert (our_grad - pred.grad).abs().max().item() <= 1e-12


def test_fft_with_a_given_matrix_equals_the_package_with_that_matrix():
    ffl = pytest.importorskip("focal_frequency_loss")
    pred, target = pair((2, 3, 8, 10), seed=8)
    matrix = torch.rand(2, 3, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = st.FocalFrequencyLoss()(pred, target, matrix)
    theirs = ffl.FocalFrequencyLoss()(pred, target, matrix=matrix[:, None])   # (N, patches=1, C, H, W)
    assert abs(ours.item() - theirs.item()) <= 1e-12


@pytest.mark.parametrize("value_range, shape", [((-1.0, 1.0), (3, 3, 20, 17)), ((0.0, 1.0), (2, 1, 11, 13))])
def test_ssim_equals_pytorch_msssim(value_range, shape):
    """pytorch-msssim's ssim has sflnet's definition (valid 11-tap Gaussian window, σ 1.5, K 0.01/0.03,
    population variances); given sflnet's float64 window it agrees to rounding, with its own float32
    window to ~1e-7. The images are shifted by −low first (SSIM is not shift-invariant)."""
    msssim = pytest.importorskip("pytorch_msssim")
    low, high = value_range
    pred, target = pair(shape, seed=9, low=low, high=high)
    ours = st.SSIMLoss(value_range)(pred, target)
    ours.backward()
    our_grad, pred.grad = pred.grad.clone(), None
    window = torch.from_numpy(gaussian_taps()).reshape(1, 1, 1, -1).repeat(shape[1], 1, 1, 1)
    theirs = 1 - msssim.ssim(pred - low, target - low, data_range=high - low, win=window)
    theirs.backward()
    assert abs(ours.item() - theirs.item()) <= 1e-13
    assert (our_grad - pred.grad).abs().max().item() <= 1e-13
    own_window = 1 - msssim.ssim(pred - low, target - low, data_range=high - low)
    assert abs(ours.item() - own_window.item()) <= 1e-6


# ---------------------------------------------------------------------------
# precision, channels, sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32_with_the_gradient_in_their_dtype(dtype):
    pred, target = pair((2, 3, 16, 16), dtype=dtype, seed=10)
    loss = st.Objective("pl+sfl+ssim")(pred, target)
    loss.backward()
    assert loss.dtype == torch.float32 and pred.grad.dtype == dtype
    exact = pred.detach().double().requires_grad_(True)   # the same (rounded) inputs in float64
    reference = st.Objective("pl+sfl+ssim")(exact, target.double())
    reference.backward()
    assert abs(loss.item() - reference.item()) <= 1e-5 * abs(reference.item())
    half_eps = torch.finfo(dtype).eps
    error = (pred.grad.double() - exact.grad).abs().max().item() / exact.grad.abs().max().item()
    assert error <= half_eps   # the float32 gradient rounded once to the input's dtype


def test_float32_is_computed_in_float32():
    pred, target = pair((2, 3, 12, 12), dtype=torch.float32, seed=11)
    loss = st.Objective("pl+sfl+fft+stft(window=8)")(pred, target)
    loss.backward()
    assert loss.dtype == torch.float32 and pred.grad.dtype == torch.float32


@pytest.mark.parametrize("channels, height, width", [(1, 17, 23), (1, 11, 11), (4, 13, 16), (2, 31, 12)])
def test_any_channel_count_and_odd_sizes(channels, height, width):
    expression = "pl+sfl+ssim+fft+stft(window=8,stride=3)"
    pred, target = pair((2, channels, height, width), seed=12)
    loss = st.Objective(expression)(pred, target)
    loss.backward()
    value, grad = sflnet_direct(expression, pred, target)
    assert abs(loss.item() - value) <= 1e-13 * abs(value)
    np.testing.assert_allclose(pred.grad.numpy(), grad, rtol=1e-13, atol=1e-18)


# ---------------------------------------------------------------------------
# the CuPy path, under the strict CuPy double
# ---------------------------------------------------------------------------

def test_the_array_core_runs_on_cupy_with_the_numpy_numbers_and_no_host_sync(strict_cupy):
    """The core :func:`measure`/:func:`gradient` that SflnetLossFunction runs on the CuPy arrays of CUDA
    tensors, on the strict double: the NumPy numbers, and not one device→host transfer or sync.
    (The DLPack hand-over and the ExternalStream need real CUDA tensors: the double models neither.)"""
    cupy = strict_cupy
    expression = "pl+sfl+ssim+fft+stft(window=8)+l1"
    rng = np.random.default_rng(13)
    recon, target = rng.uniform(-1, 1, (2, 1, 16, 13)), rng.uniform(-1, 1, (2, 1, 16, 13))
    settings = st.Objective(expression).settings(1)
    on_host = make_objective(expression, settings, always=())
    host_value = st.measure(on_host, recon, target)
    host_grad = st.gradient(on_host)
    on_device = make_objective(expression, settings, always=())
    device_recon, device_target = cupy.asarray(recon), cupy.asarray(target)
    cupy.strict_counters.reset()
    device_value = st.measure(on_device, device_recon, device_target)
    device_grad = st.gradient(on_device)
    assert cupy.strict_counters.syncs == 0, cupy.strict_counters.sync_report()
    assert isinstance(device_value, cupy.ndarray) and isinstance(device_grad, cupy.ndarray)
    assert abs(float(device_value) - float(host_value)) <= 1e-12 * abs(float(host_value))
    np.testing.assert_allclose(device_grad.get(), host_grad, rtol=1e-12, atol=1e-15)


def test_cpu_tensors_are_shared_with_numpy_not_copied():
    pred, _ = pair((1, 3, 4, 4), seed=14)
    with st.array_module(pred) as xp:
        array = st.to_array(xp, pred)
        assert xp is np and np.shares_memory(array, pred.detach().numpy())
        back = st.to_tensor(xp, array)
    assert back.data_ptr() == pred.data_ptr()


# ---------------------------------------------------------------------------
# a PyTorch training loop
# ---------------------------------------------------------------------------

def test_a_small_pytorch_training_loop_lowers_the_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Tanh()).double()
    images = pair((4, 3, 16, 16), seed=15)[1]
    loss_fn = st.Objective("pl+sfl")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(net(images), images)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------
# ValueErrors before any work
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)), "4-D"),
    (lambda: (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15)), "one shape"),
    (lambda: (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16, dtype=torch.float64)), "one dtype"),
    (lambda: (torch.zeros(1, 3, 16, 16, dtype=torch.int32), torch.zeros(1, 3, 16, 16, dtype=torch.int32)),
     "float16, bfloat16"),
    (lambda: (torch.zeros(0, 3, 16, 16), torch.zeros(0, 3, 16, 16)), "at least one"),
])
def test_bad_inputs_are_refused_with_a_value_error(make, match):
    pred, target = make()
    with pytest.raises(ValueError, match=match):
        st.Objective("pl+sfl")(pred, target)


@pytest.mark.parametrize("loss_fn, size, match", [
    (st.SSIMLoss(), (10, 16), "at least 11x11"),
    (st.Objective("pl+ssim"), (16, 10), "at least 11x11"),
    (st.STFTLoss(), (15, 40), "at least 16x16"),
    (st.STFTLoss(window=8), (8, 7), "at least 8x8"),
])
def test_images_too_small_are_refused_before_any_work(loss_fn, size, match, monkeypatch):
    def no_work(*args):
        raise AssertionError("the loss ran")
    monkeypatch.setattr(st, "measure", no_work)
    pred, target = pair((1, 3, *size), seed=16)
    with pytest.raises(ValueError, match=match):
        loss_fn(pred, target)


@pytest.mark.parametrize("build, match", [
    (lambda: st.Objective("pl+nosuch"), "unknown loss 'nosuch'"),
    (lambda: st.Objective("sfl"), "ambiguous"),
    (lambda: st.Objective("pl+stft(window=1)"), "window=1"),
    (lambda: st.Objective("pl", reduction="none"), "reduction"),
    (lambda: st.Objective("ssim", value_range=(1, 1)), "high > low"),
    (lambda: st.SpatialFrequencyLoss(sigmas=(1.0, 2.0), weights=(1.0,)), "one weight per sigma"),
    (lambda: st.SpatialFrequencyLoss(sigmas=(-1.0,), weights=(1.0,)), "> 0"),
    (lambda: st.STFTLoss(window_fn="hamming"), "hann, rect"),
    (lambda: st.STFTLoss(window=7.5), "whole numbers"),
])
def test_bad_expressions_and_options_are_refused_at_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_a_bad_fft_matrix_is_refused():
    pred, target = pair((1, 3, 8, 8), seed=17)
    with pytest.raises(ValueError, match="matrix must be a tensor of pred's shape"):
        st.FocalFrequencyLoss()(pred, target, torch.ones(1, 3, 8, 7, dtype=torch.float64))


def test_the_torch_example_trains_both_objectives_and_tables_the_subbands(tmp_path, capsys):
    """validation/torch_example.py end to end at a tiny scale: both runs, every column, finite, and
    the PL+SFL run's σ = 0.8 subband error below the PL run's (its own objective weights it 100×)."""
    import importlib.util  # noqa: PLC0415

    path = Path(__file__).resolve().parents[1] / "validation" / "torch_example.py"
    spec = importlib.util.spec_from_file_location("torch_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "table.json"
    assert example.main(["--steps", "40", "--size", "16", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert set(table["rows"]) == {"pl", "pl+sfl"}
    for row in table["rows"].values():
        assert all(np.isfinite(row[c]) and row[c] > 0 for c in ("E_PL", "sfl_0.8", "sfl_1.6", "sfl_3.2"))
    assert table["rows"]["pl+sfl"]["sfl_0.8"] < table["rows"]["pl"]["sfl_0.8"]
    assert "| pl+sfl / pl |" in capsys.readouterr().out

"""The array kernels under the layers and losses, one concern per module.

* :mod:`sflnet.ops.im2col`   — convolution geometry (``conv_output_size``, the taps of a
  strided kernel) and im2col/col2im, which turn Eq. 2 into one matrix product;
* :mod:`sflnet.ops.resample` — bilinear ×2 along one axis and its adjoint, and the 2×2
  phases of a ×2 grid (interleave/split, the sub-pixel form of layer 4);
* :mod:`sflnet.ops.filters`  — zero-padded separable correlation, and the LoG kernels of Eq. 5;
* :mod:`sflnet.ops.spectral` — orthonormal DFTs (full and half spectrum), framing and
  overlap-add, and the STFT with its adjoint;
* :mod:`sflnet.ops.threads`  — the CPU thread pool of the NumPy kernels
  (``set_num_threads``, ``parallel_ranges``) and ``elementwise``, a ufunc split over it.

Arrays are NCHW. Each kernel is written once for NumPy and CuPy
(``xp = get_array_module(x)``); together with :mod:`sflnet.backend`, these are the
only modules that branch on the backend, and only where a library routine differs
(``scipy.ndimage`` vs ``cupyx.scipy.ndimage``) or to spread NumPy work over the CPU
cores. Import the module you need, e.g. ``from sflnet.ops import resample``.
"""

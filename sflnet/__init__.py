"""sflnet: the Spatial Frequency Loss for convolutional autoencoders (Ichimura).

Layers with hand-written forward and backward passes (paper Eq. 2-9), one code
path for NumPy (CPU) and CuPy (GPU).
"""

import os as _os

__version__ = "0.1.0"

# NumPy's OpenBLAS keeps its idle worker threads spinning for about 0.1 s
# after every matrix product (2**28 cycles). sflnet's NumPy kernels run their
# own threads between the products (sflnet.ops.threads.parallel_ranges), and a
# spinning BLAS worker takes their core: on 2 cores an epoch was ~20 % slower.
# So idle BLAS workers go to sleep at once (2**4 cycles). This is only a
# default (an explicit OPENBLAS_THREAD_TIMEOUT wins), and it only takes effect
# when sflnet is imported before NumPy, as in the ``sflnet`` command.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from sflnet.errors import SflnetError  # noqa: E402,F401

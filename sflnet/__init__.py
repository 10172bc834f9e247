"""sflnet: the Spatial Frequency Loss for convolutional autoencoders (Ichimura).

Layers with hand-written forward and backward passes (paper Eq. 2-9), one code
path for NumPy (CPU) and CuPy (GPU).
"""

__version__ = "0.1.0"

from sflnet.errors import SflnetError  # noqa: E402,F401

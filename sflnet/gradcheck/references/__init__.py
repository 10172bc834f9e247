"""The only home of sflnet's naive textbook versions (slow, readable, float64 host NumPy/SciPy).

* :mod:`.layers` — convolution (loop and SciPy), transposed convolution, activations,
  bilinear ×2, the LoG kernel and bank, Linear, the reparameterisation;
* :mod:`.losses` — pl, sfl, l1, KL, the focal frequency loss, SSIM, the STFT loss;
* :mod:`.network` — the whole CAE, one image at a time.

The fast versions in :mod:`sflnet.nn` and :mod:`sflnet.losses` are tested against
these (``tests/test_reference.py`` and the layer and loss tests) and so are the forward
rows of ``sflnet gradcheck``. Nothing in training uses them.
"""

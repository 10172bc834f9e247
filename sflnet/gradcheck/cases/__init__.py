"""The subjects of the gradient checks, one module per family, each with a ``registry_entries()``.

* :mod:`.layers` — the CAE's layers and im2col;
* :mod:`.losses` — every loss of :data:`sflnet.losses.REGISTRY` (built-in special cases from
  :mod:`.ssim` and :mod:`.freq`, any other loss through ``make_loss``);
* :mod:`.network` — the whole CAE, one row per objective;
* :mod:`.vae` — the β-VAE's layers and the whole β-VAE.

A family's module holds its ``make_*_case`` factories ((rng, xp, dtype, size) →
:class:`~sflnet.gradcheck.engine.Case`), its ``forward_*`` and ``adjoint_*`` rows
((rng, xp) → :class:`~sflnet.gradcheck.engine.Measurement`) and its registry entries.
"""

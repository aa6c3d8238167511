"""enlighten-ray: EnlightenGAN (Jiang et al., IEEE TIP 2020) as production software."""

__version__ = "0.1.0"

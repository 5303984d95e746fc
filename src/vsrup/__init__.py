"""vsrup: video super-resolution with flow-guided latent diffusion."""

__version__ = "0.1.0"

"""Sampling: the written-out denoising loop (``loop``), scheduler choice (``schedulers``), and the
plug-ins that act inside it (tiles, motion guidance, latent propagation) in their own modules."""

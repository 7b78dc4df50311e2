"""Stable Diffusion written out: UNet, VAE, attention with exposed maps, CLIP text conditioning, DDIM.

This wing knows nothing of checkpoint files (see `loading`) or of pix2pix-zero (the package's top level).
"""

"""pix2pix_zero: zero-shot image-to-image translation (Parmar et al., arXiv:2302.03027) on a hand-written
Stable Diffusion. See README.md for the method and the module map."""

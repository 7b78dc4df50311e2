"""From files to models: Stable Diffusion checkpoints in the original single-file and diffusers layouts (SD 1.x
and 2.x), the safetensors reader with strict loading, finding or downloading weights, and seeded random
checkpoints in the real layouts for tests and benchmarks."""

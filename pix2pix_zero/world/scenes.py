"""Scenes with ground truth: one coloured shape on a patterned background, its caption, its mask.

`sample_scene(seed)` draws every factor from one seeded numpy Generator; `render(scene)` draws it (anti-aliased
by 4 x 4 supersampling) and returns the image, the object's mask (coverage >= 1/2) and the background alone, so
an edit can be measured against what the pixels really were. `caption(scene, seed)` phrases it in one of
several ways. Seeds below HELD_OUT are the training set; the benchmark and the tests only use seeds from
HELD_OUT on, which no model here has seen. Images are uint8 (H, W, 3), masks bool (H, W).
"""
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

SIZE = 128  # native side in pixels: 16 x 16 latents, so the noise pyramid has two levels (16, 8)
HELD_OUT = 1_000_000  # seeds >= this are never used for training
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {  # object colours: saturated, far from every background colour
    "red": (220, 30, 40), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (240, 210, 30),
    "purple": (140, 40, 180), "orange": (245, 130, 20), "white": (250, 250, 250), "black": (15, 15, 15)}
BACKGROUND_COLOURS = {  # muted, so the object always stands out
    "gray": (128, 128, 128), "beige": (215, 200, 165), "navy": (40, 50, 100), "teal": (50, 130, 130),
    "pink": (230, 170, 190), "brown": (120, 80, 50), "lavender": (180, 170, 220), "mint": (170, 220, 190)}
BACKGROUNDS = ("plain", "stripes", "checks", "gradient", "texture")
SUPERSAMPLE = 4
RADIUS = (0.13, 0.27)  # the object's circumradius is drawn from this range (fractions of the side) ...
CENTRE = (0.3, 0.7)  # ... and its centre's x and y from this one: the largest object stays 0.03 inside the frame


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str  # one of BACKGROUNDS
    bg_colours: tuple[str, str]  # two names from BACKGROUND_COLOURS (plain uses the first)
    cx: float  # object centre, fractions of the side (x right, y down)
    cy: float
    radius: float  # circumradius, fraction of the side
    rotation: float  # radians (no effect on a circle)
    pattern_period: float  # stripes and checks: period in fractions of the side; texture: its scale
    pattern_angle: float  # stripes and gradient direction, radians
    seed: int  # the draw that made it (the texture's noise too)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def size_word(self) -> str:
        return "small" if self.radius < 0.17 else "large" if self.radius > 0.23 else "medium"


def check_object_scale(object_scale: float) -> float:
    """The scale, or a ValueError when its largest objects could not stay inside the frame (or it is not > 0)."""
    if not (0 < object_scale and CENTRE[0] + RADIUS[1] * (object_scale - 1) < 0.5):
        raise ValueError(f"object_scale {object_scale} is outside (0, {1 + (0.5 - CENTRE[0]) / RADIUS[1]:.4g}): "
                         "larger objects would not fit inside the frame")
    return object_scale


def sample_scene(seed: int, shape: str | None = None, object_scale: float = 1.0) -> Scene:
    """Every factor from one numpy Generator seeded with `seed` (shape fixed if given, drawn anyway).
    `object_scale` multiplies the radius range and narrows the centre's by as much as the largest radius grows,
    so every object stays as far inside the frame; 1 is the world the shipped model was trained on. Another
    scale keeps every other factor of the seed."""
    grow = RADIUS[1] * (check_object_scale(object_scale) - 1)  # exactly 0 at scale 1: the numbers drawn before
    rng = np.random.default_rng(seed)
    drawn_shape = SHAPES[rng.integers(len(SHAPES))]
    bg = list(BACKGROUND_COLOURS)
    i, j = rng.choice(len(bg), size=2, replace=False)
    return Scene(
        shape=shape or drawn_shape, colour=list(COLOURS)[rng.integers(len(COLOURS))],
        background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))], bg_colours=(bg[i], bg[j]),
        cx=float(rng.uniform(CENTRE[0] + grow, CENTRE[1] - grow)),
        cy=float(rng.uniform(CENTRE[0] + grow, CENTRE[1] - grow)),
        radius=float(rng.uniform(RADIUS[0] * object_scale, RADIUS[1] * object_scale)),
        rotation=float(rng.uniform(0, 2 * math.pi)), pattern_period=float(rng.uniform(0.08, 0.2)),
        pattern_angle=float(rng.choice([0, math.pi / 2, math.pi / 4, -math.pi / 4])), seed=int(seed))


def with_shape(scene: Scene, shape: str) -> Scene:
    """The same scene with another shape: the ideal edit."""
    if shape not in SHAPES:
        raise ValueError(f"the world has no shape {shape!r}; its shapes are {', '.join(SHAPES)}")
    return replace(scene, shape=shape)


def polygon(scene: Scene) -> np.ndarray | None:
    """Vertices (K, 2) in fractions of the side, or None for the circle. Every shape has circumradius r."""
    r, a0 = scene.radius, scene.rotation
    if scene.shape == "circle":
        return None
    if scene.shape == "square":
        angles, radii = a0 + np.arange(4) * math.pi / 2, np.full(4, r)
    elif scene.shape == "triangle":
        angles, radii = a0 + np.arange(3) * 2 * math.pi / 3, np.full(3, r)
    elif scene.shape == "star":  # five points, inner radius 0.45 r
        angles, radii = a0 + np.arange(10) * math.pi / 5, np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(f"the world has no shape {scene.shape!r}; its shapes are {', '.join(SHAPES)}")
    return np.stack([scene.cx + radii * np.cos(angles), scene.cy + radii * np.sin(angles)], axis=1)


def shape_area(shape: str) -> float:
    """Area of `shape` over its circumradius squared: pi, 2, 3 sqrt(3) / 4, the star's 10-gon (the shoelace)."""
    vertices = polygon(replace(sample_scene(0, shape), cx=0.0, cy=0.0, radius=1.0))
    if vertices is None:
        return math.pi
    x, y = vertices.T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def inside(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points (x, y) (fractions of the side) lie in the object: the even-odd rule over the polygon's edges."""
    vertices = polygon(scene)
    if vertices is None:
        return (x - scene.cx) ** 2 + (y - scene.cy) ** 2 <= scene.radius ** 2
    result = np.zeros(x.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (y1 > y) != (y2 > y)
        x_cross = x1 + (y - y1) * (x2 - x1) / np.where(y2 == y1, 1e-12, y2 - y1)
        result ^= crosses & (x < x_cross)
    return result


def coverage(scene: Scene, size: int) -> np.ndarray:
    """Fraction of each pixel the object covers, (size, size) float32, from SUPERSAMPLE^2 samples a pixel
    (sampled only inside the object's bounding square; it covers nothing outside)."""
    s = SUPERSAMPLE
    result = np.zeros((size, size), dtype=np.float32)
    x0, y0 = (max(0, math.floor((c - scene.radius) * size) - 1) for c in (scene.cx, scene.cy))
    x1, y1 = (min(size, math.ceil((c + scene.radius) * size) + 1) for c in (scene.cx, scene.cy))
    if x1 <= x0 or y1 <= y0:
        return result
    xs = (np.arange(x0 * s, x1 * s) + 0.5) / (size * s)
    ys = (np.arange(y0 * s, y1 * s) + 0.5) / (size * s)
    y, x = np.meshgrid(ys, xs, indexing="ij")
    hits = inside(scene, x, y).reshape(y1 - y0, s, x1 - x0, s)
    result[y0:y1, x0:x1] = hits.mean(axis=(1, 3), dtype=np.float32)
    return result


def smooth_noise(seed: int, size: int, cells: int) -> np.ndarray:
    """A soft random field in [0, 1], (size, size): bilinear interpolation of a cells x cells grid of uniforms."""
    grid = np.random.default_rng([seed, 7]).uniform(size=(cells + 1, cells + 1))
    pos = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (size, cells + 1)
    field = rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]
    field = 3 * field ** 2 - 2 * field ** 3  # smoothstep: softer contrasts
    return ((field - field.min()) / max(np.ptp(field), 1e-6)).astype(np.float32)


def render_background(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The background alone, (size, size, 3) float32 in [0, 255]."""
    c1, c2 = (np.array(BACKGROUND_COLOURS[n], dtype=np.float32) for n in scene.bg_colours)
    centres = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    u = x * math.cos(scene.pattern_angle) + y * math.sin(scene.pattern_angle)  # coordinate across the pattern
    if scene.background == "plain":
        t = np.zeros_like(x)
    elif scene.background == "stripes":
        t = (np.floor(u / (scene.pattern_period / 2)) % 2).astype(np.float32)
    elif scene.background == "checks":
        period = scene.pattern_period
        t = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    elif scene.background == "gradient":
        t = (u - u.min()) / max(np.ptp(u), 1e-6)
    elif scene.background == "texture":
        t = smooth_noise(scene.seed, size, cells=max(2, round(1 / scene.pattern_period / 2)))
    else:
        raise ValueError(f"unknown background {scene.background!r}; the world's are {', '.join(BACKGROUNDS)}")
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def render(scene: Scene, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (size, size, 3), mask bool (size, size), background uint8): the object composited by its
    coverage; the mask is where it covers at least half a pixel."""
    cov = coverage(scene, size)[..., None]
    background = render_background(scene, size)
    image = background * (1 - cov) + np.array(COLOURS[scene.colour], dtype=np.float32) * cov
    to_uint8 = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return to_uint8(image), cov[..., 0] >= 0.5, to_uint8(background)


def background_phrase(scene: Scene) -> str:
    c1, c2 = scene.bg_colours
    return {"plain": f"a plain {c1} background", "stripes": f"{c1} and {c2} stripes",
            "checks": f"{c1} and {c2} checks", "gradient": f"a {c1} to {c2} gradient",
            "texture": f"a soft {c1} and {c2} texture"}[scene.background]


# {obj}: "red circle"; {a}: its article; {size}: small/medium/large; {bg}: the background phrase
PHRASINGS = (
    "{a} {obj} on {bg}", "a photo of {a} {obj}", "a photo of {a} {size} {obj}", "{a} {size} {obj} on {bg}",
    "a picture of {a} {obj} on {bg}", "{a} {obj}", "a drawing of {a} {obj} in front of {bg}",
    "an image of {a} {size} {obj}", "{a} {obj} in the middle of {bg}", "a {shape} that is {colour}, on {bg}",
)


def caption(scene: Scene, seed: int | None = None, phrasing: int | None = None) -> str:
    """One phrasing of the scene (drawn with `seed`, or number `phrasing`; default the first, the fullest)."""
    if phrasing is None:
        phrasing = 0 if seed is None else int(np.random.default_rng([seed, 11]).integers(len(PHRASINGS)))
    obj = f"{scene.colour} {scene.shape}"
    article = "an" if obj[0] in "aeiou" else "a"
    size_word = scene.size_word
    article_size = "an" if size_word[0] in "aeiou" else "a"
    text = PHRASINGS[phrasing]
    a = article_size if "{a} {size}" in text else article
    return text.format(a=a, obj=obj, size=size_word, bg=background_phrase(scene), shape=scene.shape,
                       colour=scene.colour)


def shape_sentences(shape: str) -> list[str]:
    """Many sentences about `shape` in the world's own phrasings (every colour, size and background kind):
    the world's stand-in for a language model's sentences when building an edit direction."""
    if shape not in SHAPES:
        raise ValueError(f"the world has no shape {shape!r}; its shapes are {', '.join(SHAPES)}")
    sentences = []
    for k, colour in enumerate(COLOURS):
        for p in range(len(PHRASINGS)):
            scene = sample_scene(HELD_OUT - 1 - 10 * k - p, shape)  # a fixed draw of sizes and backgrounds
            sentences.append(caption(replace(scene, colour=colour), phrasing=p))
    return sentences


def main(argv: list[str] | None = None) -> int:
    """python -m pix2pix_zero.world.scenes OUT.png [--seed S] [--shape circle]: a scene as a PNG, with its
    truth (factors, caption) in OUT.json and its mask in OUT-mask.png."""
    import argparse
    import json
    from pathlib import Path

    from PIL import Image

    from ..tools.files import atomic_path
    p = argparse.ArgumentParser(prog="python -m pix2pix_zero.world.scenes", description=main.__doc__.split("\n")[0])
    p.add_argument("out", help="a .png path")
    p.add_argument("--seed", type=int, default=HELD_OUT, help=f"held-out scenes start at {HELD_OUT}")
    p.add_argument("--shape", choices=SHAPES, help="force the shape (the other factors come from the seed)")
    p.add_argument("--size", type=int, default=SIZE)
    a = p.parse_args(argv)
    scene = sample_scene(a.seed, a.shape)
    image, mask, _ = render(scene, a.size)
    out = Path(a.out)
    for array, path in ((image, out), (mask.astype(np.uint8) * 255, out.with_name(out.stem + "-mask.png"))):
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"scene": scene.to_dict(), "caption": caption(scene)}, indent=2) + "\n")
    print(f"{out}: {caption(scene)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

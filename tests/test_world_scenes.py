"""Tests for pix2pix_zero.world.scenes: the generator's masks match its pixels and its geometry, scenes are
seeded, the held-out seeds are disjoint from training, captions name what the image shows."""
import dataclasses
import math

import numpy as np
import pytest

from pix2pix_zero.world import scenes


def analytic_area(scene: scenes.Scene) -> float:
    """The object's area in fractions of the frame: pi r^2 for the circle, the shoelace formula for polygons."""
    vertices = scenes.polygon(scene)
    if vertices is None:
        return math.pi * scene.radius ** 2
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@pytest.mark.parametrize("seed", range(scenes.HELD_OUT, scenes.HELD_OUT + 12))
def test_mask_matches_pixels(seed):
    """Inside the mask the pixel is at least half object colour, outside at most half: each pixel is nearer
    the object's colour than the background's exactly where the mask says."""
    scene = scenes.sample_scene(seed)
    image, mask, background = scenes.render(scene)
    obj = np.array(scenes.COLOURS[scene.colour], dtype=np.float64)
    to_obj = np.linalg.norm(image - obj, axis=-1)
    to_bg = np.linalg.norm(image.astype(np.float64) - background, axis=-1)
    differs = np.linalg.norm(obj - background, axis=-1) > 30  # where the two colours can be told apart
    assert (to_obj[mask & differs] <= to_bg[mask & differs] + 2).all()
    assert (to_obj[~mask & differs] >= to_bg[~mask & differs] - 2).all()
    assert mask.any() and not mask.all()


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_mask_area_and_centroid_match_the_geometry(shape):
    """The rasterised mask has the analytic area (pi r^2, shoelace) and its centroid is the shape's centre
    (every shape is symmetric about its centre, the star and triangle by rotation)."""
    scene = scenes.sample_scene(scenes.HELD_OUT + 3, shape=shape)
    size = 256
    _, mask, _ = scenes.render(scene, size)
    assert mask.sum() / size ** 2 == pytest.approx(analytic_area(scene), rel=0.02)
    ys, xs = np.nonzero(mask)
    assert (xs.mean() + 0.5) / size == pytest.approx(scene.cx, abs=1.0 / size)
    assert (ys.mean() + 0.5) / size == pytest.approx(scene.cy, abs=1.0 / size)


def test_scenes_are_seeded_and_varied():
    assert scenes.sample_scene(7) == scenes.sample_scene(7)
    drawn = [scenes.sample_scene(s) for s in range(400)]
    assert {d.shape for d in drawn} == set(scenes.SHAPES)
    assert {d.colour for d in drawn} == set(scenes.COLOURS)
    assert {d.background for d in drawn} == set(scenes.BACKGROUNDS)
    assert len(scenes.COLOURS) >= 6 and len(scenes.BACKGROUNDS) >= 4 and len(scenes.SHAPES) >= 4
    image, _, _ = scenes.render(drawn[0])
    assert image.shape == (scenes.SIZE, scenes.SIZE, 3) and scenes.SIZE // 8 >= 16


@pytest.mark.parametrize("object_scale", [0.5, 1.4, 1.74])
def test_object_scale_keeps_the_draw_and_the_frame(object_scale):
    """Another object scale keeps every factor of the seed, multiplies the radius by the scale, and moves the
    centre towards the middle by the ratio of the narrowed range (0.2 - grow) / 0.2, grow = 0.27 (scale - 1), so the
    largest object stays 0.03 inside the frame; scale 1 draws exactly the literal ranges it always drew."""
    for seed in range(scenes.HELD_OUT, scenes.HELD_OUT + 50):
        base, scaled = scenes.sample_scene(seed), scenes.sample_scene(seed, object_scale=object_scale)
        rng = np.random.default_rng(seed)  # the draws of sample_scene, in order, up to the radius
        rng.integers(4), rng.choice(8, size=2, replace=False), rng.integers(8), rng.integers(5)
        assert (base.cx, base.cy, base.radius) == (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7),
                                                   rng.uniform(0.13, 0.27))
        assert scaled.radius == pytest.approx(object_scale * base.radius, rel=1e-12)
        squeeze = (0.2 - 0.27 * (object_scale - 1)) / 0.2
        for c, c0 in ((scaled.cx, base.cx), (scaled.cy, base.cy)):
            assert c - 0.5 == pytest.approx(squeeze * (c0 - 0.5), abs=1e-12)
            assert 0.03 - 1e-12 <= c - scaled.radius and c + scaled.radius <= 0.97 + 1e-12
        assert scaled == dataclasses.replace(base, cx=scaled.cx, cy=scaled.cy, radius=scaled.radius)
    _, mask, _ = scenes.render(scaled)
    assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    with pytest.raises(ValueError, match="larger objects would not fit inside the frame"):
        scenes.sample_scene(0, object_scale=1 + 0.2 / 0.27)  # every centre would be 0.5: no range left


def test_with_shape_changes_only_the_shape():
    scene = scenes.sample_scene(scenes.HELD_OUT, shape="circle")
    square = scenes.with_shape(scene, "square")
    assert square.shape == "square" and scene.shape == "circle"
    assert {k: v for k, v in square.to_dict().items() if k != "shape"} == \
        {k: v for k, v in scene.to_dict().items() if k != "shape"}
    _, _, bg_a = scenes.render(scene)
    _, _, bg_b = scenes.render(square)
    assert (bg_a == bg_b).all()
    with pytest.raises(ValueError, match="no shape 'hexagon'"):
        scenes.with_shape(scene, "hexagon")


def test_captions_name_shape_colour_and_background():
    for seed in range(scenes.HELD_OUT, scenes.HELD_OUT + 30):
        scene = scenes.sample_scene(seed)
        full = scenes.caption(scene)
        assert scene.shape in full and scene.colour in full and scene.bg_colours[0] in full
        for p in range(len(scenes.PHRASINGS)):
            text = scenes.caption(scene, phrasing=p)
            assert scene.shape in text and scene.colour in text
    assert len({scenes.caption(scenes.sample_scene(0), seed=s) for s in range(40)}) > 5


def test_shape_sentences_differ_only_in_the_shape():
    circles, squares = scenes.shape_sentences("circle"), scenes.shape_sentences("square")
    assert len(circles) == len(squares) >= 50
    assert [s.replace("circle", "square") for s in circles] == squares


def test_shape_area_by_hand():
    """Area over circumradius^2: a circle pi, a square (diagonal 2r) 2, an equilateral triangle 3 sqrt(3) / 4, the
    five-pointed star (inner radius 0.45 r) ten triangles of sides r and 0.45 r at 36 degrees."""
    assert scenes.shape_area("circle") == pytest.approx(math.pi)
    assert scenes.shape_area("square") == pytest.approx(2.0)
    assert scenes.shape_area("triangle") == pytest.approx(3 * math.sqrt(3) / 4)
    assert scenes.shape_area("star") == pytest.approx(10 * 0.5 * 0.45 * math.sin(math.pi / 5))


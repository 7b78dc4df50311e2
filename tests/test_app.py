"""The web app (`train_free_edit.py app`) on the world's baby SD: through its API with gradio_client, and in a real
browser (Playwright driving the system's headless Chromium: `apt-get install chromium`; a missing browser fails
the run). The app runs in a process of its own, as a user starts it, on a free port of 127.0.0.1."""
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.world import WORLD_DIR, classifier, scenes
from pix2pix_zero.world.measure import measure_edit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCENE = ROOT / "examples" / "world" / "red-circle.png"  # one the shipped baby SD edits into a square (examples/)
TRUTH = json.loads(SCENE.with_suffix(".json").read_text())
STEPS = 20  # the edit's steps: enough for the baby SD to change the shape, quick on 2 cores


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, process) of an app started on the baby SD; stopped after the module's tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path_factory.mktemp("app-cache")
    process = subprocess.Popen([sys.executable, str(ROOT / "train_free_edit.py"), "app", "--port", str(port),
                                "--cache-dir", str(cache)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=cache)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the app did not start:\n{process.stdout.read()[-3000:]}")
            time.sleep(1)
    yield url, process
    process.terminate()
    process.wait(timeout=30)


def judged(image: Image.Image) -> dict:
    """The world's measures of an edit of the shipped circle scene into a square."""
    scene = scenes.Scene(**{k: tuple(v) if isinstance(v, list) else v for k, v in TRUTH["scene"].items()})
    x = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
    return measure_edit(scene, "square", x, None, classifier.load(WORLD_DIR / classifier.FILE))


def api_inputs(**changes) -> list:
    """The /edit endpoint's inputs in the page's order: image, example, prompt, caption, source, targets, cached
    direction, sentence source, pasted sentences, embedding file, then one per EditConfig field."""
    import dataclasses

    from gradio_client import handle_file

    from pix2pix_zero.config import EditConfig
    config = [changes.get(f.name, "(the setting's)" if f.default is None else f.default)
              for f in dataclasses.fields(EditConfig)]
    return [handle_file(str(SCENE)), "", "", TRUTH["caption"], "circle", "square", "", "templates", "", None, *config]


@pytest.mark.slow
def test_api_edits_and_reuses_the_inversion(app):
    """Two edits of one image through gradio_client: the second re-runs only the edit (the inversion is kept),
    so it is faster; each returns input | reconstruction | edit, and the edit is the target shape."""
    from gradio_client import Client
    url, _ = app
    client = Client(url, verbose=False)
    start = time.perf_counter()
    gallery, status, *_ = client.predict(*api_inputs(num_steps=STEPS), api_name="/edit")
    first = time.perf_counter() - start
    assert "inversion + edit" in status and len(gallery) == 3
    start = time.perf_counter()
    gallery, status, *_ = client.predict(*api_inputs(num_steps=STEPS, lambda_xa=0.05), api_name="/edit")
    second = time.perf_counter() - start
    assert "inversion reused" in status
    assert second < first, (first, second)
    edit = Image.open(gallery[2]["image"])
    source = Image.open(gallery[0]["image"])
    assert np.abs(np.asarray(edit, np.float32) - np.asarray(source, np.float32)).mean() > 2
    print(f"app: first edit {first:.1f} s (inversion + edit), second {second:.1f} s (edit only)")


@pytest.mark.slow
def test_in_a_real_browser(app, tmp_path):
    """Upload the scene, edit it through the page, read the shown edit back and judge it; move the attention
    slider; upload a file that is no image and read the message; the page keeps serving. Screenshots in tmp."""
    from playwright.sync_api import sync_playwright
    assert Path(CHROMIUM).is_file(), "the browser tests need Debian's chromium package: apt-get install chromium"
    url, process = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(url)
        page.get_by_text("image (PNG, JPEG, WebP, ...)").wait_for()
        page.locator("input[type=file]").first.set_input_files(str(SCENE))
        page.get_by_label("caption c").fill(TRUTH["caption"])
        page.get_by_role("button", name="Edit", exact=True).click()
        page.get_by_text("inversion + edit").wait_for(timeout=300_000)
        page.screenshot(path=str(tmp_path / "edited.png"), full_page=True)
        images = page.locator("img[src*='file=']")
        sources = [images.nth(i).get_attribute("src") for i in range(images.count())]
        shown = [Image.open(io.BytesIO(page.request.get(src).body())) for src in sources]
        edit = shown[2]
        assert np.abs(np.asarray(edit.convert("RGB"), np.float32) -
                      np.asarray(Image.open(SCENE).convert("RGB"), np.float32)).mean() > 2
        # what the page shows is what the app computed: the downloadable edit PNG, pixel for pixel
        links = page.locator("a[href*='circle2square.png']")
        downloaded = Image.open(io.BytesIO(page.request.get(links.first.get_attribute("href")).body()))
        assert np.array_equal(np.asarray(downloaded.convert("RGB")), np.asarray(edit.convert("RGB")))
        # judged as world-bench judges edits: the shape classifier calls it a square (the shipped baby SD does so
        # for this scene at the defaults, for about three held-out circles in ten: docs/world.md)
        measures = judged(edit)
        assert measures["predicted"] == "square", measures
        print(f"app edit of the circle scene: classified {measures['predicted']}, background PSNR "
              f"{measures['psnr_bg']:.1f} dB")

        heat = page.get_by_label("cross-attention of the source word", exact=False)
        before = page.locator("img[src*='file=']").last.get_attribute("src")
        slider_number = page.locator("input[type=number]").last
        slider_number.fill("0")
        slider_number.press("Enter")
        page.wait_for_function(f"() => [...document.querySelectorAll(\"img[src*='file=']\")].pop().src "
                               f"!= {json.dumps(page.evaluate('(s) => new URL(s, location.href).href', before))}",
                               timeout=30_000)
        assert heat is not None
        page.screenshot(path=str(tmp_path / "step0.png"), full_page=True)

        bad = tmp_path / "notes.png"
        bad.write_text("these are notes, not pixels")
        page.goto(url)  # a new visit: the image upload is empty again
        page.get_by_text("image (PNG, JPEG, WebP, ...)").wait_for()
        page.locator("input[type=file]").first.set_input_files(str(bad))
        page.get_by_label("caption c").fill(TRUTH["caption"])
        page.get_by_role("button", name="Edit", exact=True).click()
        page.get_by_text("not an image Pillow can read", exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "bad-upload.png"), full_page=True)
        browser.close()
    assert process.poll() is None  # still serving
    urllib.request.urlopen(url, timeout=10)

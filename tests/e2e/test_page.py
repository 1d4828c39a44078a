"""The web page at GET / in a real headless Chromium against real uvicorn processes.

Chromium comes from Debian (/usr/bin/chromium), driven by Playwright's Python package through
``executable_path``; Playwright's own browser download is never used. Layer names, labels and
the model name are read from GET /v1/models, never hard-coded.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@dataclass
class Service:
    """The running service and the cross-origin site it allows."""

    url: str
    sites: dict[str, Any]


CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
TIMEOUT_MS = 20_000


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages that fail the test on any uncaught script error."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, service_factory: Any, site_factory: Any
) -> Iterator[Service]:
    """The plain service; it also allows the one cross-origin site the CORS test uses."""
    site = site_factory(tmp_path_factory.mktemp("allowed-site"))
    with site, service_factory({"CONVSCOPE_CORS_ORIGINS": site.origin}) as svc:
        yield Service(svc.url, {"allowed": site})


@pytest.fixture(scope="module")
def models(service: Service) -> dict[str, Any]:
    listing: dict[str, Any] = httpx.get(f"{service.url}/v1/models", timeout=10).json()
    return listing


@pytest.fixture(scope="module")
def model(models: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in models["models"] if m["name"] == models["default"])


@pytest.fixture(scope="module")
def picture(
    tmp_path_factory: pytest.TempPathFactory, fashion_mnist: tuple[np.ndarray, np.ndarray]
) -> Path:
    """A real Fashion-MNIST test picture written as PNG."""
    path = tmp_path_factory.mktemp("pictures") / "fashion-0.png"
    Image.fromarray(fashion_mnist[0][0]).save(path)
    return path


def api_top_label(url: str, model: str, path: Path, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(
        f"{url}/v1/models/{model}/classify",
        files={"file": (path.name, path.read_bytes(), "image/png")},
        headers=headers or {},
        timeout=30,
    )
    response.raise_for_status()
    label: str = response.json()["results"][0]["predictions"][0]["label"]
    return label


def open_page(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_function("!document.getElementById('model').disabled")


def upload(page: Any, path: Path | dict[str, Any]) -> None:
    page.set_input_files("#file", path)


def wait_for_results(page: Any) -> list[str]:
    page.wait_for_selector("#results:not([hidden]) #predictions li")
    labels: list[str] = page.locator("#predictions .bar-label").all_inner_texts()
    return labels


def wait_for_error(page: Any) -> str:
    page.wait_for_selector("#error:not([hidden])")
    text: str = page.inner_text("#error")
    return text


# ---- the page ---------------------------------------------------------------------------------


def test_page_shows_the_model(new_page: Callable[..., Any], service: Service, model: dict) -> None:
    page = new_page()
    open_page(page, service.url)
    assert page.title().startswith("convscope")
    info = page.inner_text("#model-info")
    assert model["version"] in info
    accuracy = model["metrics"]["test_accuracy"]
    assert f"{100 * accuracy:.1f} %" in info
    page.click("#model-labels summary")
    assert page.locator("#label-list li").all_inner_texts() == model["labels"]


def test_upload_shows_the_api_top_label_and_what_the_network_saw(
    new_page: Callable[..., Any], service: Service, model: dict, picture: Path
) -> None:
    expected = api_top_label(service.url, model["name"], picture)
    page = new_page(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, service.url)
    upload(page, picture)
    labels = wait_for_results(page)
    assert labels[0] == expected
    assert len(labels) == int(page.input_value("#top-k"))
    values = page.locator("#predictions .bar-value").all_inner_texts()
    assert all(re.fullmatch(r"\d+\.\d %", v) for v in values), values
    # The preprocessed input (28x28 for Fashion-MNIST), the original and the heat map all load.
    for selector in ("#original", "#network-input", "#cam"):
        page.wait_for_function(f"document.querySelector('{selector}').naturalWidth > 0")
    size = page.evaluate(
        "[document.querySelector('#network-input').naturalWidth,"
        " document.querySelector('#network-input').naturalHeight]"
    )
    assert size == [model["input"]["width"], model["input"]["height"]]
    assert "Top label: " + expected in page.inner_text("#status")
    # Everything comes from the service itself: no CDN, so the page works offline.
    foreign = [u for u in requested if not u.startswith((service.url, "data:", "blob:"))]
    assert foreign == [], foreign
    assert any(u.endswith("/app.js") for u in requested)


def test_feature_maps_load_for_every_layer_in_order(
    new_page: Callable[..., Any], service: Service, model: dict, picture: Path
) -> None:
    page = new_page(viewport={"width": 1280, "height": 900})
    open_page(page, service.url)
    upload(page, picture)
    wait_for_results(page)
    page.wait_for_selector("#maps figure.layer")
    shown = page.eval_on_selector_all("#maps figure.layer", "fs => fs.map(f => f.dataset.layer)")
    assert shown == [layer["name"] for layer in model["layers"]]
    for layer in model["layers"]:
        img = f"#maps figure[data-layer='{layer['name']}'] img"
        page.wait_for_function(f'document.querySelector("{img}").naturalWidth > 0')
        caption = page.inner_text(f"#maps figure[data-layer='{layer['name']}'] figcaption")
        shape = f"{layer['channels']}×{layer['height']}×{layer['width']}"
        assert layer["kind"] in caption and shape in caption, caption
        assert f"stride {layer['stride']}" in caption and f"padding {layer['padding']}" in caption
        tiles = page.locator(f"#maps figure[data-layer='{layer['name']}'] button.tile")
        tiles.first.wait_for()
        assert tiles.count() == layer["channels"]
        # Shown tiles are large enough to see and to tap, and each sits on exactly one tile.
        box = tiles.first.bounding_box()
        assert box is not None and box["width"] >= 40, box
        straddling = page.evaluate(TILES_ON_GUTTERS, layer["name"])
        assert straddling == [], f"{layer['name']}: buttons over the gutters: {straddling}"

    # Keyboard: one tab stop per layer, arrows move between tiles, Enter enlarges the focused
    # one; in the dialog arrows step through channels; Escape closes it.
    first = model["layers"][0]
    tiles = page.locator(f"#maps figure[data-layer='{first['name']}'] button.tile")
    assert tiles.evaluate_all("bs => bs.filter(b => b.tabIndex === 0).length") == 1
    tiles.first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')").startswith(
        f"{first['name']} channel 2 of"
    )
    page.keyboard.press("Enter")
    dialog = page.locator("#tile-dialog")
    dialog.wait_for(state="visible")
    assert page.inner_text("#tile-title") == f"{first['name']}, channel 2 of {first['channels']}"
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#tile-title") == f"{first['name']}, channel 3 of {first['channels']}"
    # The enlarged channel is the grid's tile, cropped without smoothing: not a blank canvas
    # unless the tile itself is blank.
    same = page.evaluate(TILE_MATCHES_GRID, first["name"])
    assert same, "the enlarged channel does not match its tile in the grid"
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    save_screenshot(page, "page.png")


# Channels whose button covers a whole row or column of the grid's gutter colour (the pixel just
# right of the first tile): a button that is not exactly over its tile.
TILES_ON_GUTTERS = """(layer) => {
  const fig = document.querySelector(`#maps figure[data-layer='${layer}']`);
  const img = fig.querySelector('img');
  const W = img.naturalWidth, H = img.naturalHeight;
  const c = document.createElement('canvas');
  c.width = W; c.height = H;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, W, H).data;
  const tiles = [...fig.querySelectorAll('button.tile')];
  const size = Math.round(parseFloat(tiles[0].style.width) / 100 * W);
  if (tiles.length < 2 || size >= W) return [];
  const at = (x, y) => px.slice(4 * (y * W + x), 4 * (y * W + x) + 3).join();
  const gutter = at(size, 0);
  const bad = [];
  tiles.forEach((button, i) => {
    const x0 = Math.round(parseFloat(button.style.left) / 100 * W);
    const y0 = Math.round(parseFloat(button.style.top) / 100 * H);
    let line = false;
    for (let d = 0; d < size && !line; d++) {
      let col = true, row = true;
      for (let e = 0; e < size; e++) {
        col = col && at(x0 + d, y0 + e) === gutter;
        row = row && at(x0 + e, y0 + d) === gutter;
      }
      line = col || row;
    }
    if (line) bad.push(i);
  });
  return bad;
}"""


# Compares the dialog canvas (scaled back down) with the tile cut straight from the grid image.
TILE_MATCHES_GRID = """(layer) => {
  const fig = document.querySelector(`#maps figure[data-layer='${layer}']`);
  const img = fig.querySelector('img');
  const title = document.getElementById('tile-title').textContent;
  const channel = Number(title.match(/channel (\\d+)/)[1]) - 1;
  const button = fig.querySelectorAll('button.tile')[channel];
  const fx = parseFloat(button.style.left) / 100 * img.naturalWidth;
  const fy = parseFloat(button.style.top) / 100 * img.naturalHeight;
  const size = Math.round(parseFloat(button.style.width) / 100 * img.naturalWidth);
  const a = document.createElement('canvas');
  a.width = a.height = size;
  a.getContext('2d').drawImage(img, Math.round(fx), Math.round(fy), size, size, 0, 0, size, size);
  const b = document.createElement('canvas');
  b.width = b.height = size;
  const ctx = b.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(document.getElementById('tile-canvas'), 0, 0, size, size);
  const da = a.getContext('2d').getImageData(0, 0, size, size).data;
  const db = ctx.getImageData(0, 0, size, size).data;
  let diff = 0;
  for (let i = 0; i < da.length; i++) diff = Math.max(diff, Math.abs(da[i] - db[i]));
  return diff <= 8;
}"""


def test_drawing_on_the_canvas_classifies(
    new_page: Callable[..., Any], service: Service, model: dict
) -> None:
    page = new_page()
    open_page(page, service.url)
    page.click("#draw-classify")  # nothing drawn yet: the page says so instead of sending black
    assert "Draw something first" in wait_for_error(page)
    box = page.locator("#sketch").bounding_box()
    assert box is not None
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.3 * w, y + 0.25 * h)
    page.mouse.down()
    for fx, fy in [(0.7, 0.25), (0.7, 0.8), (0.3, 0.8), (0.3, 0.25)]:
        page.mouse.move(x + fx * w, y + fy * h, steps=8)
    page.mouse.up()
    lit = page.evaluate(
        """() => { const c = document.getElementById('sketch');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] > 128;
        return n / (d.length / 4); }"""
    )
    assert 0.05 < lit < 0.6, lit  # a white outline on black, not an empty or flooded canvas
    page.click("#draw-classify")
    labels = wait_for_results(page)
    assert len(labels) == int(page.input_value("#top-k"))
    assert set(labels) <= set(model["labels"])
    assert page.is_hidden("#error")


# A File built in the page from base64 PNG bytes, delivered the way a browser delivers a drop
# (dragover, then drop, with the file in a DataTransfer) or a paste (a ClipboardEvent).
DELIVER = """([how, png]) => {
  const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], "picture.png", { type: "image/png" }));
  if (how === "paste") {
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
    return;
  }
  const zone = document.getElementById("drop");
  for (const type of ["dragenter", "dragover", "drop"]) {
    const init = { dataTransfer: data, bubbles: true, cancelable: true };
    zone.dispatchEvent(new DragEvent(type, init));
  }
}"""


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_drop_and_paste_classify(
    new_page: Callable[..., Any], service: Service, model: dict, picture: Path, how: str
) -> None:
    page = new_page()
    open_page(page, service.url)
    page.evaluate(DELIVER, [how, base64.b64encode(picture.read_bytes()).decode()])
    labels = wait_for_results(page)
    assert labels[0] == api_top_label(service.url, model["name"], picture)
    assert not page.locator("#drop").evaluate("d => d.classList.contains('over')")


def test_camera_controls_hide_without_getusermedia(
    new_page: Callable[..., Any], service: Service
) -> None:
    page = new_page()
    open_page(page, service.url)
    assert page.is_visible("#camera-start")  # Chromium on localhost offers getUserMedia
    page = new_page()
    page.add_init_script("Object.defineProperty(navigator, 'mediaDevices', { value: undefined })")
    open_page(page, service.url)
    assert page.is_hidden("#camera-box")
    assert page.is_visible("label[for=file]")


def test_an_inverted_picture_is_said_to_be(
    new_page: Callable[..., Any], service: Service, picture: Path, tmp_path: Path
) -> None:
    light = tmp_path / "dark-on-light.png"
    Image.fromarray(255 - np.asarray(Image.open(picture))).save(light)  # like a product photo
    page = new_page()
    open_page(page, service.url)
    upload(page, light)
    wait_for_results(page)
    assert page.inner_text("#network-caption") == "Network input (inverted)"
    assert "Inverted: the picture has a light background" in page.inner_text("#prep-note")
    upload(page, picture)
    page.wait_for_function(
        "document.getElementById('network-caption').textContent === 'Network input'"
    )
    assert "Inverted" not in page.inner_text("#prep-note")


def test_non_picture_shows_an_error(new_page: Callable[..., Any], service: Service) -> None:
    page = new_page()
    open_page(page, service.url)
    upload(page, {"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text\n" * 20})
    message = wait_for_error(page)
    assert "not a picture" in message
    assert page.is_hidden("#results")


def test_changing_the_heat_map_label(
    new_page: Callable[..., Any], service: Service, model: dict, picture: Path
) -> None:
    page = new_page()
    open_page(page, service.url)
    upload(page, picture)
    top = wait_for_results(page)[0]
    assert f"“{top}”" in page.inner_text("#cam-caption")
    other = next(label for label in model["labels"] if label != top)
    page.select_option("#cam-label", other)
    page.wait_for_function(
        "(l) => document.getElementById('cam-caption').textContent.includes(`“${l}”`)", arg=other
    )
    assert page.get_attribute("#cam", "src").startswith("data:image/png;base64,")


def test_phone_width_has_no_sideways_scrolling(
    new_page: Callable[..., Any], service: Service, picture: Path
) -> None:
    page = new_page(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    open_page(page, service.url)
    upload(page, picture)
    wait_for_results(page)
    page.wait_for_selector("#maps button.tile")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    save_screenshot(page, "page-phone.png")


# ---- limits and keys: separate servers -------------------------------------------------------


def test_oversized_file_shows_an_error(
    new_page: Callable[..., Any], service_factory: Any, picture: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)  # noise does not compress: about 120 kB
    with service_factory({"CONVSCOPE_MAX_UPLOAD_BYTES": "20000"}) as svc:
        page = new_page()
        open_page(page, svc.url)
        upload(page, big)
        assert "too large" in wait_for_error(page)
        upload(page, picture)  # a small picture still goes through, and clears the message
        wait_for_results(page)
        assert page.is_hidden("#error")


def test_page_asks_for_the_api_key(
    new_page: Callable[..., Any], service_factory: Any, picture: Path
) -> None:
    with service_factory({"CONVSCOPE_API_KEYS": "first-key,s3cret-key"}) as svc:
        page = new_page()
        page.goto(svc.url + "/")
        assert "needs an API key" in wait_for_error(page)
        assert page.is_visible("#key-panel")
        assert page.evaluate("document.activeElement.id") == "api-key"
        page.fill("#api-key", "wrong")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "document.getElementById('error').textContent.includes('not accepted')"
        )
        page.fill("#api-key", "s3cret-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_function("!document.getElementById('model').disabled")
        assert page.is_hidden("#error")
        upload(page, picture)
        labels = wait_for_results(page)
        headers = {"Authorization": "Bearer s3cret-key"}
        assert labels[0] == api_top_label(svc.url, page.input_value("#model"), picture, headers)
        # The key lives in this tab's sessionStorage: a reload needs no typing.
        page.reload()
        page.wait_for_function("!document.getElementById('model').disabled")
        assert page.is_hidden("#error")


# ---- other frontends --------------------------------------------------------------------------


def readme_fetch_example() -> str:
    """The JavaScript block under the README's "Calling convscope from another frontend"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Calling convscope from another frontend", 1)[1]
    match = re.search(r"```js\n(.*?)```", section, re.S)
    assert match, "the README section has no ```js example"
    return match.group(1)


# Runs the README's example in the page; resolves to what it returned, or to the error text.
RUN_README = """async ([code, api, png]) => {
  const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
  const file = new File([bytes], "picture.png", { type: "image/png" });
  const run = new Function("file", "api", code + "\\nreturn classifyPicture(file, api);");
  try { return { ok: await run(file, api) }; } catch (e) { return { failed: String(e) }; }
}"""


def test_cross_origin_fetch_from_an_allowed_origin_works(
    new_page: Callable[..., Any], service: Service, model: dict, picture: Path
) -> None:
    site = service.sites["allowed"]
    page = new_page()
    page.goto(site.origin + "/index.html")
    png = base64.b64encode(picture.read_bytes()).decode()
    outcome = page.evaluate(RUN_README, [readme_fetch_example(), service.url, png])
    assert "ok" in outcome, outcome
    result = outcome["ok"]
    assert result["labels"][0] == api_top_label(service.url, model["name"], picture)
    assert result["layers"] == [layer["name"] for layer in model["layers"]]
    # The example put the feature maps into the other site's page, and they load there.
    page.wait_for_function(
        "n => [...document.images].filter(i => i.naturalWidth > 0).length === n",
        arg=len(model["layers"]),
    )


def test_cross_origin_fetch_from_another_origin_is_refused(
    new_page: Callable[..., Any],
    service: Service,
    site_factory: Any,
    picture: Path,
    tmp_path: Path,
) -> None:
    png = base64.b64encode(picture.read_bytes()).decode()
    with site_factory(tmp_path) as other:  # a different port: a different origin, not allowed
        page = new_page()
        page.goto(other.origin + "/index.html")
        outcome = page.evaluate(RUN_README, [readme_fetch_example(), service.url, png])
    assert "failed" in outcome and "Failed to fetch" in outcome["failed"], outcome
    # The server itself does answer: it is the browser that keeps the reply from the page.
    preflight = httpx.options(
        f"{service.url}/v1/models",
        headers={"Origin": other.origin, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


# ---- helpers ----------------------------------------------------------------------------------


def save_screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    assert Image.open(io.BytesIO((ARTIFACTS / name).read_bytes())).size[0] > 0

"""The web page in a real browser: `fakescope serve` on a loopback port, headless Chromium (Debian's
`chromium` package, no browser download) driven by Playwright. An image chosen in the file input
and one dropped on the drop zone get their verdict, score bar and heatmap; a text file named
.jpg is shown as rejected; the page fetches nothing from any other host. Behind an API key the
page asks for it, shows the server's refusal, and scores once it is given. An image whose
metadata claims AI origin shows the provenance line and the verdict the rule gives it. An image
whose edit map reaches the localiser's image rule is shown as "Likely AI-edited (a region)".

Skipped only when Playwright or Chromium is missing and CI is not set; under CI it must run."""
from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "cifake"
CHROMIUM = os.environ.get("FAKESCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None
missing = sync_playwright is None or not (Path(CHROMIUM).exists() or shutil.which("chromium"))
if missing and not os.environ.get("CI"):
    pytest.skip("needs playwright and Debian's chromium (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi")
pytestmark = [pytest.mark.offline_models, pytest.mark.slow]  # starts the server and a browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


API_KEY = "correct horse battery staple"
# every verdict the page can give a scored image (app.js `show`), whole text
VERDICTS = re.compile(r"^(Likely (AI-generated|AI-edited \(a region\)|real)|Uncertain)$")


def start_server(log: Path, *args: str, env: dict | None = None):
    """`fakescope serve` as a user would start it; yields its base URL once /readyz answers 200."""
    port = free_port()
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "FAKESCOPE_NO_PROGRESS": "1",
           **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fakescope.cli", "serve", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/"
    try:
        end = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < end, "not ready after 90 s:\n" + log.read_text()
            try:
                with urllib.request.urlopen(base + "readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shipped detector and localiser."""
    yield from start_server(tmp_path_factory.mktemp("serve") / "serve.log")


@pytest.fixture(scope="module")
def edit_server(tmp_path_factory):
    """The shipped localiser with its image rule's threshold at 0: every map of an image at least
    min_side px is over it, so every such upload is called edited (what a confident map gives)."""
    import json
    from importlib import resources

    folder = tmp_path_factory.mktemp("loc-flags-all") / "localizer"
    shutil.copytree(Path(str(resources.files("fakescope") / "models" / "localizer")), folder)
    meta = json.loads((folder / "localizer.json").read_text())
    meta["image_rule"]["threshold"] = 0.0
    (folder / "localizer.json").write_text(json.dumps(meta))
    yield from start_server(tmp_path_factory.mktemp("serve-edit") / "serve.log", "--localizer", str(folder))


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """Scores only, behind an API key given the recommended way (the environment, not a flag)."""
    yield from start_server(tmp_path_factory.mktemp("serve-key") / "serve.log", "--localizer", "none",
                            env={"FAKESCOPE_API_KEY": API_KEY})


@contextmanager
def page_ready(server: str):
    """The page in headless Chromium, loaded and showing its model line; closed afterwards."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server)
            expect(page.locator("#model")).to_contain_text("threshold", timeout=20_000)
            yield page
        finally:
            browser.close()


def test_page_scores_uploads_and_rejects_junk(server, tmp_path):
    real = min((EXAMPLES / "real").glob("*.jpg"))
    fake = min((EXAMPLES / "fake").glob("*.jpg"))
    junk = tmp_path / "holiday.jpg"
    junk.write_text("this is a text file with an image's name")
    shot = Path(os.environ.get("FAKESCOPE_SCREENSHOT_DIR", tmp_path)) / "web-page.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            outside, console_errors = [], []
            page.on("request", lambda req: None if req.url.startswith((server, "data:", "blob:")) else outside.append(req.url))
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server)
            expect(page.locator("#model")).to_contain_text("threshold", timeout=20_000)

            # choose files: one real example image and one text file named .jpg
            page.set_input_files("#files", [str(real), str(junk)])
            # drop a second image onto the drop zone, as a user dragging it from a file manager would
            page.evaluate("""([name, b64]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], name, {type: "image/jpeg"}));
                document.querySelector("#drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
            }""", [fake.name, base64.b64encode(fake.read_bytes()).decode()])

            for name in (real.name, fake.name):
                card = page.locator(".card", has_text=name)
                expect(card.locator(".verdict")).to_have_text(VERDICTS, timeout=30_000)
                expect(card.locator(".numbers")).to_contain_text("P(fake)")
                expect(card.locator(".heat")).to_be_visible()
                assert float(card.locator(".meter").get_attribute("aria-valuenow")) >= 0
            rejected = page.locator(".card.rejected", has_text="holiday.jpg")
            expect(rejected.locator(".verdict")).to_have_text("Rejected")
            expect(rejected.locator(".message")).to_contain_text("Not an image")
            expect(rejected.locator(".heat")).to_be_hidden()

            # the opacity slider fades the heatmap
            card = page.locator(".card", has_text=real.name)
            card.locator(".opacity input").fill("100")
            assert card.locator(".heat").evaluate("e => e.style.opacity") == "1"
            card.locator(".opacity input").fill("70")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    assert outside == [], f"the page fetched from elsewhere: {outside}"
    assert not [e for e in console_errors if "Content Security Policy" in e or "Refused" in e], console_errors


def test_page_asks_for_the_api_key_and_keeps_it_for_the_tab(keyed_server):
    real = min((EXAMPLES / "real").glob("*.jpg"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(keyed_server)
            # without a key the page says so and shows the key field
            expect(page.locator("#key-row")).to_be_visible(timeout=20_000)
            expect(page.locator("#model")).to_have_text("This server needs an API key.")

            # an upload without the key is refused by the server, and the card says why
            page.set_input_files("#files", [str(real)])
            card = page.locator(".card", has_text=real.name)
            expect(card.locator(".verdict")).to_have_text("Rejected", timeout=20_000)
            expect(card.locator(".message")).to_contain_text("(unauthorized)")

            # a wrong key changes nothing; the right one loads the model and uploads are scored
            page.locator("#apikey").fill("wrong key")
            page.locator("#apikey").dispatch_event("change")
            page.set_input_files("#files", [str(real)])
            expect(page.locator(".card.rejected")).to_have_count(2, timeout=20_000)
            page.locator("#apikey").fill(API_KEY)
            page.locator("#apikey").dispatch_event("change")
            expect(page.locator("#model")).to_contain_text("threshold", timeout=20_000)
            page.locator("#clear").click()
            page.set_input_files("#files", [str(real)])
            expect(page.locator(".card .verdict")).to_have_text(VERDICTS,
                                                                 timeout=30_000)

            # the key lives in this tab's sessionStorage: a reload is scored without typing it again
            page.reload()
            expect(page.locator("#model")).to_contain_text("threshold", timeout=20_000)
            assert page.locator("#apikey").input_value() == API_KEY
        finally:
            browser.close()


def test_api_docs_render_offline(server):
    """/docs (Swagger UI) draws the API from the server's own assets: nothing from a CDN."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            outside = []
            page.on("request", lambda req: None if req.url.startswith((server, "data:", "blob:")) else outside.append(req.url))
            page.goto(server + "docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("fakescope", timeout=20_000)
            expect(page.locator(".opblock-summary-path", has_text="/v1/detect").first).to_be_visible()
        finally:
            browser.close()
    assert outside == [], f"/docs fetched from elsewhere: {outside}"


def test_verdict_card_shows_provenance(server, tmp_path):
    """An image whose XMP says it is AI-made: its card gives the verdict by the provenance rule and
    the provenance line (highlighted as a claim); a plain image's card says "no provenance"."""
    import evidence_files as E

    tagged = tmp_path / "tagged.jpg"
    tagged.write_bytes(E.jpeg_with_xmp(E.xmp_packet(E.dst_description("trainedAlgorithmicMedia")),
                                       E.picture(3, (256, 192))))
    plain = tmp_path / "plain.png"
    plain.write_bytes(E.png_bytes(E.picture(4, (256, 192))))
    claim = "xmp XMP Iptc4xmpExt:DigitalSourceType: trainedAlgorithmicMedia"
    with page_ready(server) as page:
        page.set_input_files("#files", [str(tagged), str(plain)])
        card = page.locator(".card", has_text="tagged.jpg")
        expect(card.locator(".verdict")).to_have_text("Likely AI-generated", timeout=30_000)
        expect(card.locator(".provenance")).to_be_visible()
        expect(card.locator(".provenance")).to_have_text("Provenance: " + claim)
        expect(card.locator(".provenance")).to_have_class(re.compile(r"\bclaim\b"))
        expect(card.locator(".message")).to_have_text("provenance: " + claim)  # why the verdict is fake
        other = page.locator(".card", has_text="plain.png")
        expect(other.locator(".verdict")).to_have_text(VERDICTS, timeout=30_000)
        expect(other.locator(".provenance")).to_have_text("Provenance: no provenance")
        expect(other.locator(".provenance")).not_to_have_class(re.compile(r"\bclaim\b"))


def test_card_says_ai_edited_when_the_map_flags_a_region(edit_server, tmp_path):
    """The verdict the edit map gives: a 256 px photo the image rule flags reads "Likely AI-edited
    (a region)" with the map's reason, although P(fake) alone would not say fake; a 32 px image
    (under the rule's min_side) is not given that verdict."""
    import evidence_files as E

    photo = tmp_path / "photo.png"
    photo.write_bytes(E.png_bytes(E.picture(5, (256, 256))))
    small = min((EXAMPLES / "real").glob("*.jpg"))  # 32 px: a map, but no verdict from it
    with page_ready(edit_server) as page:
        page.set_input_files("#files", [str(photo), str(small)])
        card = page.locator(".card", has_text="photo.png")
        expect(card.locator(".verdict")).to_have_text("Likely AI-edited (a region)", timeout=60_000)
        expect(card.locator(".verdict")).to_have_text(VERDICTS)  # the shared pattern knows this verdict
        expect(card).to_have_class(re.compile(r"\bfake\b"))
        expect(card.locator(".heat")).to_be_visible()
        other = page.locator(".card", has_text=small.name)
        expect(other.locator(".verdict")).to_have_text(VERDICTS, timeout=60_000)
        expect(other.locator(".verdict")).not_to_have_text("Likely AI-edited (a region)")

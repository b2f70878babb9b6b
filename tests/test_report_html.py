"""`vitlab analyze`'s report.html: one self-contained HTML5 page (every picture inline as a
data: URI, nothing fetched, all text escaped) whose every image loads in a browser.

The browser tests open the page in headless Chromium (Debian: ``apt-get install chromium``)
and are skipped when it is not installed. They load a scratch copy of the report with a
small script added that, once the page has loaded, writes each <img>'s ``naturalWidth``
(0 for an image that failed to decode) into the DOM, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import TINY_MODEL, write_config
from vitlab import cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

# Class folder names that need escaping in HTML and Markdown, in three scripts.
CLASSES = ["<b>bold", "Кошка", "猫 & 狗", "plain"]
CARD = "# Model card\n\nTrained on <script>alert('x')</script> & friends: Ёжик, 猫.\n"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                             "(Debian: apt-get install chromium)")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Path]:
    """A tiny ViT trained one epoch on an image folder whose class names need escaping, with
    a model card in its run folder, and its analysis."""
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(CLASSES):
            (d / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (28, 28, 3))
                band = (c + 1) % len(CLASSES) if (split, i) == ("val", 1) else c  # a mislabelled image: mistakes
                img[4 * band:4 * band + 8] += 150
                Image.fromarray(img.astype(np.uint8)).save(d / "data" / split / name / f"{i}.png")
    cfg = write_config(d / "run.yaml", {"name": "imagefolder", "root": str(d / "data")}, TINY_MODEL, epochs=1,
                       loggers=[])
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["train", str(cfg), "--out", str(d / "run")]) == 0
        (d / "run" / "model_card.md").write_text(CARD, encoding="utf-8")
        assert cli.main(["analyze", str(d / "run" / "best.pt"), "--out", str(d / "analysis"),
                         "--distance-images", "4"]) == 0
    return {"html": d / "analysis" / "report.html", "md": d / "analysis" / "report.md"}


class _Page(HTMLParser):
    """What the checks need of a page: the doctype, the tags (checked to nest), and every
    attribute that can name a resource."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.doctype, self.tags, self.open, self.errors = None, [], [], []
        self.resources: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.charset = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "meta" and "charset" in a:
            self.charset = (a["charset"], [t for t in self.open])
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            if name in a:
                self.resources.append((tag, name, a[name]))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else 'nothing'}>")
        else:
            self.open.pop()


def test_report_html_is_one_valid_self_contained_page(report):
    text = report["html"].read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    assert page.doctype == "DOCTYPE html" and text.startswith("<!DOCTYPE html>")
    assert page.charset == ("utf-8", ["html", "head"])  # <meta charset="utf-8"> in <head>
    assert page.errors == [] and page.open == [] and page.tags[:2] == ["html", "head"]
    assert "script" not in page.tags and "link" not in page.tags and "url(" not in text
    # every picture of report.md is in the page, inline, and is a PNG
    md = report["md"].read_text(encoding="utf-8")
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(pictures) == 10 and "curves.png" in pictures and "mistakes.png" in pictures
    images = [v for t, a, v in page.resources if t == "img"]
    assert len(images) == len(pictures) == len(page.resources)  # nothing else refers to anything
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True)[:8] == b"\x89PNG\r\n\x1a\n"
    # the class names and the model card, escaped, in both reports
    assert "&lt;b&gt;bold" in text and "<b>bold" not in text and "猫 &amp; 狗" in text and "Кошка" in text
    assert "&lt;script&gt;alert" in text and "Ёжик" in text
    assert "| \\<b\\>bold |" in md and "| 猫 & 狗 |" in md
    assert "    Trained on <script>" in md  # the model card as an indented code block: shown, not run


def _image_widths(html_path: Path, scratch: Path) -> list[int]:
    """Open a copy of the page in headless Chromium; once it has loaded, the naturalWidth of
    each <img> in document order (0: it did not decode; -1: not complete)."""
    probe = ('<script>window.addEventListener("load", () => { const p = document.createElement("pre"); '
             'p.id = "image-check"; p.textContent = JSON.stringify(Array.from(document.images, '
             'i => i.complete ? i.naturalWidth : -1)); document.body.appendChild(p); });</script>')
    text = html_path.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    page = scratch / "page.html"
    page.write_text(text.replace("</body>", probe + "\n</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={scratch / 'profile'}", "--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="image-check">([^<]*)</pre>', done.stdout)
    assert found, f"the page did not finish loading in Chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1))


def assert_every_image_loads(html_path: Path, scratch: Path) -> int:
    widths = _image_widths(html_path, scratch)
    expected = html_path.read_text(encoding="utf-8").count("<img ")
    assert len(widths) == expected > 0, f"Chromium found {len(widths)} images, the page has {expected}"
    broken = [i for i, w in enumerate(widths) if w <= 0]
    assert not broken, f"images {broken} of {len(widths)} did not load (naturalWidth {[widths[i] for i in broken]})"
    return len(widths)


@needs_chromium
def test_every_image_loads_in_chromium(report, tmp_path):
    assert assert_every_image_loads(report["html"], tmp_path) == 10
    shot = tmp_path / "page.png"  # and the page draws: a screenshot that is not blank
    subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile2'}", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,1600", report["html"].as_uri()],
                   capture_output=True, timeout=180)
    with Image.open(shot) as im:
        assert im.size == (1200, 1600) and len(im.convert("L").getcolors(1 << 16)) > 16


@needs_chromium
def test_a_broken_image_fails_the_check(report, tmp_path):
    text = report["html"].read_text(encoding="utf-8")
    marker = "data:image/png;base64,iVBORw0KGgo"  # the PNG signature, base64-encoded
    nth = 3
    at = [m.start() for m in re.finditer(re.escape(marker), text)][nth]
    broken = tmp_path / "broken.html"  # one picture with its signature overwritten: no longer a PNG
    broken.write_text(text[:at] + marker.replace("iVBORw0KGgo", "AAAAAAAAAAA") + text[at + len(marker):],
                      encoding="utf-8")
    with pytest.raises(AssertionError, match=rf"images \[{nth}\] of 10 did not load"):
        assert_every_image_loads(broken, tmp_path)

"""The reports as a person sees them: a real copy and validation (ansible-playbook playbooks/copy.yml and
playbooks/validate.yml against the embedded servers, so the templates load from the modules' AnsiballZ
payloads), then the HTML opened in headless Debian Chromium: the page loads, its charts are in the DOM and
drawn in the screenshot's pixels, the browser logs no console message. Each playbook run's own report (the
callback plugin migration_run_report: its plays on a timeline) is there too and links the report it made.

Without chromium the test is skipped, except under CI=true where it fails (scripts/install.sh installs it).
PGM_UPDATE_SCREENSHOT=1 copies the screenshot to docs/images/report.png (the README's picture)."""

import collections
import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from conftest import PROJECT_DIR, execute, write_inventory

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
SCREENSHOT = PROJECT_DIR / "docs" / "images" / "report.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]

# Tables of different sizes, so that the timeline has something to show: one large enough to stream
# (over 8 MB) with indexes built as jobs of their own, a few small ones, foreign keys between them.
SCHEMA = """
CREATE TABLE customer (id bigint PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL);
CREATE TABLE product (id int PRIMARY KEY, title text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customer,
                     placed_at timestamptz NOT NULL, note text);
CREATE TABLE order_line (order_id bigint NOT NULL REFERENCES orders, line int NOT NULL,
                         product_id int NOT NULL REFERENCES product, quantity int NOT NULL,
                         PRIMARY KEY (order_id, line));
CREATE INDEX order_line_product ON order_line (product_id);
CREATE INDEX orders_placed ON orders (placed_at);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), message text);
INSERT INTO customer SELECT g, 'c' || g || '@example.org', 'Customer ' || g FROM generate_series(1, 20000) g;
INSERT INTO product SELECT g, 'Product ' || g, g * 1.25 FROM generate_series(1, 500) g;
INSERT INTO orders SELECT g, 1 + g % 20000, '2024-01-01'::timestamptz + g * interval '1 minute', repeat('n', 40)
  FROM generate_series(1, 120000) g;
INSERT INTO order_line SELECT 1 + g % 120000, g, 1 + g % 500, 1 + g % 7 FROM generate_series(1, 60000) g;
INSERT INTO audit_log (message) SELECT 'event ' || g FROM generate_series(1, 3000) g;
"""


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: scripts/install.sh installs Debian's chromium package for this test")
    pytest.skip("chromium is not installed (apt-get install chromium; scripts/install.sh does)")


def run(playbook, inventory):
    result = subprocess.run([ANSIBLE_PLAYBOOK, playbook, "-i", str(inventory)], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


def browse(browser, page, tmp_path, *args):
    """Chromium on page with the test's flags and a fresh profile: (stdout, the console lines it logged)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def png_pixels(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA, non-interlaced PNG (Chromium's)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, [], None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return width, height, rows


def png_size(path):
    """(width, height) from a PNG's header."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def colour_count(rows, hex_colour, tolerance=6):
    target = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    counts = collections.Counter(pixel for row in rows for pixel in row)
    return sum(n for pixel, n in counts.items()
               if all(abs(a - b) <= tolerance for a, b in zip(pixel, target, strict=True)))


@pytest.fixture
def shop(db_pair):
    src, dst = db_pair
    execute(src, SCHEMA, "ANALYZE")
    return src, dst


def test_the_reports_of_a_real_copy_and_validation_load_and_draw_in_chromium(shop, tmp_path):
    src, dst = shop
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 3, "migration_progress_poll_seconds": 1})
    run("playbooks/copy.yml", inventory)
    run("playbooks/validate.yml", inventory)
    artifacts = tmp_path / "artifacts"
    (summary_file,) = artifacts.glob("runs/*/summary.json")
    summary = json.loads(summary_file.read_text())
    # The copy recorded its timeline: each table's data, its indexes and its keys, on the workers.
    steps = {(job["table"], job["step"]) for job in summary["timeline"]}
    assert {("public.orders", "data"), ("public.orders", "indexes"), ("public.order_line", "data")} <= steps, steps
    assert {job["worker"] for job in summary["timeline"]} <= {1, 2, 3}
    assert all(0 <= job["start"] <= job["end"] <= summary["seconds"] for job in summary["timeline"])
    copy_report = summary_file.parent / "report.html"
    (validation_report,) = artifacts.glob("validation/*/validation.html")
    # The whole run's phases, one report per playbook run (callback plugin migration_run_report).
    (validate_run,) = artifacts.glob("run-reports/*-validate.html")
    whole_run = json.loads(validate_run.with_suffix(".json").read_text())
    assert whole_run["status"] == "success" and all(p["seconds"] >= 0 for p in whole_run["plays"])
    assert any("VALIDATE" in p["play"].upper() and p["status"] == "ok" for p in whole_run["plays"]), whole_run["plays"]
    assert [r["href"] for r in whole_run["reports"]] == [f"../{validation_report.relative_to(artifacts)}"]
    (copy_run,) = artifacts.glob("run-reports/*-copy.json")
    assert [r["href"] for r in json.loads(copy_run.read_text())["reports"]] == [
        f"../{copy_report.relative_to(artifacts)}"]

    for page in (copy_report, validation_report):  # rendered by the modules from their AnsiballZ payloads
        text = page.read_text()
        assert not re.search(r"https?://|<script|<link|url\(", text), f"{page.name} is not self-contained"
        assert "<svg" in text and "Timeline by worker" in text
    assert not re.search(r"https?://|<script|<link|url\(", validate_run.read_text())

    browser = chromium()
    for page in (copy_report, validation_report):
        dom, console = browse(browser, page, tmp_path, "--dump-dom")
        assert console == [], console
        assert dom.count('<rect class="bar"') >= len(summary["timeline"]), f"{page.name}: no timeline bars"
        assert "Timeline by worker" in dom and "the phases" in dom

    dom, console = browse(browser, validate_run, tmp_path, "--dump-dom")
    assert console == [], console
    assert dom.count('<rect class="bar"') >= 2 * sum(p["status"] != "skipped" for p in whole_run["plays"])
    assert "The phases of the whole run" in dom

    dom, _ = browse(browser, validation_report, tmp_path, "--dump-dom")
    assert dom.count('<rect class="cell pass"') >= 5, "the validation grid has no passing cells"
    assert "Migration validation" in dom and "PASS" in dom

    shot = tmp_path / "report.png"
    _, console = browse(browser, validation_report, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert console == [], console
    assert png_size(shot) == (1280, 1600)
    # Drawn, not only in the DOM: the grid's green cells and the timeline's data bars are on screen. Checked
    # on the same page at half scale (a quarter of the pixels to decode in Python).
    small = tmp_path / "report-half.png"
    browse(browser, validation_report, tmp_path, f"--screenshot={small}", "--window-size=1280,1600",
           "--force-device-scale-factor=0.5")
    width, height, rows = png_pixels(small)
    assert (width, height) == (640, 800)
    assert colour_count(rows, "#2da44e") > 500, "no validation grid in the screenshot"
    assert colour_count(rows, "#2f81f7") > 500, "no timeline bars in the screenshot"
    if os.environ.get("PGM_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

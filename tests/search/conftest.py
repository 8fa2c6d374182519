"""Synthetic glyphs (drawn with NumPy) and a scriptable HTTP server for the search tests."""

from collections.abc import Callable
import http.server
import itertools
import json
import threading
import time

import numpy as np
import pytest

SHAPES = ("circle", "square", "diamond", "triangle", "cross", "ring")
COLOURS = ((214, 39, 40), (245, 130, 20), (235, 200, 20), (44, 160, 44),
           (23, 170, 170), (31, 90, 200), (130, 60, 180), (230, 110, 190))
PATTERNS = ("plain", "hbars", "vbars")
GLYPHS = list(itertools.product(SHAPES, range(len(COLOURS)), PATTERNS))  # 144 distinct glyphs


def glyph_mask(shape: str, size: int) -> np.ndarray:
    """bool [size, size]: the shape filling the square."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1  # [-1, 1]
    if shape == "circle":
        return x * x + y * y <= 1
    if shape == "square":
        return (abs(x) <= 0.85) & (abs(y) <= 0.85)
    if shape == "diamond":
        return abs(x) + abs(y) <= 1
    if shape == "triangle":
        return (y >= -0.9) & (y <= 0.9) & (abs(x) <= (y + 0.9) / 1.8)
    if shape == "cross":
        return ((abs(x) <= 0.33) & (abs(y) <= 1)) | ((abs(y) <= 0.33) & (abs(x) <= 1))
    assert shape == "ring"
    r2 = x * x + y * y
    return (r2 <= 1) & (r2 >= 0.3)


def draw_glyph(canvas: np.ndarray, glyph: tuple[str, int, str], box: tuple[int, int, int, int]) -> None:
    """Paints the glyph into canvas[y1:y2, x1:x2] in place: shape in its colour, near-white bars."""
    shape, colour, pattern = glyph
    x1, y1, x2, y2 = box
    size = min(x2 - x1, y2 - y1)
    mask = glyph_mask(shape, size)
    if pattern != "plain":
        rows = (np.arange(size) * 6 // size) % 2 == 1
        bars = rows[:, None] if pattern == "hbars" else rows[None, :]
        ink = mask & bars & glyph_mask(shape, size) & (np.abs(np.mgrid[0:size, 0:size] - size / 2).max(0) < size * 0.3)
    else:
        ink = np.zeros_like(mask)
    region = canvas[y1:y1 + size, x1:x1 + size]
    region[mask] = COLOURS[colour]
    region[ink] = (245, 245, 245)


def reference_image(glyph: tuple[str, int, str], size: int = 56, fill: float = 0.75) -> np.ndarray:
    """The canonical picture of a glyph: centred on a plain light background."""
    canvas = np.full((size, size, 3), 235, np.uint8)
    side = int(size * fill)
    offset = (size - side) // 2
    draw_glyph(canvas, glyph, (offset, offset, offset + side, offset + side))
    return canvas


def grid_scene(rng: np.random.Generator, glyphs: list[tuple[str, int, str]], size: int = 168,
               glyph_boxes: bool = False) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Up to 9 glyphs in a 3x3 grid on a light grey gradient; returns the image and each glyph's
    cell box (x1, y1, x2, y2), or with `glyph_boxes` the glyph's own box, in glyph order."""
    yy, xx = np.mgrid[0:size, 0:size]
    grey = 215 + 10 * (xx + yy) / (2 * size)
    canvas = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    cell = size // 3
    cells = rng.choice(9, len(glyphs), replace=False)
    boxes = []
    for glyph, c in zip(glyphs, cells):
        x1, y1 = (c % 3) * cell, (c // 3) * cell
        side = int(cell * rng.uniform(0.65, 0.8))
        ox, oy = rng.integers(2, cell - side - 1, size=2)
        draw_glyph(canvas, glyph, (x1 + ox, y1 + oy, x1 + ox + side, y1 + oy + side))
        boxes.append((x1 + ox, y1 + oy, x1 + ox + side, y1 + oy + side) if glyph_boxes
                     else (x1, y1, x1 + cell, y1 + cell))
    return canvas, boxes


def jitter_box(rng: np.random.Generator, box: tuple[int, int, int, int], amount: float, limit: int
               ) -> tuple[int, int, int, int]:
    """Each edge moved by up to `amount` of the box's side, clamped to [0, limit]."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = rng.uniform(-amount, amount, 4) * np.array([w, h, w, h])
    nx1, ny1, nx2, ny2 = np.clip(np.round(np.array(box) + d).astype(int), 0, limit)
    return int(nx1), int(ny1), int(nx2), int(ny2)


# ------------------------------------------------------------------------------- HTTP server


class ScriptedServer:
    """An HTTP server on 127.0.0.1 whose handler is a function of the request, with a log of
    every request (path, headers, body) so tests can count calls and inspect what was sent."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        # request -> (status, body, delay_s) or (status, body, delay_s, reason phrase)
        self.handler: Callable[[dict], tuple] = lambda request: (200, b"{}", 0.0)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                           "body": self.rfile.read(length) if length else b""}
                with server.lock:
                    server.requests.append(request)
                    request["n"] = len(server.requests)
                status, body, delay, *reason = server.handler(request)
                time.sleep(delay)
                try:
                    self.send_response(status, *reason)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def count(self, path_prefix: str = "") -> int:
        with self.lock:
            return sum(r["path"].startswith(path_prefix) for r in self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def organic(*items: tuple[str, str, str]) -> bytes:
    """A Serper-style JSON body with (title, link, snippet) results."""
    return json.dumps({"organic": [{"title": t, "link": l, "snippet": s} for t, l, s in items]}).encode()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()

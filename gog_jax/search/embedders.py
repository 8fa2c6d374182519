"""Image embedders for near-duplicate search: a pluggable interface and a weight-free default.

An embedder is any callable mapping a batch of uint8 RGB images (an array [N, H, W, 3] or a
sequence of [H, W, 3] arrays of different sizes) to float32 [N, D] with unit-norm rows, so
inner product is cosine similarity. It may carry a `name` that identifies its output (saved
with an index, part of cache keys); a learned embedder (a CLIP tower, say) fits the same slot.

`GlyphEmbedder` is the default, built for flat synthetic emblems (coloured geometric glyphs on a
plain background) and pure NumPy, so it needs no weights, no JAX, and runs at thousands of
64x64 images per second on one CPU core. Per image:
  1. trim the borders: drop parts that touch the image edge, are cut off from the rest by a
     background gap and hold under 10% of the foreground (pixels unlike the background, the
     median colour of the border pixels) -- a sliver of a neighbouring glyph -- then keep the
     box holding all but 3% of the foreground on each side (a uniform border goes, and so do
     small clutter marks), so a loosely and a tightly framed crop of one glyph embed alike. Measured on the synthetic
     world (96 emblems + 48 gallery scenes indexed; 1,479 gaze crops with each box edge moved
     by up to 15% of the side), top-1 retrieval of the right emblem:
                                            this trim  margin only  foreground bbox  no trim
       jittered cell boxes                     0.99       0.97          0.93          0.39
       jittered tight emblem boxes             0.89       0.89          0.83          0.28
         (the jitter often cuts into the glyph)
       168-px scene, one emblem + clutter      0.985      0.985         0.33          0.24
  2. area-average the rest to a fixed grid [G, G, 3] (two small matrix products);
  3. features, each block unit-normalised so no block dominates by its size, then weighted
     (layout twice the others: it is the most telling block, +1-2 points above):
     layout (the grid minus the background colour: where which colour is),
     gradients (finite differences of grid luminance: edges and inner patterns),
     colour histogram of foreground pixels (translation-invariant; a cluttered scene of many
     glyphs gets a mixture of colours, which is what makes a whole-image search of it fail);
  4. a fixed-seed Gaussian random projection to D dims, then L2-normalise.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools

import numpy as np

Images = np.ndarray | Sequence[np.ndarray]
Embedder = Callable[[Images], np.ndarray]  # [N, H, W, 3] uint8 -> [N, D] float32, unit rows


def embedder_name(embedder: Embedder) -> str:
    """The embedder's `name` attribute, else its qualified name (a function's or a class's)."""
    name = getattr(embedder, "name", None)
    if isinstance(name, str):
        return name
    target = embedder if hasattr(embedder, "__qualname__") else type(embedder)
    return f"{target.__module__}.{target.__qualname__}"


@functools.lru_cache(maxsize=256)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix whose rows average the input cells each output cell covers (exact
    area averaging, fractional overlaps included; rows sum to 1)."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0.0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average resize of float [h, w, C] to [height, width, C] (also upsamples)."""
    h, w, c = image.shape
    by_rows = (_area_weights(h, height) @ image.reshape(h, w * c)).reshape(height, w, c)
    return _area_weights(w, width)[None] @ by_rows


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the outermost ring of pixels: float32 [3]."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(ring, axis=0).astype(np.float32)


def _drop_cut_edge_parts(mass: np.ndarray, max_share: float) -> tuple[int, int]:
    """[lo, hi) of a foreground profile (pixels per row or column) without the parts that touch
    the image's edge, are separated from the rest by empty lines and hold under `max_share` of
    the mass: what a crop cut off a neighbouring glyph. Only parts touching the edge go, so a
    glyph's own pattern, which may also split the profile, never loses a piece."""
    filled = mass > 0
    starts = np.flatnonzero(filled & ~np.r_[False, filled[:-1]])
    ends = np.flatnonzero(filled & ~np.r_[filled[1:], False]) + 1
    total, first, last = mass.sum(), 0, len(starts) - 1
    if first < last and starts[0] == 0 and mass[:ends[0]].sum() < max_share * total:
        first += 1
    if first < last and ends[-1] == len(mass) and mass[starts[-1]:].sum() < max_share * total:
        last -= 1
    return int(starts[first]), int(ends[last])


def trim_box(foreground: np.ndarray, margin: float, cut_share: float = 0.0) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of the box that keeps all but a `margin` share of the `foreground`
    pixels (bool [H, W]) on each side, per axis, after dropping parts cut by the image edge
    that hold under `cut_share` of them. Uniform borders go; so do small marks near the edge (a
    sliver of a neighbouring glyph, clutter). The whole image when nothing stands out."""
    if not foreground.any():
        return 0, foreground.shape[0], 0, foreground.shape[1]

    def span(mass: np.ndarray) -> tuple[int, int]:
        lo, hi = _drop_cut_edge_parts(mass, cut_share)
        cumulative = np.cumsum(mass[lo:hi])
        total = cumulative[-1]
        return (lo + int(np.searchsorted(cumulative, margin * total, side="right")),
                lo + int(np.searchsorted(cumulative, (1.0 - margin) * total, side="left")) + 1)

    (y1, y2), (x1, x2) = span(foreground.sum(1)), span(foreground.sum(0))
    return y1, y2, x1, x2


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of x [N, F] scaled to unit L2 norm; rows of norm under 1e-6 (nothing there but
    rounding error, e.g. an image with no foreground) become zero rather than amplified noise."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, x / np.maximum(norm, 1e-6), 0.0)


@dataclasses.dataclass(frozen=True)
class GlyphEmbedder:
    """The default embedder (see the module docstring). Frozen: its fields are its identity.

    grid: side G of the area-averaged grid.
    dim: output dimension D (random projection of the concatenated features).
    trim: trim near-uniform background borders before resizing.
    tolerance: max per-channel difference (0-255) from the background still counted as background.
    margin: share of the foreground pixels the trim may cut on each side (per axis).
    cut_share: parts touching the image edge, separated from the rest by a background gap and
      holding less than this share of the foreground, are trimmed first.
    colour_bins: bins per RGB channel of the foreground colour histogram.
    weights: (layout, gradients, colours) block weights before projection.
    """

    grid: int = 16
    dim: int = 256
    seed: int = 0
    trim: bool = True
    tolerance: float = 24.0
    margin: float = 0.03
    cut_share: float = 0.1
    colour_bins: int = 4
    weights: tuple[float, float, float] = (2.0, 1.0, 1.0)

    @property
    def name(self) -> str:
        fields = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"glyph({fields})"

    @property
    def feature_dim(self) -> int:
        return 5 * self.grid * self.grid + self.colour_bins ** 3

    @functools.cached_property
    def projection(self) -> np.ndarray:
        """Fixed-seed Gaussian projection [feature_dim, dim], scaled to keep norms on average."""
        rng = np.random.default_rng(self.seed)
        return (rng.standard_normal((self.feature_dim, self.dim)) / np.sqrt(self.dim)).astype(np.float32)

    def _grid_and_histogram(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image -> (grid minus background [G, G, 3] in [-1, 1], colour histogram [bins^3])."""
        pixels = np.asarray(image, np.float32)
        background = background_colour(pixels)
        foreground = np.abs(pixels - background).max(-1) > self.tolerance
        if self.trim:
            y1, y2, x1, x2 = trim_box(foreground, self.margin, self.cut_share)
            pixels, foreground = pixels[y1:y2, x1:x2], foreground[y1:y2, x1:x2]
        # Background subtracted before resizing, so a uniform area gives exact zeros.
        grid = area_resize((pixels - background) / 255.0, self.grid, self.grid)
        bins = self.colour_bins
        q = (pixels[foreground] * (bins / 256.0)).astype(np.int64)
        histogram = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins ** 3)
        return grid, histogram.astype(np.float32)

    def features(self, images: Images) -> np.ndarray:
        """Unprojected features [N, feature_dim] (blocks unit-normalised and weighted)."""
        parts = [self._grid_and_histogram(image) for image in images]
        if not parts:
            return np.zeros((0, self.feature_dim), np.float32)
        grids = np.stack([g for g, _ in parts])
        luminance = grids @ np.array([0.299, 0.587, 0.114], np.float32)
        gradients = np.concatenate([np.diff(luminance, axis=1, append=luminance[:, -1:]).reshape(len(parts), -1),
                                    np.diff(luminance, axis=2, append=luminance[:, :, -1:]).reshape(len(parts), -1)], 1)
        # sqrt (Hellinger): a minor colour (a pattern, a sliver) counts, but less than linearly.
        histograms = np.sqrt(np.stack([h for _, h in parts]))
        w_layout, w_gradient, w_colour = self.weights
        return np.concatenate([w_layout * _unit(grids.reshape(len(parts), -1)), w_gradient * _unit(gradients),
                               w_colour * _unit(histograms)], 1)

    def __call__(self, images: Images) -> np.ndarray:
        """[N, H, W, 3] uint8 (or a sequence of [H, W, 3]) -> float32 [N, dim], unit rows."""
        # Row by row: a batched matrix product rounds differently with the batch size, and an
        # image must embed to the same bits alone (a query) as in a batch (the index).
        features = self.features(images)
        if not len(features):
            return np.zeros((0, self.dim), np.float32)
        return _unit(np.stack([row @ self.projection for row in features])).astype(np.float32)

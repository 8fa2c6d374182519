"""Search tools behind one interface: an offline local index, a web API backend, a sqlite cache.

    backend = CachedBackend(LocalIndex.load("world/index"), "searches.sqlite")
    backend.image_search(crop, k=5)      # -> [SearchResult(title, snippet, source_id, score, thumbnail)]
    backend.text_search("Velmora founded", k=5)
"""

from gog_jax.search.base import SearchBackend, SearchError, SearchResult
from gog_jax.search.cache import CachedBackend, normalise_query
from gog_jax.search.embedders import Embedder, GlyphEmbedder, embedder_name
from gog_jax.search.local_index import LocalIndex, Record, build_index
from gog_jax.search.web import WebSearchBackend, WebSearchConfig

__all__ = [
    "CachedBackend", "Embedder", "GlyphEmbedder", "LocalIndex", "Record", "SearchBackend", "SearchError",
    "SearchResult", "WebSearchBackend", "WebSearchConfig", "build_index", "embedder_name", "normalise_query",
]

"""An LRU cache of vision-encoder outputs, keyed by the preprocessed pixels of one image.

Seed 003's "cache visual tokens": an image sent again (same pixels after resizing and normalising, so the
same bytes give the same key whatever URL carried them) skips the vision tower. The cache wraps the
model's ``get_image_features`` on the instance; it is used only from the model thread, so it needs no lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class VisionCache:
    def __init__(self, capacity_mb: float, on_lookup: Callable[[bool], None] | None = None) -> None:
        self.capacity = int(capacity_mb * 1024 * 1024)
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._on_lookup = on_lookup or (lambda hit: None)
        self._output_type: Any = None
        self._entries: OrderedDict[bytes, tuple[Any, list[Any], int]] = OrderedDict()

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: bytes) -> tuple[Any, list[Any]] | None:
        entry = self._entries.get(key)
        self._on_lookup(entry is not None)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0], entry[1]

    def _put(self, key: bytes, pooled: Any, deepstack: list[Any]) -> None:
        nbytes = sum(t.numel() * t.element_size() for t in [pooled, *deepstack])
        if nbytes > self.capacity:
            return
        self._entries[key] = (pooled, deepstack, nbytes)
        self.size += nbytes
        while self.size > self.capacity:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.size -= dropped

    def wrap(self, encode: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``get_image_features(pixel_values, image_grid_thw, **kw)`` of a Qwen3-VL model."""
        import torch

        def cached(pixel_values: Any, image_grid_thw: Any = None, **kwargs: Any) -> Any:
            if self.capacity <= 0 or image_grid_thw is None:
                return encode(pixel_values, image_grid_thw, **kwargs)
            rows = image_grid_thw.prod(-1).tolist()
            chunks = torch.split(pixel_values, rows)
            keys = [_key(chunk, grid) for chunk, grid in zip(chunks, image_grid_thw, strict=True)]
            found = [self._get(k) for k in keys]
            missing = [i for i, f in enumerate(found) if f is None]
            if missing:
                out = encode(torch.cat([chunks[i] for i in missing]), image_grid_thw[missing], **kwargs)
                self._output_type = type(out)
                for n, i in enumerate(missing):
                    pooled = out.pooler_output[n].detach()
                    deep = [layer[n].detach() for layer in out.deepstack_features]
                    found[i] = (pooled, deep)
                    self._put(keys[i], pooled, deep)
            else:
                out = self._output_type()  # all hits: an empty output of the type a real call gave
            out.pooler_output = tuple(f[0] for f in found)  # type: ignore[index]
            n_layers = len(found[0][1])  # type: ignore[index]
            out.deepstack_features = [tuple(f[1][layer] for f in found) for layer in range(n_layers)]  # type: ignore[index]
            return out

        return cached


def _key(pixels: Any, grid: Any) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    h.update(bytes(str(grid.tolist()), "ascii"))
    h.update(pixels.contiguous().cpu().numpy().tobytes())
    return h.digest()

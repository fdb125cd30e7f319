"""The bound on what a data file may declare, shared by every reader of files.

Decisions, on purpose:

* **Sizes a file declares are checked before memory is allocated.** A file may declare (IDX dims, ``.npy``
  shapes, archive member sizes, image dimensions) at most the bytes it really holds: a raw file its own size, a
  compressed one at most ``_MAX_EXPANSION`` (32) times its compressed size, or ``_EXPANSION_FLOOR`` (16 MiB)
  when that is more (:func:`expansion_limit`). A reader thus allocates at most about twice that bound (the data
  and one converted copy), and a decompression bomb is refused from its header, before it is inflated.
  :mod:`layermod.data.idx`, :mod:`layermod.data.npz`, :mod:`layermod.data.cifar` and
  :mod:`layermod.data.imagefolder` all use this one bound.
* **gzip is recognised by its magic bytes** (:data:`GZIP_MAGIC`), never by the file name's suffix.
"""

from __future__ import annotations

__all__ = ["GZIP_MAGIC", "expansion_limit"]

GZIP_MAGIC = b"\x1f\x8b"
_MAX_EXPANSION = 32  # bytes a compressed file may declare or inflate to, per byte of the file
_EXPANSION_FLOOR = 16 * 2**20  # ... or this many, when more: tiny files of zeros compress far better


def expansion_limit(stored_bytes: int) -> int:
    """Most bytes a compressed file or member of ``stored_bytes`` may declare or inflate to."""
    return max(_EXPANSION_FLOOR, _MAX_EXPANSION * stored_bytes)


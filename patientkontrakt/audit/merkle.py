"""The Merkle tree of the access log: RFC 6962 (and RFC 9162 §2.1) hashing, kept by its right edge.

A leaf's hash is SHA-256(0x00 || leaf data), an interior node's SHA-256(0x01 || left || right),
the empty tree's SHA-256 of nothing; a tree of n > 1 leaves splits at the largest power of two
below n. These are the hashes of Certificate Transparency and of every C2SP checkpoint, so the
roots we sign mean what they mean in any transparency-log tool.

``Frontier`` is the tree's right edge (a *compact range* in Trillian's words): the roots of the
perfect subtrees that the binary digits of the size make up, largest first, at most 64 hashes.
Appending a leaf merges equal-height subtrees (amortised O(1) hashes) and the root is a fold of
at most log2(n) hashes, so the sealer extends a tree of any size in O(batch · log n) and needs
none of the older leaves. ``audit verify`` rebuilds it from every leaf, in O(n) and bounded memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The right edge of a tree of ``size`` leaves."""

    __slots__ = ("size", "_hashes")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self._hashes = list(hashes)
        if len(self._hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in self._hashes):
            raise ValueError(f"a tree of {size} leaves has a right edge of {size.bit_count()} hashes")

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        """The edge as ``to_bytes`` wrote it (the hashes concatenated, largest subtree first)."""
        if len(data) % HASH_SIZE:
            raise ValueError("a right edge is a whole number of hashes")
        return cls(size, (data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)))

    def to_bytes(self) -> bytes:
        return b"".join(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add the leaf whose hash is ``leaf`` (``leaf_hash`` of its data) at position ``size``."""
        node = leaf
        size = self.size
        # Each trailing 1 bit of the old size is a subtree of the new leaf's height: merge it.
        while size & 1:
            node = node_hash(self._hashes.pop(), node)
            size >>= 1
        self._hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        """The tree's root hash (RFC 6962 MTH)."""
        if not self._hashes:
            return EMPTY_ROOT
        node = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> Frontier:
        return Frontier(self.size, self._hashes)


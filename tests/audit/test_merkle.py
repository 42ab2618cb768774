"""The access log's Merkle tree: RFC 6962 hashes, and the right edge the sealer keeps."""

from __future__ import annotations

import pytest

from patientkontrakt.audit.merkle import EMPTY_ROOT, Frontier, leaf_hash, node_hash

# The reference inputs and roots of Certificate Transparency's tests (the same in Trillian, the
# Go and C++ CT code and many others): a tree whose roots every RFC 6962 implementation agrees on.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _root_of(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 as written: split at the largest power of two below n."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_root_of(leaves[:split]), _root_of(leaves[split:]))


def test_the_roots_are_those_of_rfc_6962() -> None:
    tree = Frontier()
    assert tree.root().hex() == CT_ROOTS[0]
    for size, data in enumerate(CT_LEAVES, start=1):
        tree.append(leaf_hash(bytes.fromhex(data)))
        assert tree.size == size
        assert tree.root().hex() == CT_ROOTS[size], size


def test_the_right_edge_gives_the_recursive_root_at_every_size() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    tree = Frontier()
    for size in range(1, len(leaves) + 1):
        tree.append(leaves[size - 1])
        assert tree.root() == _root_of(leaves[:size]), size
        # what the sealer stores and reads back is the same tree
        assert Frontier.from_bytes(size, tree.to_bytes()).root() == tree.root()
        assert len(tree.to_bytes()) == 32 * size.bit_count()


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    # an interior node is never mistaken for a leaf of the same bytes (the second-preimage attack
    # on trees without the 0x00/0x01 prefixes)
    assert node_hash(a, b) != leaf_hash(a + b)


def test_a_stored_edge_of_the_wrong_shape_is_refused() -> None:
    tree = Frontier()
    for i in range(5):
        tree.append(leaf_hash(bytes([i])))
    with pytest.raises(ValueError):
        Frontier.from_bytes(7, tree.to_bytes())  # 7 leaves have an edge of 3 hashes, 5 of 2
    with pytest.raises(ValueError):
        Frontier.from_bytes(5, tree.to_bytes()[:-1])

"""Pithos hashing against independently computed vectors (hashlib by hand, NIST, pithos-api.md §5)."""

from __future__ import annotations

import hashlib

import pytest

from archipelago.hashing import (
    BLOCK_SIZE,
    ZERO_HASH,
    block_hash,
    is_zero,
    merkle_root,
    object_hash,
    object_hashmap,
)

MIB4 = 4 * 1024 * 1024
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2
HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
# pithos-api.md §5 vectors.
ROOT_A4M_HELLO = "65bb4655194d34392c4156a68d0bc3ab4cb1f13ec46c18d28cfcdbf997fab183"
ROOT_A4M_ZERO_HELLO = "24c835379be691e55633086af971b7a044d42fcf09399fc3b9c6e55de7d43ee9"


def _pair(left: str, right: str) -> str:
    return hashlib.sha256(bytes.fromhex(left) + bytes.fromhex(right)).hexdigest()


def test_constants() -> None:
    assert BLOCK_SIZE == MIB4
    assert ZERO_HASH == EMPTY_SHA256


def test_block_hash_strips_trailing_zeros_only() -> None:
    assert block_hash(b"abc") == ABC_SHA256
    assert block_hash(b"abc" + bytes(1000)) == ABC_SHA256
    assert block_hash(memoryview(b"abc\0\0")) == ABC_SHA256
    assert block_hash(b"\0abc") == hashlib.sha256(b"\0abc").hexdigest()  # leading zeros count
    assert block_hash(b"") == EMPTY_SHA256
    assert block_hash(bytes(MIB4)) == EMPTY_SHA256


def test_is_zero() -> None:
    assert is_zero(b"")
    assert is_zero(bytes(MIB4))
    assert not is_zero(bytes(MIB4 - 1) + b"\1")
    assert not is_zero(b"\1" + bytes(100000))
    assert not is_zero(bytes(70000) + b"\1" + bytes(70000))  # past the first 64 KiB chunk


def test_empty_object() -> None:
    assert object_hashmap(b"") == [EMPTY_SHA256]
    assert object_hash(b"") == EMPTY_SHA256
    assert merkle_root([]) == EMPTY_SHA256


def test_one_block_root_is_the_block_id_not_rehashed() -> None:
    assert object_hashmap(b"hello") == [HELLO_SHA256]
    assert object_hash(b"hello") == HELLO_SHA256
    assert object_hash(bytes(MIB4)) == EMPTY_SHA256  # same root as the empty object


def test_two_blocks_vector() -> None:
    data = b"a" * MIB4 + b"hello"
    ida = hashlib.sha256(b"a" * MIB4).hexdigest()
    assert object_hashmap(data) == [ida, HELLO_SHA256]
    assert object_hash(data) == ROOT_A4M_HELLO == _pair(ida, HELLO_SHA256)


def test_three_blocks_pad_with_zero_digests() -> None:
    data = b"a" * MIB4 + bytes(MIB4) + b"hello"
    ida = hashlib.sha256(b"a" * MIB4).hexdigest()
    assert object_hashmap(data) == [ida, EMPTY_SHA256, HELLO_SHA256]
    pad = "00" * 32  # padding leaves are 32 zero bytes, not the zero block's id
    expected = _pair(_pair(ida, EMPTY_SHA256), _pair(HELLO_SHA256, pad))
    assert object_hash(data) == expected == ROOT_A4M_ZERO_HELLO


def test_trailing_zero_blocks_and_short_last_block() -> None:
    data = b"x" * 10 + bytes(MIB4 - 10) + bytes(MIB4) + b"tail" + bytes(20)
    idx = hashlib.sha256(b"x" * 10).hexdigest()
    idt = hashlib.sha256(b"tail").hexdigest()
    assert object_hashmap(data) == [idx, EMPTY_SHA256, idt]
    # The short last block hashes like the same block padded to 4 MiB.
    assert object_hashmap(data + bytes(MIB4 - 24))[-1] == idt


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9])
def test_merkle_root_matches_a_direct_construction(n: int) -> None:
    leaves = [hashlib.sha256(bytes([i])).hexdigest() for i in range(n)]
    size = 1 << (n - 1).bit_length()
    level = [bytes.fromhex(h) for h in leaves] + [bytes(32)] * (size - n)
    while len(level) > 1:
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    assert merkle_root(leaves) == level[0].hex()


def test_small_block_size_parameter() -> None:
    assert object_hashmap(b"abcdef", block_size=3) == [
        ABC_SHA256, hashlib.sha256(b"def").hexdigest()]

"""Native kernels vs the pure-Python twins, fd I/O into buffers, GIL release, opt-out."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from archipelago import hashing, native
from archipelago.errors import NativeUnavailable

payloads = st.builds(
    lambda head, zeros, tail: head + b"\0" * zeros + tail,
    st.binary(max_size=300), st.integers(0, 5000), st.sampled_from([b"", b"\0" * 7, b"\1"]))


def test_native_is_built() -> None:
    assert native.AVAILABLE
    native.self_test()


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_kernels_match_twins(data: bytes) -> None:
    assert native.is_zero(data) == hashing.is_zero(data)
    assert native.block_hash(data) == hashing.block_hash(data)
    assert native.sha256(data) == hashlib.sha256(data).digest()
    assert native.block_hash(bytearray(data)) == hashing.block_hash(memoryview(data))


def test_full_block_hash() -> None:
    block = os.urandom(1 << 20) + bytes(hashing.BLOCK_SIZE - (1 << 20))
    assert native.block_hash(block) == hashing.block_hash(block)
    assert native.block_hash(bytes(hashing.BLOCK_SIZE)) == hashing.ZERO_HASH
    assert native.is_zero(bytes(hashing.BLOCK_SIZE))


def test_pread_pwrite(tmp_path) -> None:
    data = os.urandom(300_000)
    fa = os.open(tmp_path / "a", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert native.pwrite_from(fa, data, 100) == len(data)
        buf = bytearray(len(data) + 50)
        assert native.pread_into(fa, memoryview(buf), 100) == len(data)  # short at EOF
        assert bytes(buf[: len(data)]) == data
    finally:
        os.close(fa)


def test_pread_bad_fd_raises() -> None:
    try:
        native.pread_into(987654, bytearray(10), 0)
    except OSError as exc:
        assert exc.errno == 9
    else:
        raise AssertionError("no error on a bad fd")


def test_calls_release_the_gil() -> None:
    # The thread blocks in C forever unless the main thread can run to wake it:
    # with the GIL held during the call this test would time out.
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    entered = threading.Event()
    result: list[int] = []

    def waiter() -> None:
        entered.set()
        result.append(native.lib.ap_wait_fd(efd, -1, -1))

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    entered.wait()
    os.eventfd_write(efd, 1)
    t.join(10)
    os.close(efd)
    assert result == [1]


def test_opt_out_is_explicit() -> None:
    code = (
        "import archipelago.native as n\n"
        "assert not n.AVAILABLE\n"
        "assert n.block_hash(b'a\\0') == __import__('archipelago.hashing').hashing.block_hash(b'a')\n"
        "try:\n    n.require()\nexcept Exception as e:\n    print(type(e).__name__)\n"
    )
    env = dict(os.environ, ARCHIPELAGO_NO_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == NativeUnavailable.__name__


def test_missing_compiler_names_the_package() -> None:
    # run_name != "__main__": only the toolchain check and cdef run, nothing is compiled.
    build = os.path.join(os.path.dirname(__file__), "..", "native", "build_native.py")
    code = f"import runpy; runpy.run_path({build!r}, run_name='probe')"
    env = dict(os.environ, CC="/nonexistent/archip-cc")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "no C compiler" in out.stderr and "apt-get install build-essential" in out.stderr
    assert "Traceback" not in out.stderr

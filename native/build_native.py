"""cffi out-of-line API-mode build of archipelago._native (native/archip.c).

Used by setup.py (``cffi_modules=["native/build_native.py:ffi"]``) and runnable
directly (``python native/build_native.py``) to build in place.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(HERE, "archip.c"), os.path.join(HERE, "kernels.c")]


def _check_toolchain() -> None:
    """Fail early with the Debian package to install when the toolchain is missing."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        sys.exit(f"archipelago native build: no C compiler ({cc}); apt-get install build-essential")
    inc = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(inc, "Python.h")):
        sys.exit(f"archipelago native build: {inc}/Python.h missing; apt-get install python3-dev")
    if not any(
        os.path.exists(os.path.join(d, "openssl", "evp.h"))
        for d in ("/usr/include", "/usr/local/include")
    ):
        sys.exit("archipelago native build: openssl/evp.h missing; apt-get install libssl-dev")


def _cdef() -> str:
    """The header, minus preprocessor lines cffi cannot parse (constants become '...')."""
    out = []
    with open(os.path.join(HERE, "archip.h")) as f:
        for line in f:
            m = re.match(r"#define (AP_\w+) +(\S+)", line)
            if m and m.group(2).isdigit():
                out.append(f"#define {m.group(1)} {m.group(2)}")  # usable as array sizes
            elif m:
                out.append(f"#define {m.group(1)} ...")
            elif not line.startswith("#"):
                out.append(line.rstrip("\n"))
    return "\n".join(out)


_check_toolchain()
ffi = FFI()
ffi.cdef(_cdef())
ffi.set_source(
    "archipelago._native",
    '#include "archip.h"',
    # setuptools (pip install) runs from the project root and wants relative paths
    sources=[s if __name__ == "__main__" else os.path.relpath(s) for s in SOURCES],
    include_dirs=[HERE],
    libraries=["crypto"],
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wconversion"],
)

if __name__ == "__main__":
    import tempfile

    # build outside the tree so setuptools does not read pyproject.toml
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        so = ffi.compile(tmpdir=tmp, verbose=False)
        pkg = os.path.join(os.path.dirname(HERE), "archipelago")
        for old in os.listdir(pkg):  # a stale build under another suffix would shadow ours
            if old.startswith("_native.") and old.endswith(".so"):
                os.unlink(os.path.join(pkg, old))
        shutil.copy(so, os.path.join(pkg, os.path.basename(so)))

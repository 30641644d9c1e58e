"""Build hook for the cffi extension archipelago._native (metadata is in pyproject.toml)."""

from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffi"])

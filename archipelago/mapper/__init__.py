"""Volume maps and their operations: COW, snapshot, clone, hash, resize, locks.

May import archipelago.blocker (the contract), errors, hashing and wire (VolumeInfo, Extent). The on-store
format and object naming scheme are documented in archipelago.mapper.format.
"""

from archipelago.mapper.mapper import Mapper
from archipelago.mapper.volume import Volume

__all__ = ["Mapper", "Volume"]

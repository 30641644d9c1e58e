"""archipelago: content-addressed volume maps served by shared-memory peers.

Subpackages: peers (segment, rings, client API), mapper (maps, COW), blocker
(object stores), nbd (nbdkit plugin); db (the SQLAlchemy engine of the metadata
databases). Nothing here imports pithos_gw or control.
"""

__version__ = "0.1.0"

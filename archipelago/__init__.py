"""archipelago: content-addressed volume maps served by shared-memory peers.

Subpackages: peers (segment, rings), client (the client API), mapper (maps, COW), blocker
(object stores), nbd (nbdkit plugin), service (the daemon's peers), upkeep (GC, scrub),
db (the SQLAlchemy engine of the metadata databases);
wire.py holds what crosses the segment. Nothing here imports pithos_gw or control; the
direction between subpackages is enforced by tests/test_layers.py.
"""

__version__ = "0.1.0"

"""The nbdkit Python plugin: a thin translation of NBD calls into volume requests.

plugin.py (nbdkit callbacks) -> exports.py (names, refcounts, scratch, errnos) ->
backend.py (the seam: DirectBackend runs the mapper in-process; peer_backend.py sends
each call over the segment). May import archipelago.peers and archipelago.client (client
side) and the foundation modules; the mapper and blocker only in the direct backend
(backend.py, direct_store.py) -- tests/test_layers.py holds the exceptions.
"""

from pathlib import Path

#: The file to give nbdkit: ``nbdkit python PLUGIN_PATH dir=DATA_DIR``.
PLUGIN_PATH = Path(__file__).resolve().with_name("plugin.py")

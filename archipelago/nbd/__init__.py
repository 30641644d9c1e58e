"""The nbdkit Python plugin: a thin translation of NBD calls into volume requests.

plugin.py (nbdkit callbacks) -> exports.py (names, refcounts, scratch, errnos) ->
backend.py (the seam: DirectBackend runs the mapper in-process; a peer backend
will send each call over the segment). May import archipelago.peers (client
side), archipelago.mapper (direct backend only), blocker, errors.
"""

from pathlib import Path

#: The file to give nbdkit: ``nbdkit python PLUGIN_PATH dir=DATA_DIR``.
PLUGIN_PATH = Path(__file__).resolve().with_name("plugin.py")

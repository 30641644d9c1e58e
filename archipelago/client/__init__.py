"""The archipelago client API: volumes through the daemon's mapper peer (blocking and async).

    with Client.connect(data_dir) as c:          # or: async with await AsyncClient.connect(...)
        c.create("vm1", 10 << 30)
        with c.open("vm1") as v:
            v.write(0, b"hello"); v.flush(); v.read(0, 5); v.extents(0, v.size)

Every method raises archipelago.errors classes; NotRunning (naming the command that
starts the daemon) when no daemon serves the instance. Volume ops travel as CTRL
requests with a msgpack payload; I/O as READ/WRITE/ZERO/TRIM/FLUSH/EXTENTS on the
volume's name (see archipelago.service.mapper_peer). Reads copy once, from the
segment buffer into the caller's; requests above the arena's largest buffer are split.
"""

from archipelago.client.aio import AsyncClient, AsyncVolumeHandle
from archipelago.client.blocking import Client, VolumeHandle
from archipelago.client.connect import start_command
from archipelago.wire import Extent, VolumeInfo

__all__ = ["AsyncClient", "AsyncVolumeHandle", "Client", "Extent", "VolumeHandle", "VolumeInfo",
           "start_command"]

"""The running daemon: supervisor (segment, registry, child processes), mapper peer, blocker peers.

May import archipelago.peers, mapper, blocker, upkeep and the foundation modules (errors,
config, instance, wire, ...); never the client library, the CLI or the gateway.
Entry points: ``python -m archipelago.service.<module>``.
"""

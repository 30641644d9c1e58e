"""The running daemon: supervisor (segment, registry, child processes), mapper peer, blocker peers.

May import archipelago.peers, archipelago.mapper, archipelago.blocker, config and instance;
never the CLI or the gateway. Entry points: ``python -m archipelago.service.<module>``.
"""

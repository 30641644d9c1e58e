"""Shared-memory segment, descriptor pool, buffer arena, ports, rings and wakeups;
the peer event loop and the client API other packages use to reach peers.

May import archipelago.errors, archipelago.hashing and the native extension.
"""

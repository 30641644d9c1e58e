"""Pithos+ / OpenStack Swift gateway (aiohttp) and the Plankton image registry.

May import archipelago (client API, blocker contract, hashing, errors).
"""

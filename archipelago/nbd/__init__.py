"""The nbdkit Python plugin: a thin translation of NBD calls into peer requests.

May import archipelago.peers (client side) and errors.
"""

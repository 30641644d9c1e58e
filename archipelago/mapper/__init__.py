"""Volume maps and their operations: COW, snapshot, clone, hash, resize, locks.

May import archipelago.blocker (the contract), errors and hashing.
"""

"""Object stores behind one async contract (base.Blocker): memory, file, rados.

May import archipelago.errors and archipelago.hashing only.
"""

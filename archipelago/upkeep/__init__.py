"""Storage upkeep over a blocker: garbage collection (gc), scrub, changed-block diffs.

May import archipelago.blocker, archipelago.mapper, errors, hashing and config; never
pithos_gw, control or a plugin (the gateway adds GC roots through the entry-point
group ``archipelago.gc_roots``).
"""

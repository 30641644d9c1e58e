"""Direct block access: fast paths that pread/pwrite file-blocker objects themselves.

Holds the rules written once (docs/fastpath.md): locating a map entry's object
(locate.py), reading with zero fill, the in-place write, the dirty set and flush
(objects.py), the generation/exclusion protocol (coherence.py) and the layouts the C
filter shares (layout.py). May import the stdlib, archipelago.errors/hashing, the map
format (archipelago.mapper.format) and the file blocker's helpers; never nbd or service.
"""

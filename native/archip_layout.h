/* Byte layouts the C filter shares with Python: keep equal to
 * archipelago/blockaccess/layout.py (tests/test_blockaccess.py checks it). */
#ifndef ARCHIP_LAYOUT_H
#define ARCHIP_LAYOUT_H

/* generation page DATA_DIR/run/mapgen: header (token u64, reserved), then u64 slots;
 * in-place writers hold a shared OFD lock on byte <slot> (the mapper: exclusive) */
#define ARCHIP_MAPGEN_HEADER 64
#define ARCHIP_MAPGEN_SLOTS 4096u
/* fence file BLOCKS/fences/<uid>: generation u64 at 0; writers lock byte base + tid */
#define ARCHIP_FENCE_LOCK_BASE 65536

#endif

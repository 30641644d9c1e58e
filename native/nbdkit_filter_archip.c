/* archip-fast: an nbdkit filter that serves pread/pwrite of known blocks in C.
 *
 * Usage: nbdkit --filter=/path/archip-fast.so python plugin.py backend=peer ...
 *
 * Why: with the Python plugin, each NBD request pays nbdkit's C<->Python glue and
 * a GIL handoff (about half the time, py-spy), even when the plugin's map cache
 * (archipelago/nbd/peer_cache.py) answers it with a plain pread of an object file.
 * This filter does that pread/pwrite itself, with the same coherence protocol
 * (docs/fastpath.md, archipelago/blockaccess), and sends everything else down to the plugin.
 *
 * Where the entries come from: the plugin and this filter live in one process.
 * The plugin's cache publishes each locate answer here (archip_cf_publish, called
 * through ctypes; the load hook sets ARCHIPELAGO_NBD_CFILTER to this file's path
 * so the plugin finds it): per volume, the generation the entries are valid for
 * and, per block, the object file ("" = hole) and whether the volume owns it.
 *
 * Correctness never depends on this filter: any doubt (no entry, generation moved,
 * request across blocks, a file gone, a snapshot holding the slot lock, a whole
 * zero block) forwards the request to the plugin, which is always right.
 * - read: the generation is read before and after the pread (seqlock style);
 * - write: only into owned blocks, under a shared OFD lock of the volume's slot
 *   byte in the mapgen file, with the generation rechecked inside the lock (the
 *   mapper bumps it and then takes the byte exclusively around snapshot/resize);
 *   the lock is kept across writes while they come and nothing moved (the write
 *   hold, archip_fast_hold.c), not taken per request;
 * - durability: FUA writes are fdatasynced at once, others on the next flush,
 *   before the plugin's flush;
 * - fencing (archipelago/blocker/fence.py, docs/fencing.md): a write also holds a
 *   shared OFD lock on byte FENCE_LOCK_BASE + thread id of the map's fence file and
 *   checks the writer generation the plugin published (archip_cf_fence); a volume
 *   without a published fence never gets an in-place write, and a stale generation
 *   fails the write (EIO: NBD has no ESTALE; another host took the volume over).
 *
 * This file is the nbdkit glue (callbacks, registration); the map cache, the
 * coherence protocol and the ctypes API are in archip_fast_map.c (archip_fast.h).
 */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "archip_fast.h" /* the map cache half: archip_fast_map.c */

static void cf_load(void)
{
  Dl_info info;
  if (dladdr((void *)cf_load, &info) && info.dli_fname)
    setenv("ARCHIPELAGO_NBD_CFILTER", info.dli_fname, 1);
}
static void cf_unload(void)
{
  af_hold_stop(); /* the watcher thread runs this .so's code */
}

/* ---- filter callbacks ---- */

static void *cf_open(nbdkit_next_open *next, nbdkit_context *ctx, int readonly,
                     const char *exportname, int is_tls)
{
  (void)is_tls;
  if (next(ctx, readonly, exportname) == -1)
    return NULL;
  struct handle *h = calloc(1, sizeof *h);
  if (h == NULL || (h->name = strdup(exportname)) == NULL) {
    free(h);
    nbdkit_error("archip-fast: out of memory");
    return NULL;
  }
  return h;
}

static void cf_close(void *handle)
{
  struct handle *h = handle;
  free(h->name);
  free(h);
}

static int miss(void)
{
  __atomic_add_fetch(&n_miss, 1, __ATOMIC_RELAXED);
  return -1;
}

static int fast_pread(struct handle *h, char *buf, uint32_t count, uint64_t offset)
{
  int fd, tmp, owned;
  uint64_t gen, o;
  struct vol *v;
  if (af_lookup(h, offset, count, &fd, &tmp, &owned, &gen, &o, &v) != 0)
    return miss();
  size_t done = 0;
  while (fd >= 0 && done < count) {
    ssize_t n = pread(fd, buf + done, count - done, (off_t)(o + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      af_done_with(v, fd, tmp);
      return miss(); /* an I/O error: let the plugin report (or retry) it */
    }
    if (n == 0)
      break;
    done += (size_t)n;
  }
  af_done_with(v, fd, tmp);
  if (done < count) /* holes, short objects: what is not stored reads as zeros */
    memset(buf + done, 0, count - done);
  if (af_gen_of(v->slot) != gen)
    return miss(); /* entries changed while we read: the plugin answers */
  __atomic_add_fetch(&n_rhit, 1, __ATOMIC_RELAXED);
  return 0;
}

static int cf_pread(nbdkit_next *next, void *handle, void *buf, uint32_t count,
                    uint64_t offset, uint32_t flags, int *err)
{
  if (fast_pread(handle, buf, count, offset) == 0)
    return 0;
  return next->pread(next, buf, count, offset, flags, err);
}

static int all_zero(const char *p, uint32_t n)
{
  return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* 0: written; 1: not handled (nothing written); -1: I/O error (*err set). */
static int fast_pwrite(struct handle *h, const char *buf, uint32_t count, uint64_t offset,
                       int fua, int *err)
{
  int fd, tmp, owned;
  uint64_t gen, o;
  struct vol *v;
  if (af_lookup(h, offset, count, &fd, &tmp, &owned, &gen, &o, &v) != 0)
    return 1;
  int r = 1, entered = 0;
  struct entry *e = &v->ents[offset / v->bs]; /* stable while we hold the read lock */
  if (!owned || fd < 0)
    goto out; /* hole or shared block: the mapper allocates / copies up */
  if (o == 0 && count == v->bs && all_zero(buf, count))
    goto out; /* a whole zero block becomes a zero entry in the mapper */
  /* the slot and fence locks, generations checked inside them (archip_fast_hold.c) */
  int f = af_hold_enter(v, gen);
  if (f > 0)
    goto out; /* a snapshot or resize holds the volume, no fence known, ... */
  r = -1;
  if (f < 0) {
    /* NBD has no ESTALE (nbdkit would send EINVAL): the guest sees an I/O error */
    nbdkit_error("archip-fast: volume %s: this writer was fenced (its lock was taken over)",
                 v->name);
    *err = EIO;
    goto out;
  }
  entered = 1;
  size_t done = 0;
  while (done < count) {
    ssize_t n = pwrite(fd, buf + done, count - done, (off_t)(o + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      *err = n < 0 ? errno : EIO;
      goto out;
    }
    done += (size_t)n;
  }
  if (fua ? fdatasync(fd) != 0 : af_add_dirty(e) != 0) {
    *err = fua ? errno : ENOMEM;
    goto out;
  }
  r = 0;
out:
  if (entered)
    af_hold_leave(v);
  af_done_with(v, fd, tmp);
  return r;
}

static int cf_pwrite(nbdkit_next *next, void *handle, const void *buf, uint32_t count,
                     uint64_t offset, uint32_t flags, int *err)
{
  int r = fast_pwrite(handle, buf, count, offset, (flags & NBDKIT_FLAG_FUA) != 0, err);
  if (r == 0) {
    __atomic_add_fetch(&n_whit, 1, __ATOMIC_RELAXED);
    return 0;
  }
  if (r < 0) {
    nbdkit_error("archip-fast: in-place write failed: %s", strerror(*err));
    return -1;
  }
  miss();
  return next->pwrite(next, buf, count, offset, flags, err);
}

static int cf_flush(nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  (void)handle;
  int r = af_sync_dirty(err);
  if (r != 0) {
    nbdkit_error("archip-fast: fdatasync failed: %s", strerror(*err));
    return -1;
  }
  return next->flush(next, flags, err);
}

static struct nbdkit_filter filter = {
  .name = "archip-fast",
  .longname = "archipelago fast path (pread/pwrite of known blocks in C)",
  .load = cf_load,
  .unload = cf_unload,
  .open = cf_open,
  .close = cf_close,
  .pread = cf_pread,
  .pwrite = cf_pwrite,
  .flush = cf_flush,
};

NBDKIT_REGISTER_FILTER (filter)

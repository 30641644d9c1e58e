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
 * - durability: FUA writes are fdatasynced at once, others on the next flush,
 *   before the plugin's flush;
 * - fencing (archipelago/blocker/fence.py, docs/fencing.md): a write also holds a
 *   shared OFD lock on byte FENCE_LOCK_BASE + thread id of the map's fence file and
 *   checks the writer generation the plugin published (archip_cf_fence); a volume
 *   without a published fence never gets an in-place write, and a stale generation
 *   fails the write with ESTALE (another host took the volume over).
 */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "archip_layout.h" /* the layouts shared with Python, checked by a test */

#define EXPORT __attribute__((visibility("default")))
#define PAGE_HEADER ARCHIP_MAPGEN_HEADER
#define PAGE_SLOTS ARCHIP_MAPGEN_SLOTS
#define PAGE_SIZE_BYTES (PAGE_HEADER + 8 * PAGE_SLOTS)
#define MAX_PATH 4096
#define FENCE_LOCK_BASE ARCHIP_FENCE_LOCK_BASE

struct entry {
  char *path; /* NULL: unknown; "": hole (reads as zeros) */
  int owned;
  int fd1; /* cached descriptor + 1 (0: none); closed only under the write lock */
};

/* Descriptors kept open at most (beyond: one open per request). */
#define MAX_CACHED_FDS 256
static int n_cached;

struct vol {
  struct vol *next;
  char *name;
  uint32_t slot;
  uint64_t bs;
  uint64_t gen; /* generation the entries are valid for */
  struct entry *ents;
  size_t nents;
  pthread_rwlock_t lock;
  int fence_fd1;      /* fence file descriptor + 1 (0: no fence: no in-place writes) */
  uint64_t fence_gen; /* writer generation the plugin's mapper was granted */
};

struct handle {
  char *name;
  struct vol *vol;
};

static pthread_mutex_t vols_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vol *vols;
static const volatile uint64_t *slots; /* the mapgen page's counters, read-only */
static char page_path[MAX_PATH];

/* file descriptions for writer locks (OFD locks of one description merge) */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool[64];
static int npool;

/* paths written without FUA since the last flush */
static pthread_mutex_t dirty_mu = PTHREAD_MUTEX_INITIALIZER;
static char **dirty;
static size_t ndirty, capdirty;

static uint64_t n_rhit, n_whit, n_miss;

static void cf_load(void)
{
  Dl_info info;
  if (dladdr((void *)cf_load, &info) && info.dli_fname)
    setenv("ARCHIPELAGO_NBD_CFILTER", info.dli_fname, 1);
}

/* ---- API for the plugin (ctypes) ---- */

EXPORT int archip_cf_page(const char *path)
{
  int r = 0;
  pthread_mutex_lock(&vols_mu);
  if (slots == NULL || strcmp(path, page_path) != 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      r = -errno;
    } else {
      void *p = mmap(NULL, PAGE_SIZE_BYTES, PROT_READ, MAP_SHARED, fd, 0);
      close(fd);
      if (p == MAP_FAILED) {
        r = -errno;
      } else {
        /* an old mapping is never unmapped: a reader may still hold it */
        snprintf(page_path, sizeof page_path, "%s", path);
        pthread_mutex_lock(&pool_mu);
        while (npool > 0)
          close(pool[--npool]);
        pthread_mutex_unlock(&pool_mu);
        __atomic_store_n(&slots, (const volatile uint64_t *)((char *)p + PAGE_HEADER),
                         __ATOMIC_RELEASE);
      }
    }
  }
  pthread_mutex_unlock(&vols_mu);
  return r;
}

static struct vol *find_vol(const char *name)
{
  struct vol *v;
  for (v = __atomic_load_n(&vols, __ATOMIC_ACQUIRE); v; v = v->next)
    if (strcmp(v->name, name) == 0)
      return v;
  return NULL;
}

static void drop_fd(struct entry *e)
{
  if (e->fd1 > 0) {
    close(e->fd1 - 1);
    e->fd1 = 0;
    __atomic_sub_fetch(&n_cached, 1, __ATOMIC_RELAXED);
  }
}

static void clear_entries(struct vol *v)
{
  for (size_t i = 0; i < v->nents; i++) {
    free(v->ents[i].path);
    v->ents[i].path = NULL;
    drop_fd(&v->ents[i]);
  }
}

/* Entries of blocks [first, first+n) of volume `name`, valid at generation `gen`. */
EXPORT int archip_cf_publish(const char *name, uint32_t slot, uint64_t bs, uint64_t gen,
                             uint64_t first, uint32_t n, const char *const *paths,
                             const unsigned char *owned)
{
  if (slot >= PAGE_SLOTS || bs == 0)
    return -EINVAL;
  pthread_mutex_lock(&vols_mu);
  struct vol *v = find_vol(name);
  if (v == NULL) {
    /* volumes are never freed: handles keep pointers to them */
    v = calloc(1, sizeof *v);
    if (v == NULL || (v->name = strdup(name)) == NULL) {
      free(v);
      pthread_mutex_unlock(&vols_mu);
      return -ENOMEM;
    }
    v->slot = slot;
    v->bs = bs;
    v->gen = UINT64_MAX;
    /* readers hold it only to copy one entry; let a publish in under a read storm */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&v->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    v->next = vols;
    __atomic_store_n(&vols, v, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&vols_mu);

  int r = 0;
  pthread_rwlock_wrlock(&v->lock);
  /* generations only grow (the page is never truncated, a new mapper bumps every
   * slot): an answer older than what we hold lost a race with a newer one */
  if (v->gen != UINT64_MAX && gen < v->gen && v->bs == bs && v->slot == slot)
    goto out;
  if (v->gen != gen || v->bs != bs || v->slot != slot) {
    clear_entries(v);
    v->gen = gen;
    v->bs = bs;
    v->slot = slot;
  }
  if (first + n > v->nents) {
    size_t want = (size_t)(first + n);
    struct entry *e = realloc(v->ents, want * sizeof *e);
    if (e == NULL) {
      r = -ENOMEM;
      goto out;
    }
    memset(e + v->nents, 0, (want - v->nents) * sizeof *e);
    v->ents = e;
    v->nents = want;
  }
  for (uint32_t k = 0; k < n; k++) {
    struct entry *e = &v->ents[first + k];
    free(e->path);
    drop_fd(e);
    e->path = strdup(paths[k]);
    e->owned = owned[k] != 0;
  }
out:
  pthread_rwlock_unlock(&v->lock);
  return r;
}

/* The fence of volume `name` (published after its entries): file and generation. */
EXPORT int archip_cf_fence(const char *name, const char *path, uint64_t gen)
{
  pthread_mutex_lock(&vols_mu);
  struct vol *v = find_vol(name);
  pthread_mutex_unlock(&vols_mu);
  if (v == NULL)
    return -ENOENT;
  int fd = -1;
  if (path != NULL && path[0] != 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return -errno;
  pthread_rwlock_wrlock(&v->lock);
  if (v->fence_fd1 > 0)
    close(v->fence_fd1 - 1);
  v->fence_fd1 = fd + 1;
  v->fence_gen = gen;
  pthread_rwlock_unlock(&v->lock);
  return 0;
}

/* 0: the fence holds `gen` (byte locked: release with fence_unlock); 1: no fence
 * (or no lock); -1: fenced (stale generation), nothing held. */
static int fence_lock(struct vol *v, off_t *byte)
{
  int fd = v->fence_fd1 - 1;
  if (fd < 0)
    return 1;
  *byte = FENCE_LOCK_BASE + (off_t)gettid();
  struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = *byte, .l_len = 1 };
  if (fcntl(fd, F_OFD_SETLKW, &fl) != 0)
    return 1;
  uint64_t cur = 0;
  if (pread(fd, &cur, sizeof cur, 0) < 0 || cur != v->fence_gen) {
    fl.l_type = F_UNLCK;
    fcntl(fd, F_OFD_SETLK, &fl);
    return -1;
  }
  return 0;
}

static void fence_unlock(struct vol *v, off_t byte)
{
  struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
  fcntl(v->fence_fd1 - 1, F_OFD_SETLK, &fl);
}

/* Drop what is known of `name` (its last connection closed): cached descriptors
 * would otherwise keep removed objects' space allocated. */
EXPORT void archip_cf_forget(const char *name)
{
  pthread_mutex_lock(&vols_mu);
  struct vol *v = find_vol(name);
  pthread_mutex_unlock(&vols_mu);
  if (v == NULL)
    return;
  pthread_rwlock_wrlock(&v->lock);
  clear_entries(v);
  v->gen = UINT64_MAX;
  if (v->fence_fd1 > 0)
    close(v->fence_fd1 - 1);
  v->fence_fd1 = 0;
  pthread_rwlock_unlock(&v->lock);
}

/* hits of reads, hits of writes, requests sent down to the plugin */
EXPORT void archip_cf_stats(uint64_t out[3])
{
  out[0] = __atomic_load_n(&n_rhit, __ATOMIC_RELAXED);
  out[1] = __atomic_load_n(&n_whit, __ATOMIC_RELAXED);
  out[2] = __atomic_load_n(&n_miss, __ATOMIC_RELAXED);
}

/* ---- helpers ---- */

static uint64_t gen_of(uint32_t slot)
{
  const volatile uint64_t *s = __atomic_load_n(&slots, __ATOMIC_ACQUIRE);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return s[slot];
}

/* The entry of the block holding [offset, offset+count), if it is known at the
 * current generation (*gen): returns 0 with the volume's read lock held (the caller
 * unlocks *vp after its I/O: cached descriptors are closed only under the write
 * lock) and *fd = a descriptor of the object (-1: a hole), to be closed by the
 * caller if *tmp; else -1, nothing held. */
static int lookup(struct handle *h, uint64_t offset, uint32_t count, int *fd, int *tmp,
                  int *owned, uint64_t *gen, uint64_t *boff, struct vol **vp)
{
  if (slots == NULL || count == 0)
    return -1;
  struct vol *v = __atomic_load_n(&h->vol, __ATOMIC_ACQUIRE);
  if (v == NULL) {
    if ((v = find_vol(h->name)) == NULL)
      return -1;
    __atomic_store_n(&h->vol, v, __ATOMIC_RELEASE); /* the same value from any thread */
  }
  pthread_rwlock_rdlock(&v->lock);
  uint64_t bs = v->bs, blk = offset / bs;
  *boff = offset % bs;
  if (blk != (offset + count - 1) / bs || blk >= v->nents || v->ents[blk].path == NULL)
    goto miss;
  *gen = gen_of(v->slot);
  if (*gen != v->gen)
    goto miss;
  struct entry *e = &v->ents[blk];
  *owned = e->owned;
  *tmp = 0;
  *fd = -1;
  if (e->path[0] == '\0')
    goto hit;
  int fd1 = __atomic_load_n(&e->fd1, __ATOMIC_ACQUIRE);
  if (fd1 > 0) {
    *fd = fd1 - 1;
    goto hit;
  }
  int nfd = open(e->path, (e->owned ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (nfd < 0)
    goto miss; /* zeroed or removed meanwhile */
  if (__atomic_add_fetch(&n_cached, 1, __ATOMIC_RELAXED) > MAX_CACHED_FDS) {
    __atomic_sub_fetch(&n_cached, 1, __ATOMIC_RELAXED);
    *fd = nfd;
    *tmp = 1;
    goto hit;
  }
  int zero = 0;
  if (__atomic_compare_exchange_n(&e->fd1, &zero, nfd + 1, 0, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE)) {
    *fd = nfd;
  } else { /* another thread cached one first */
    close(nfd);
    __atomic_sub_fetch(&n_cached, 1, __ATOMIC_RELAXED);
    *fd = zero - 1;
  }
hit:
  *vp = v;
  return 0;
miss:
  pthread_rwlock_unlock(&v->lock);
  return -1;
}

static void done_with(struct vol *v, int fd, int tmp)
{
  pthread_rwlock_unlock(&v->lock);
  if (tmp)
    close(fd);
}

static int lock_slot(uint32_t slot)
{
  int fd = -1;
  pthread_mutex_lock(&pool_mu);
  if (npool > 0)
    fd = pool[--npool];
  pthread_mutex_unlock(&pool_mu);
  if (fd < 0 && (fd = open(page_path, O_RDONLY | O_CLOEXEC)) < 0)
    return -1;
  struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = slot, .l_len = 1 };
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
    return fd;
  close(fd);
  return -1;
}

static void unlock_slot(int fd, uint32_t slot)
{
  struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = slot, .l_len = 1 };
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    close(fd); /* closing drops the lock too */
    return;
  }
  pthread_mutex_lock(&pool_mu);
  if (npool < (int)(sizeof pool / sizeof pool[0])) {
    pool[npool++] = fd;
    fd = -1;
  }
  pthread_mutex_unlock(&pool_mu);
  if (fd >= 0)
    close(fd);
}

static int add_dirty(const char *path)
{
  int r = 0;
  pthread_mutex_lock(&dirty_mu);
  /* newest first: a run of writes to one block is the common case */
  for (size_t i = ndirty; i > 0; i--)
    if (strcmp(dirty[i - 1], path) == 0)
      goto out;
  if (ndirty == capdirty) {
    size_t cap = capdirty ? 2 * capdirty : 64;
    char **d = realloc(dirty, cap * sizeof *d);
    if (d == NULL) {
      r = -1;
      goto out;
    }
    dirty = d;
    capdirty = cap;
  }
  if ((dirty[ndirty] = strdup(path)) == NULL)
    r = -1;
  else
    ndirty++;
out:
  pthread_mutex_unlock(&dirty_mu);
  return r;
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
  if (lookup(h, offset, count, &fd, &tmp, &owned, &gen, &o, &v) != 0)
    return miss();
  size_t done = 0;
  while (fd >= 0 && done < count) {
    ssize_t n = pread(fd, buf + done, count - done, (off_t)(o + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      done_with(v, fd, tmp);
      return miss(); /* an I/O error: let the plugin report (or retry) it */
    }
    if (n == 0)
      break;
    done += (size_t)n;
  }
  done_with(v, fd, tmp);
  if (done < count) /* holes, short objects: what is not stored reads as zeros */
    memset(buf + done, 0, count - done);
  if (gen_of(v->slot) != gen)
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
  if (lookup(h, offset, count, &fd, &tmp, &owned, &gen, &o, &v) != 0)
    return 1;
  int r = 1, lfd = -1, fenced = 0;
  off_t fbyte = 0;
  const char *path = v->ents[offset / v->bs].path; /* stable while we hold the read lock */
  if (!owned || fd < 0)
    goto out; /* hole or shared block: the mapper allocates / copies up */
  if (o == 0 && count == v->bs && all_zero(buf, count))
    goto out; /* a whole zero block becomes a zero entry in the mapper */
  if ((lfd = lock_slot(v->slot)) < 0)
    goto out; /* a snapshot or resize holds the volume */
  if (gen_of(v->slot) != gen)
    goto out;
  int f = fence_lock(v, &fbyte);
  if (f > 0)
    goto out; /* no fence known: the plugin's mapper path checks it */
  r = -1;
  if (f < 0) {
    /* NBD has no ESTALE (nbdkit would send EINVAL): the guest sees an I/O error */
    nbdkit_error("archip-fast: volume %s: this writer was fenced (its lock was taken over)",
                 v->name);
    *err = EIO;
    goto out;
  }
  fenced = 1;
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
  if (fua ? fdatasync(fd) != 0 : add_dirty(path) != 0) {
    *err = fua ? errno : ENOMEM;
    goto out;
  }
  r = 0;
out:
  if (fenced)
    fence_unlock(v, fbyte);
  if (lfd >= 0)
    unlock_slot(lfd, v->slot);
  done_with(v, fd, tmp);
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
  pthread_mutex_lock(&dirty_mu);
  char **d = dirty;
  size_t n = ndirty;
  dirty = NULL;
  ndirty = capdirty = 0;
  pthread_mutex_unlock(&dirty_mu);
  int r = 0;
  for (size_t i = 0; i < n; i++) {
    int fd = open(d[i], O_RDONLY | O_CLOEXEC);
    if (fd >= 0) { /* gone: zeroed or removed since, nothing of ours left */
      if (fdatasync(fd) != 0 && r == 0) {
        *err = errno;
        r = -1;
      }
      close(fd);
    }
    free(d[i]);
  }
  free(d);
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
  .open = cf_open,
  .close = cf_close,
  .pread = cf_pread,
  .pwrite = cf_pwrite,
  .flush = cf_flush,
};

NBDKIT_REGISTER_FILTER (filter)

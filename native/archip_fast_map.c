/* archip-fast, the map cache half: what the plugin published (per volume, the
 * generation its entries are valid for and, per block, the object file and whether the
 * volume owns it), looked up under the coherence protocol of docs/fastpath.md: the
 * generation page and the dirty list (the slot and fence locks: archip_fast_hold.c). The ctypes
 * API the plugin calls (cfilter.py: archip_cf_*) is here too. No nbdkit calls. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "archip_fast.h"

/* Descriptors kept open at most (beyond: one open per request). */
#define MAX_CACHED_FDS 256
static int n_cached;

static pthread_mutex_t vols_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vol *vols;
static char page_path[MAX_PATH];

/* paths written without FUA since the last flush; an entry notes the epoch it was
 * listed in, so a write to a listed block takes no lock (epoch: 1, 2, ..., never 0) */
static pthread_mutex_t dirty_mu = PTHREAD_MUTEX_INITIALIZER;
static char **dirty;
static size_t ndirty, capdirty;
static uint32_t dirty_epoch = 1;

uint64_t n_rhit, n_whit, n_miss;
const volatile uint64_t *af_slots; /* the mapgen page's counters, read-only */


/* ---- API for the plugin (ctypes) ---- */

EXPORT int archip_cf_page(const char *path)
{
  int r = 0;
  pthread_mutex_lock(&vols_mu);
  if (af_slots == NULL || strcmp(path, page_path) != 0) {
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
        __atomic_store_n(&af_slots, (const volatile uint64_t *)((char *)p + PAGE_HEADER),
                         __ATOMIC_RELEASE);
        for (struct vol *v = vols; v; v = v->next) { /* their slot locks are on the old page */
          pthread_rwlock_wrlock(&v->lock);
          af_hold_release(v);
          pthread_rwlock_unlock(&v->lock);
        }
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

struct vol *af_vols(void)
{
  return __atomic_load_n(&vols, __ATOMIC_ACQUIRE);
}

/* A new description of the page (for a slot byte lock), or -1. */
int af_page_open(void)
{
  return open(page_path, O_RDONLY | O_CLOEXEC);
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
    v->ents[i].dirty = 0;
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
    af_hold_init(v);
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
    e->dirty = 0;
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
  af_hold_release(v); /* before its fence byte's description goes */
  af_fence_unmap(v);
  if (v->fence_fd1 > 0)
    close(v->fence_fd1 - 1);
  v->fence_fd1 = fd + 1;
  v->fence_gen = gen;
  if (fd >= 0)
    af_fence_map(v, fd); /* unmapped (a file too short): no in-place writes */
  pthread_rwlock_unlock(&v->lock);
  return 0;
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
  af_hold_release(v);
  clear_entries(v);
  v->gen = UINT64_MAX;
  af_fence_unmap(v);
  if (v->fence_fd1 > 0)
    close(v->fence_fd1 - 1);
  v->fence_fd1 = 0;
  pthread_rwlock_unlock(&v->lock);
}

/* hits of reads, hits of writes, requests sent down to the plugin, write holds taken */
EXPORT void archip_cf_stats(uint64_t out[4])
{
  out[0] = __atomic_load_n(&n_rhit, __ATOMIC_RELAXED);
  out[1] = __atomic_load_n(&n_whit, __ATOMIC_RELAXED);
  out[2] = __atomic_load_n(&n_miss, __ATOMIC_RELAXED);
  out[3] = __atomic_load_n(&n_holds, __ATOMIC_RELAXED);
}

/* ---- helpers ---- */

/* The entry of the block holding [offset, offset+count), if it is known at the
 * current generation (*gen): returns 0 with the volume's read lock held (the caller
 * unlocks *vp after its I/O: cached descriptors are closed only under the write
 * lock) and *fd = a descriptor of the object (-1: a hole), to be closed by the
 * caller if *tmp; else -1, nothing held. */
int af_lookup(struct handle *h, uint64_t offset, uint32_t count, int *fd, int *tmp,
              int *owned, uint64_t *gen, uint64_t *boff, struct vol **vp)
{
  if (af_slots == NULL || count == 0)
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
  *gen = af_gen_of(v->slot);
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

void af_done_with(struct vol *v, int fd, int tmp)
{
  pthread_rwlock_unlock(&v->lock);
  if (tmp)
    close(fd);
}

/* List the file of `e` (the caller holds its volume's read lock) for the next flush. */
int af_add_dirty(struct entry *e)
{
  /* listed in the current epoch: the next flush takes that list (see af_sync_dirty) */
  if (__atomic_load_n(&e->dirty, __ATOMIC_ACQUIRE) ==
      __atomic_load_n(&dirty_epoch, __ATOMIC_ACQUIRE))
    return 0;
  int r = 0;
  pthread_mutex_lock(&dirty_mu);
  if (e->dirty == dirty_epoch)
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
  if ((dirty[ndirty] = strdup(e->path)) == NULL) {
    r = -1;
  } else {
    ndirty++;
    __atomic_store_n(&e->dirty, dirty_epoch, __ATOMIC_RELEASE);
  }
out:
  pthread_mutex_unlock(&dirty_mu);
  return r;
}

/* fdatasync every file written without FUA since the last call (before the plugin's
 * flush); 0, or -1 with *err set (the others are still synced). */
int af_sync_dirty(int *err)
{
  pthread_mutex_lock(&dirty_mu);
  char **d = dirty;
  size_t n = ndirty;
  dirty = NULL;
  ndirty = capdirty = 0;
  /* a write acknowledged before this flush either listed its file in the list taken
   * here or saw it listed there (its entry's epoch equal to this one) */
  uint32_t next = dirty_epoch + 1;
  __atomic_store_n(&dirty_epoch, next ? next : 1, __ATOMIC_RELEASE);
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
  return r;
}

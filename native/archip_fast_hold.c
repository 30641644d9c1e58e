/* archip-fast, the write hold: the two locks an in-place write needs (a shared OFD lock
 * on the volume's slot byte of the mapgen page, rule 5; a shared OFD lock on a byte of
 * the map's fence file, rule 6; docs/fastpath.md) kept across writes, one hold per
 * volume and process, instead of four fcntl calls and a pread per request (that was
 * a fifth of nbdkit's CPU at QD32 with perf, more than the pwrite itself).
 *
 * A write enters the hold without a syscall when the hold is valid for the generation
 * of its entries, the slot's counter still has that value and the fence file still
 * holds the granted generation; then it counts itself in `users` until its pwrite is
 * done. Anything else takes the slow path, under the hold mutex: drop a stale hold,
 * take the locks and check both generations inside them (as the per-request protocol
 * did). Dropping a hold stops new entries first (held = 0), then waits for the
 * writers inside, then unlocks: a write checked before the mapper's bump lands before
 * the mapper gets the byte, as before.
 *
 * Why it cannot starve or stall the mapper:
 * - a watcher thread (started with the first hold, asleep while none is held) polls
 *   every HOLD_POLL_NS and drops a hold whose slot counter or fence generation moved,
 *   or that served no write during a poll period (idle);
 * - while a snapshot or resize waits for the byte (and runs) the slot counter is odd
 *   (coherence.GenPage.exclusive); no hold is taken at an odd generation, so the
 *   mapper's polling is not raced by new holders;
 * - the fencer bumps, then polls for its lock: the watcher (and every write) sees the
 *   new generation in the mapped fence file and lets go.
 * A killed process's locks go with its file descriptions, as before. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archip_fast.h"

#define HOLD_POLL_NS 1000000L /* 1 ms: the longest a snapshot or fencer waits for us */

static pthread_mutex_t w_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t w_cv = PTHREAD_COND_INITIALIZER;
static int w_started, w_nheld, w_stop;
static pthread_t w_thread;

uint64_t n_holds; /* holds taken (a counter for tests and stats) */

void af_hold_init(struct vol *v)
{
  pthread_mutex_init(&v->hmu, NULL);
  v->hfd = -1;
}

/* The fence file still holds the granted generation (a plain load of the mapping:
 * the authoritative check is the pread under the lock when the hold is taken). */
static int fence_current(const struct vol *v)
{
  const volatile uint64_t *f = v->fence_map;
  return f != NULL && *f == v->fence_gen;
}

/* Map the fence file (fd) read-only for fence_current: 0, or -1 (too short: no holds). */
int af_fence_map(struct vol *v, int fd)
{
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(uint64_t))
    return -1;
  void *p = mmap(NULL, sizeof(uint64_t), PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return -1;
  v->fence_map = p;
  return 0;
}

void af_fence_unmap(struct vol *v)
{
  if (v->fence_map != NULL)
    munmap((void *)v->fence_map, sizeof(uint64_t));
  v->fence_map = NULL;
}

/* Stop new entries, wait for the writers inside, unlock. Under v->hmu. */
static void release_locked(struct vol *v)
{
  if (!__atomic_load_n(&v->held, __ATOMIC_SEQ_CST))
    return;
  __atomic_store_n(&v->held, 0, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&v->users, __ATOMIC_SEQ_CST) != 0)
    sched_yield(); /* writers between their check and the end of their pwrite */
  struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = v->hbyte, .l_len = 1 };
  if (v->fence_fd1 > 0)
    fcntl(v->fence_fd1 - 1, F_OFD_SETLK, &fl);
  close(v->hfd); /* drops the slot byte lock */
  v->hfd = -1;
  pthread_mutex_lock(&w_mu);
  w_nheld--;
  pthread_mutex_unlock(&w_mu);
}

/* Drop the hold of v (the caller holds v->lock, read or write). */
void af_hold_release(struct vol *v)
{
  pthread_mutex_lock(&v->hmu);
  release_locked(v);
  pthread_mutex_unlock(&v->hmu);
}

static void *watcher(void *arg)
{
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&w_mu);
    while (w_nheld == 0 && !w_stop)
      pthread_cond_wait(&w_cv, &w_mu);
    int stop = w_stop;
    pthread_mutex_unlock(&w_mu);
    if (stop)
      break;
    struct timespec ts = { 0, HOLD_POLL_NS };
    nanosleep(&ts, NULL);
    for (struct vol *v = af_vols(); v; v = v->next) {
      if (!__atomic_load_n(&v->held, __ATOMIC_ACQUIRE))
        continue;
      /* the same lock order as writers: the volume's, then the hold's */
      pthread_rwlock_rdlock(&v->lock);
      pthread_mutex_lock(&v->hmu);
      uint64_t seq = __atomic_load_n(&v->hseq, __ATOMIC_RELAXED);
      if (v->held && (seq == v->hseen || af_gen_of(v->slot) != v->hgen || !fence_current(v)))
        release_locked(v);
      v->hseen = seq;
      pthread_mutex_unlock(&v->hmu);
      pthread_rwlock_unlock(&v->lock);
    }
  }
  return NULL;
}

/* Take the locks and check the generations inside them. Under v->hmu, not held. */
static int acquire_locked(struct vol *v, uint64_t gen)
{
  if (gen & 1)
    return 1; /* a snapshot or resize waits for (or holds) the slot byte */
  int ffd = v->fence_fd1 - 1;
  if (ffd < 0 || v->fence_map == NULL)
    return 1; /* no fence known: the plugin's mapper path checks it */
  int fd = af_page_open();
  if (fd < 0)
    return 1;
  struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = v->slot, .l_len = 1 };
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0 || af_gen_of(v->slot) != gen) {
    close(fd);
    return 1;
  }
  off_t byte = FENCE_LOCK_BASE + (off_t)gettid();
  struct flock ff = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
  if (fcntl(ffd, F_OFD_SETLKW, &ff) != 0) {
    close(fd);
    return 1;
  }
  uint64_t cur = 0;
  if (pread(ffd, &cur, sizeof cur, 0) != (ssize_t)sizeof cur || cur != v->fence_gen) {
    ff.l_type = F_UNLCK;
    fcntl(ffd, F_OFD_SETLK, &ff);
    close(fd);
    return -1;
  }
  v->hfd = fd;
  v->hbyte = byte;
  v->hgen = gen;
  __atomic_add_fetch(&n_holds, 1, __ATOMIC_RELAXED);
  __atomic_store_n(&v->held, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_lock(&w_mu);
  if (w_nheld++ == 0)
    pthread_cond_signal(&w_cv);
  if (!w_started) {
    w_started = !w_stop && pthread_create(&w_thread, NULL, watcher, NULL) == 0;
  }
  pthread_mutex_unlock(&w_mu);
  if (!w_started) {
    release_locked(v); /* nobody would let go of it */
    return 1;
  }
  return 0;
}

/* Enter an in-place write of v, whose entries are valid at `gen` (the caller holds
 * v->lock for reading): 0: entered, af_hold_leave after the write; 1: not now (the
 * plugin writes); -1: this writer was fenced. */
int af_hold_enter(struct vol *v, uint64_t gen)
{
  __atomic_add_fetch(&v->users, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&v->held, __ATOMIC_SEQ_CST) && v->hgen == gen &&
      af_gen_of(v->slot) == gen && fence_current(v)) {
    __atomic_add_fetch(&v->hseq, 1, __ATOMIC_RELAXED);
    return 0;
  }
  __atomic_sub_fetch(&v->users, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_lock(&v->hmu);
  int r = 1;
  if (v->held && (v->hgen != af_gen_of(v->slot) || !fence_current(v)))
    release_locked(v);
  if (!v->held)
    r = acquire_locked(v, gen);
  else if (v->hgen == gen)
    r = 0;
  if (r == 0) {
    __atomic_add_fetch(&v->users, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&v->hseq, 1, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&v->hmu);
  return r;
}

void af_hold_leave(struct vol *v)
{
  __atomic_sub_fetch(&v->users, 1, __ATOMIC_SEQ_CST);
}

/* Stop the watcher (nbdkit unloads the filter: its code must not run afterwards).
 * Holds left are dropped with the process's descriptors. */
void af_hold_stop(void)
{
  pthread_mutex_lock(&w_mu);
  w_stop = 1;
  int started = w_started;
  pthread_cond_broadcast(&w_cv);
  pthread_mutex_unlock(&w_mu);
  if (started)
    pthread_join(w_thread, NULL);
}

/* archip-fast internals shared by its two halves: the map cache and coherence protocol
 * (archip_fast_map.c: entries the plugin published, generation checks, the slot and
 * fence locks, the dirty list; the ctypes API) and the nbdkit glue
 * (nbdkit_filter_archip.c: callbacks that use them). The rules: docs/fastpath.md. */
#ifndef ARCHIP_FAST_H
#define ARCHIP_FAST_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
  uint32_t dirty; /* the dirty epoch its path was listed in (0: not listed) */
};

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
  const volatile uint64_t *fence_map; /* the fence file's generation, mapped (or NULL) */
  /* the write hold (archip_fast_hold.c): slot and fence locks kept across writes */
  pthread_mutex_t hmu; /* taking or dropping the hold; after `lock` */
  int held;            /* 1: both locks held, valid at hgen (atomic) */
  int users;           /* writers inside the hold (atomic) */
  int hfd;             /* description holding the slot byte (-1: none) */
  off_t hbyte;         /* fence byte locked on fence_fd1 - 1 */
  uint64_t hgen;       /* slot generation checked under the lock */
  uint64_t hseq, hseen; /* writes that entered; as the watcher last saw them */
};

struct handle {
  char *name;
  struct vol *vol;
};

/* requests served: reads, writes in place, sent down to the plugin */
extern uint64_t n_rhit, n_whit, n_miss, n_holds;
extern const volatile uint64_t *af_slots;

/* The current generation of `slot` (the page is mapped before any entry is known). */
static inline uint64_t af_gen_of(uint32_t slot)
{
  const volatile uint64_t *s = __atomic_load_n(&af_slots, __ATOMIC_ACQUIRE);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return s[slot];
}

int af_lookup(struct handle *h, uint64_t offset, uint32_t count, int *fd, int *tmp,
              int *owned, uint64_t *gen, uint64_t *boff, struct vol **vp);
void af_done_with(struct vol *v, int fd, int tmp);
int af_add_dirty(struct entry *e);
int af_sync_dirty(int *err);
struct vol *af_vols(void);
int af_page_open(void);

/* archip_fast_hold.c */
void af_hold_init(struct vol *v);
int af_hold_enter(struct vol *v, uint64_t gen);
void af_hold_leave(struct vol *v);
void af_hold_release(struct vol *v);
void af_hold_stop(void);
int af_fence_map(struct vol *v, int fd);
void af_fence_unmap(struct vol *v);

#endif

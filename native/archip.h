/* archipelago native core: shared-memory segment layout, lock-free rings,
 * descriptor pool, buffer arena, wakeups, hashing and fd I/O kernels.
 * Everything in the segment is addressed by offsets from its base. */
#ifndef ARCHIP_H
#define ARCHIP_H
#include <stdint.h>
#include <stddef.h>

#define AP_MAGIC 0x474553504948435FULL /* "_CHIPSEG" little-endian */
#define AP_VERSION 2u
#define AP_MAX_CLASSES 8
#define AP_TARGET_MAX 256
#define AP_CODE_MAX 32
#define AP_MSG_MAX 96
#define AP_NONE 0xFFFFFFFFu
#define AP_NOWAKE -2 /* efd argument: do not signal now (batched) */

/* descriptor states */
#define AP_D_FREE 0u
#define AP_D_ALLOC 1u
#define AP_D_SUBMITTED 2u
#define AP_D_COMPLETED 3u
/* port states */
#define AP_P_FREE 0u
#define AP_P_BOUND 1u
#define AP_P_DEAD 2u

/* A buffer class: `count` buffers of `buf_size` at data_off; free ones on a LIFO stack
 * at free_off (the most recently freed buffer is handed out next, so a light load keeps
 * reusing the same few buffers and never commits the rest of the arena's memory). */
struct ap_class {
    uint64_t buf_size, count, data_off, free_off, owner_off;
};

struct ap_header {
    uint64_t magic;
    uint32_t version, header_size;
    uint64_t total_size;
    uint32_t nr_ports, nr_static, nr_desc, ring_cap;
    uint32_t desc_size, port_size, nr_classes, owner_pid;
    uint64_t ports_off, desc_off, desc_ring_off;
    struct ap_class classes[AP_MAX_CLASSES];
};

struct ap_desc {
    uint32_t state;         /* atomic, AP_D_* */
    uint32_t gen;           /* bumped at each allocation */
    uint32_t owner;         /* owning (submitting) port */
    uint32_t owner_gen;     /* owner port's gen at allocation */
    uint32_t dst;           /* server port */
    uint32_t op, flags;
    int32_t err;            /* errno, 0 = success */
    uint64_t req_id;
    uint64_t offset, size, serviced, arg;
    uint64_t buf_off;       /* segment offset of the buffer, 0 = none */
    uint64_t buf_len;       /* buffer capacity */
    uint64_t data_len;      /* payload bytes in the buffer */
    uint32_t buf_handle;    /* class << 24 | index, AP_NONE = none */
    uint16_t target_len, code_len;
    char code[AP_CODE_MAX];
    char msg[AP_MSG_MAX];
    char target[AP_TARGET_MAX];
    char pad[24]; /* 512 bytes */
};

struct ap_config {
    uint32_t nr_ports, nr_static, nr_desc, nr_classes;
    uint64_t buf_size[AP_MAX_CLASSES];
    uint64_t buf_count[AP_MAX_CLASSES];
};

/* layout */
uint64_t ap_seg_size(const struct ap_config *cfg);
int ap_seg_format(char *base, uint64_t size, const struct ap_config *cfg, uint32_t owner_pid);
int ap_seg_check(const char *base, uint64_t size); /* 0, -1 magic, -2 version, -3 size */
struct ap_desc *ap_desc_ptr(char *base, uint32_t idx);
uint64_t ap_port_req_ring(char *base, uint32_t port);
uint64_t ap_port_rep_ring(char *base, uint32_t port);

/* rings: bounded MPMC (Vyukov), values are uint64 */
uint64_t ap_ring_bytes(uint32_t cap);
void ap_ring_init(char *base, uint64_t ring_off, uint32_t cap);
int ap_ring_push(char *base, uint64_t ring_off, uint64_t val);  /* 0 ok, -1 full */
int ap_ring_pop(char *base, uint64_t ring_off, uint64_t *val);  /* 0 ok, -1 empty */
uint64_t ap_ring_count(char *base, uint64_t ring_off);

/* ports */
uint32_t ap_port_state(char *base, uint32_t port);
uint32_t ap_port_pid(char *base, uint32_t port);
uint32_t ap_port_gen(char *base, uint32_t port);
int ap_port_bind(char *base, uint32_t port, uint32_t pid); /* returns new gen or -errno */
int ap_port_bind_dynamic(char *base, uint32_t pid, uint32_t *port_out); /* gen or -errno */
void ap_port_set_state(char *base, uint32_t port, uint32_t state);
/* reclaim a dead port: fail requests queued to it, free what it owns; returns count */
int ap_port_reclaim(char *base, uint32_t port, const int *efds, uint32_t nfds);

/* descriptors and buffers */
int64_t ap_desc_alloc(char *base, uint32_t owner);   /* idx or -1 */
int ap_desc_free(char *base, uint32_t idx, uint32_t expect_state);  /* 0 ok, -1 lost race */
int64_t ap_buf_alloc(char *base, uint64_t size, uint32_t owner);    /* handle or -1 */
uint64_t ap_buf_offset(char *base, uint32_t handle);
uint64_t ap_buf_capacity(char *base, uint32_t handle);
int ap_buf_free(char *base, uint32_t handle, uint32_t expect_owner);
int ap_buf_set_owner(char *base, uint32_t handle, uint32_t from, uint32_t to);
uint64_t ap_desc_free_count(char *base);
uint64_t ap_buf_free_count(char *base, uint32_t cls);
int ap_desc_attach(char *base, uint32_t idx, uint32_t handle);

/* request life; entries in rings are (gen << 32 | idx) */
int ap_submit(char *base, uint32_t idx, uint32_t dst, int efd);  /* 0, -EAGAIN full, -ENOTCONN */
int ap_complete(char *base, uint32_t idx, int efd_owner);        /* 0 replied, 1 dropped */
int ap_fail_local(char *base, uint32_t idx, int err);            /* client-side completion */
int64_t ap_pop_request(char *base, uint32_t port);               /* idx or -1 */
int64_t ap_pop_reply(char *base, uint32_t port);                 /* idx or -1 */
int ap_prepare_sleep(char *base, uint32_t port, int mask); /* mask 1 req, 2 rep; 1 may sleep */
int ap_wake(char *base, uint32_t port, int efd); /* 1 if it signalled the eventfd */
int ap_wait_reply(char *base, uint32_t port, int efd, int regfd, int timeout_ms, int spin);
int ap_wait_fd(int efd, int regfd, int timeout_ms);
int ap_drain_fd(int efd);
int64_t ap_request_new(char *base, uint32_t port, uint32_t op, uint32_t flags, uint64_t offset,
                       uint64_t size, uint64_t arg, uint64_t req_id, const char *target,
                       uint32_t tlen, uint64_t need, const char *payload, uint64_t plen);
int64_t ap_ring_stalled(char *base, uint64_t ring_off);
int ap_ring_tombstone(char *base, uint64_t ring_off, uint64_t pos);
uint32_t ap_ring_offsets(char *base, uint64_t *out, uint32_t max);
/* answers PINGs in C (adding their number to *answered); the next other request's idx or -1 */
int64_t ap_pop_request_fast(char *base, uint32_t port, const int *efds, uint32_t nfds,
                            uint64_t *answered);
int64_t ap_ping_loop(char *base, uint32_t port, uint32_t dst, int efd_dst, int efd_self,
                     int64_t n, int depth, int timeout_ms);
int ap_spin_wait(char *base, uint32_t port, int mask, int usec); /* 1 work, 0 none */

/* batched hot path: one call builds and submits a request (no wake-up: the caller
 * signals once per batch); one call pops up to `max` valid replies into `out` */
int64_t ap_request_submit(char *base, uint32_t port, uint32_t dst, uint32_t op, uint32_t flags,
                          uint64_t offset, uint64_t size, uint64_t arg, uint64_t req_id,
                          const char *target, uint32_t tlen, uint64_t need,
                          const char *payload, uint64_t plen);
/* idx, or AP_E_NODESC/NOBUF/TARGET/FULL/NOTCONN/BADPORT */
#define AP_E_NODESC -1
#define AP_E_NOBUF -2
#define AP_E_TARGET -3
#define AP_E_FULL -4
#define AP_E_NOTCONN -5
#define AP_E_BADPORT -6
int ap_pop_replies(char *base, uint32_t port, int64_t *out, int max);

/* Adaptive bounded spin before sleeping (process-local state, one per port). The budget
 * follows twice the recent wait that a spin caught, never above max_ns; a miss halves
 * it and below min_ns it drops to 0; at 0 only every `probe_every`-th idle moment spins
 * (a probe of max_ns / 2, to outlast one wake-up of the peer), so a port whose peer
 * answers slowly mostly sleeps at once. A spin during
 * which this thread was preempted counts as a miss: the CPU is contended (often by the
 * very peer it waits for), so spinning would steal from it. yield_ns > 0 also yields the
 * CPU that often while spinning (off by default: under load it hands the CPU away). */
struct ap_spin {
    int64_t max_ns, min_ns, yield_ns, budget_ns, ewma_ns;
    uint32_t probe_every, idle;
    uint64_t episodes;   /* spins started */
    uint64_t hits;       /* spins that found work */
    uint64_t skipped;    /* idle moments that slept without spinning */
    uint64_t spun_ns;    /* time spent spinning */
    uint64_t yields;     /* sched_yield calls inside spins */
    uint64_t preempted;  /* spins during which the thread was preempted (backed off) */
    uint64_t over_budget; /* episodes whose plan exceeded max_ns (must stay 0) */
};
void ap_spin_init(struct ap_spin *s, int64_t max_ns);
int64_t ap_spin_plan(struct ap_spin *s);                  /* budget of this idle moment, 0: sleep */
void ap_spin_update(struct ap_spin *s, int hit, int64_t waited_ns);
int ap_spin_adaptive(char *base, uint32_t port, int mask, struct ap_spin *s); /* 1 work, 0 none */

/* kernels */
int ap_is_zero(const void *p, size_t n);
int ap_sha256(const void *p, size_t n, unsigned char *out);
int ap_block_hash(const void *p, size_t n, unsigned char *out);
int64_t ap_pread_full(int fd, void *p, size_t n, int64_t off);
int64_t ap_pwrite_full(int fd, const void *p, size_t n, int64_t off);
#endif

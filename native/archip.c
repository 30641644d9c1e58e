/* archipelago native core. See archip.h. Lock-free: a process killed at any
 * point leaves no lock held; a producer killed between claiming and publishing
 * a ring slot stalls that ring only (documented in archipelago/peers/segment.py). */
#define _GNU_SOURCE
#include "archip.h"
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define A32(p) ((_Atomic uint32_t *)(void *)(p))
#define A64(p) ((_Atomic uint64_t *)(void *)(p))
#define ALIGN(x, a) (((x) + ((a) - 1)) & ~((uint64_t)(a) - 1))
#define DESC_TAG 0x80000000u

struct ap_port {
    uint32_t state, pid, gen, sleeping;
    uint64_t req_ring, rep_ring;
    char pad[32];
};

struct ap_ring {
    uint64_t head; char pad1[56];
    uint64_t tail; char pad2[56];
    uint64_t mask, cap; char pad3[48];
    struct { uint64_t seq, val; } slots[];
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline struct ap_header *H(char *base) { return (struct ap_header *)(void *)base; }
static inline struct ap_port *P(char *base, uint32_t port) {
    return (struct ap_port *)(void *)(base + H(base)->ports_off) + port;
}
static inline struct ap_ring *R(char *base, uint64_t off) {
    return (struct ap_ring *)(void *)(base + off);
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 1;
    while (c < n) c <<= 1;
    return c;
}

/* ---------------------------------------------------------------- rings */
uint64_t ap_ring_bytes(uint32_t cap) { return ALIGN(192 + (uint64_t)cap * 16, 64); }

void ap_ring_init(char *base, uint64_t off, uint32_t cap) {
    struct ap_ring *r = R(base, off);
    atomic_store(A64(&r->head), 0);
    atomic_store(A64(&r->tail), 0);
    r->mask = cap - 1;
    r->cap = cap;
    for (uint64_t i = 0; i < cap; i++) atomic_store_explicit(A64(&r->slots[i].seq), i, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
}

int ap_ring_push(char *base, uint64_t off, uint64_t val) {
    struct ap_ring *r = R(base, off);
    uint64_t pos = atomic_load_explicit(A64(&r->tail), memory_order_relaxed);
    for (;;) {
        uint64_t *slot_seq = &r->slots[pos & r->mask].seq;
        uint64_t seq = atomic_load_explicit(A64(slot_seq), memory_order_acquire);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak(A64(&r->tail), &pos, pos + 1)) {
                r->slots[pos & r->mask].val = val;
                atomic_store_explicit(A64(slot_seq), pos + 1, memory_order_release);
                return 0;
            }
        } else if (dif < 0) {
            return -1;
        } else {
            pos = atomic_load_explicit(A64(&r->tail), memory_order_relaxed);
        }
    }
}

int ap_ring_pop(char *base, uint64_t off, uint64_t *val) {
    struct ap_ring *r = R(base, off);
    uint64_t pos = atomic_load_explicit(A64(&r->head), memory_order_relaxed);
    for (;;) {
        uint64_t *slot_seq = &r->slots[pos & r->mask].seq;
        uint64_t seq = atomic_load_explicit(A64(slot_seq), memory_order_acquire);
        int64_t dif = (int64_t)(seq - (pos + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak(A64(&r->head), &pos, pos + 1)) {
                *val = r->slots[pos & r->mask].val;
                atomic_store_explicit(A64(slot_seq), pos + r->mask + 1, memory_order_release);
                return 0;
            }
        } else if (dif < 0) {
            return -1;
        } else {
            pos = atomic_load_explicit(A64(&r->head), memory_order_relaxed);
        }
    }
}

uint64_t ap_ring_count(char *base, uint64_t off) {
    struct ap_ring *r = R(base, off);
    uint64_t t = atomic_load(A64(&r->tail));
    uint64_t h = atomic_load(A64(&r->head));
    return t > h ? t - h : 0;
}

/* ------------------------------------------------ buffer free stacks */
/* A Treiber stack of buffer indexes: `top` packs (tag << 32 | index) and every change
 * bumps the tag, so a pop that read a stale `next` loses its CAS (no ABA). Push and pop
 * are one CAS each: a process killed anywhere leaves the stack consistent. */
struct ap_stack {
    uint64_t top;    /* atomic: tag << 32 | index (AP_NONE: empty) */
    uint64_t count;  /* atomic: free buffers */
    uint64_t pad[6];
    uint32_t next[];
};

static uint64_t stack_bytes(uint64_t count) { return ALIGN(64 + 4 * count, 64); }

static inline struct ap_stack *S(char *base, uint64_t off) {
    return (struct ap_stack *)(void *)(base + off);
}

static void stack_push(char *base, uint64_t off, uint32_t idx) {
    struct ap_stack *s = S(base, off);
    atomic_fetch_add(A64(&s->count), 1);  /* before the CAS: count never under-reports... */
    uint64_t top = atomic_load(A64(&s->top));
    do {
        atomic_store_explicit(A32(&s->next[idx]), (uint32_t)top, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak(A64(&s->top), &top,
                                           ((top >> 32) + 1) << 32 | idx));
}

static int stack_pop(char *base, uint64_t off, uint32_t *idx) {
    struct ap_stack *s = S(base, off);
    uint64_t top = atomic_load(A64(&s->top));
    for (;;) {
        uint32_t i = (uint32_t)top;
        if (i == AP_NONE) return -1;
        uint32_t next = atomic_load_explicit(A32(&s->next[i]), memory_order_relaxed);
        if (atomic_compare_exchange_weak(A64(&s->top), &top, ((top >> 32) + 1) << 32 | next)) {
            atomic_fetch_sub(A64(&s->count), 1);  /* ...nor wraps below zero */
            *idx = i;
            return 0;
        }
    }
}

/* --------------------------------------------------------------- layout */
static uint64_t layout(const struct ap_config *cfg, struct ap_header *h) {
    uint64_t off = 4096;
    uint32_t ring_cap = pow2_at_least(2ULL * cfg->nr_desc);
    h->ports_off = off;
    off = ALIGN(off + (uint64_t)cfg->nr_ports * sizeof(struct ap_port), 64);
    off += 2ULL * cfg->nr_ports * ap_ring_bytes(ring_cap);
    h->desc_ring_off = off;
    off += ap_ring_bytes(pow2_at_least(cfg->nr_desc));
    h->desc_off = off;
    off = ALIGN(off + (uint64_t)cfg->nr_desc * sizeof(struct ap_desc), 64);
    for (uint32_t c = 0; c < cfg->nr_classes; c++) {
        struct ap_class *k = &h->classes[c];
        k->buf_size = cfg->buf_size[c];
        k->count = cfg->buf_count[c];
        k->owner_off = off;
        off = ALIGN(off + 4 * k->count, 64);
        k->free_off = off;
        off += stack_bytes(k->count);
        off = ALIGN(off, 4096);
        k->data_off = off;
        off += k->buf_size * k->count;
    }
    h->ring_cap = ring_cap;
    return ALIGN(off, 4096);
}

uint64_t ap_seg_size(const struct ap_config *cfg) {
    struct ap_header h;
    memset(&h, 0, sizeof h);
    if (cfg->nr_classes > AP_MAX_CLASSES) return 0;
    return layout(cfg, &h);
}

int ap_seg_format(char *base, uint64_t size, const struct ap_config *cfg, uint32_t owner_pid) {
    struct ap_header *h = H(base);
    if (cfg->nr_classes > AP_MAX_CLASSES || cfg->nr_static > cfg->nr_ports || cfg->nr_desc == 0)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    uint64_t need = layout(cfg, h);
    if (need > size) return -ENOSPC;
    h->header_size = (uint32_t)sizeof *h;
    h->total_size = size;
    h->nr_ports = cfg->nr_ports;
    h->nr_static = cfg->nr_static;
    h->nr_desc = cfg->nr_desc;
    h->desc_size = (uint32_t)sizeof(struct ap_desc);
    h->port_size = (uint32_t)sizeof(struct ap_port);
    h->nr_classes = cfg->nr_classes;
    h->owner_pid = owner_pid;
    uint64_t roff = ALIGN(h->ports_off + (uint64_t)cfg->nr_ports * sizeof(struct ap_port), 64);
    for (uint32_t p = 0; p < cfg->nr_ports; p++) {
        struct ap_port *pt = P(base, p);
        memset(pt, 0, sizeof *pt);
        pt->req_ring = roff;
        ap_ring_init(base, roff, h->ring_cap);
        roff += ap_ring_bytes(h->ring_cap);
        pt->rep_ring = roff;
        ap_ring_init(base, roff, h->ring_cap);
        roff += ap_ring_bytes(h->ring_cap);
    }
    ap_ring_init(base, h->desc_ring_off, pow2_at_least(cfg->nr_desc));
    for (uint32_t i = 0; i < cfg->nr_desc; i++) {
        struct ap_desc *d = ap_desc_ptr(base, i);
        memset(d, 0, sizeof *d);
        d->buf_handle = AP_NONE;
        ap_ring_push(base, h->desc_ring_off, i);
    }
    for (uint32_t c = 0; c < cfg->nr_classes; c++) {
        struct ap_class *k = &h->classes[c];
        uint32_t *own = (uint32_t *)(void *)(base + k->owner_off);
        struct ap_stack *s = S(base, k->free_off);
        atomic_store(A64(&s->top), AP_NONE);
        atomic_store(A64(&s->count), 0);
        for (uint64_t i = k->count; i-- > 0;) {  /* buffer 0 on top: low addresses first */
            own[i] = AP_NONE;
            stack_push(base, k->free_off, (uint32_t)i);
        }
    }
    h->version = AP_VERSION;
    atomic_thread_fence(memory_order_seq_cst);
    atomic_store(A64(&h->magic), AP_MAGIC); /* published last: joiners see a complete layout */
    return 0;
}

int ap_seg_check(const char *base, uint64_t size) {
    const struct ap_header *h = (const struct ap_header *)(const void *)base;
    if (size < 4096 || h->magic != AP_MAGIC) return -1;
    if (h->version != AP_VERSION || h->header_size != sizeof *h ||
        h->desc_size != sizeof(struct ap_desc) || h->port_size != sizeof(struct ap_port))
        return -2;
    if (h->total_size != size) return -3;
    return 0;
}

struct ap_desc *ap_desc_ptr(char *base, uint32_t idx) {
    return (struct ap_desc *)(void *)(base + H(base)->desc_off) + idx;
}
uint64_t ap_port_req_ring(char *base, uint32_t port) { return P(base, port)->req_ring; }
uint64_t ap_port_rep_ring(char *base, uint32_t port) { return P(base, port)->rep_ring; }

/* ---------------------------------------------------------------- ports */
uint32_t ap_port_state(char *base, uint32_t port) { return atomic_load(A32(&P(base, port)->state)); }
uint32_t ap_port_pid(char *base, uint32_t port) { return atomic_load(A32(&P(base, port)->pid)); }
uint32_t ap_port_gen(char *base, uint32_t port) { return atomic_load(A32(&P(base, port)->gen)); }
void ap_port_set_state(char *base, uint32_t port, uint32_t st) { atomic_store(A32(&P(base, port)->state), st); }

#define AP_P_BINDING 3u
int ap_port_bind(char *base, uint32_t port, uint32_t pid) {
    if (port >= H(base)->nr_ports) return -EINVAL;
    struct ap_port *p = P(base, port);
    uint32_t expect = AP_P_FREE;
    if (!atomic_compare_exchange_strong(A32(&p->state), &expect, AP_P_BINDING)) return -EBUSY;
    /* gen changes before BOUND is visible, so replies for an older incarnation are dropped */
    uint32_t gen = atomic_fetch_add(A32(&p->gen), 1) + 1;
    atomic_store(A32(&p->pid), pid);
    atomic_store(A32(&p->sleeping), 0);
    atomic_store(A32(&p->state), AP_P_BOUND);
    return (int)(gen & 0x7fffffff);
}

int ap_port_bind_dynamic(char *base, uint32_t pid, uint32_t *port_out) {
    struct ap_header *h = H(base);
    for (uint32_t p = h->nr_static; p < h->nr_ports; p++) {
        int g = ap_port_bind(base, p, pid);
        if (g >= 0) { *port_out = p; return g; }
    }
    return -EAGAIN;
}

/* ------------------------------------------------------ descriptors, buffers */
int64_t ap_desc_alloc(char *base, uint32_t owner) {
    struct ap_header *h = H(base);
    uint64_t idx;
    do {
        if (ap_ring_pop(base, h->desc_ring_off, &idx) != 0) return -1;
    } while (idx >= h->nr_desc); /* tombstone */
    struct ap_desc *d = ap_desc_ptr(base, (uint32_t)idx);
    uint32_t gen = atomic_load(A32(&d->gen)) + 1;
    memset((char *)d + 8, 0, offsetof(struct ap_desc, target) - 8);
    d->owner = owner;
    d->owner_gen = ap_port_gen(base, owner);
    d->buf_handle = AP_NONE;
    atomic_store(A32(&d->gen), gen);
    atomic_store(A32(&d->state), AP_D_ALLOC);
    return (int64_t)idx;
}

static struct ap_class *cls_of(char *base, uint32_t handle, uint64_t *idx) {
    struct ap_header *h = H(base);
    uint32_t c = handle >> 24;
    *idx = handle & 0xffffff;
    if (c >= h->nr_classes || *idx >= h->classes[c].count) return NULL;
    return &h->classes[c];
}

int64_t ap_buf_alloc(char *base, uint64_t size, uint32_t owner) {
    struct ap_header *h = H(base);
    for (uint32_t c = 0; c < h->nr_classes; c++) {
        struct ap_class *k = &h->classes[c];
        uint32_t idx;
        if (k->buf_size < size) continue;
        if (stack_pop(base, k->free_off, &idx) == 0) {
            atomic_store(A32(base + k->owner_off + 4 * idx), owner);
            return (int64_t)(((uint64_t)c << 24) | idx);
        }
    }
    return -1;
}

uint64_t ap_buf_offset(char *base, uint32_t handle) {
    uint64_t idx;
    struct ap_class *k = cls_of(base, handle, &idx);
    return k ? k->data_off + idx * k->buf_size : 0;
}

uint64_t ap_buf_capacity(char *base, uint32_t handle) {
    uint64_t idx;
    struct ap_class *k = cls_of(base, handle, &idx);
    return k ? k->buf_size : 0;
}

int ap_buf_free(char *base, uint32_t handle, uint32_t expect_owner) {
    uint64_t idx;
    struct ap_class *k = cls_of(base, handle, &idx);
    if (!k) return -1;
    _Atomic uint32_t *own = A32(base + k->owner_off + 4 * idx);
    uint32_t cur = atomic_load(own);
    if (cur == AP_NONE || (expect_owner != AP_NONE && cur != expect_owner)) return -1;
    if (!atomic_compare_exchange_strong(own, &cur, AP_NONE)) return -1;
    stack_push(base, k->free_off, (uint32_t)idx);
    return 0;
}

int ap_buf_set_owner(char *base, uint32_t handle, uint32_t from, uint32_t to) {
    uint64_t idx;
    struct ap_class *k = cls_of(base, handle, &idx);
    if (!k) return -1;
    return atomic_compare_exchange_strong(A32(base + k->owner_off + 4 * idx), &from, to) ? 0 : -1;
}

int ap_desc_attach(char *base, uint32_t idx, uint32_t handle) {
    struct ap_desc *d = ap_desc_ptr(base, idx);
    uint64_t bi;
    struct ap_class *k = cls_of(base, handle, &bi);
    if (!k) return -1;
    _Atomic uint32_t *own = A32(base + k->owner_off + 4 * bi);
    uint32_t cur = atomic_load(own);
    if (cur == AP_NONE || (cur & DESC_TAG)) return -1;
    if (!atomic_compare_exchange_strong(own, &cur, DESC_TAG | idx)) return -1;
    if (d->buf_handle != AP_NONE) ap_buf_free(base, d->buf_handle, DESC_TAG | idx);
    d->buf_handle = handle;
    d->buf_off = k->data_off + bi * k->buf_size;
    d->buf_len = k->buf_size;
    return 0;
}

int ap_desc_free(char *base, uint32_t idx, uint32_t expect_state) {
    struct ap_desc *d = ap_desc_ptr(base, idx);
    uint32_t st = expect_state;
    if (!atomic_compare_exchange_strong(A32(&d->state), &st, AP_D_FREE)) return -1;
    if (d->buf_handle != AP_NONE) ap_buf_free(base, d->buf_handle, DESC_TAG | idx);
    d->buf_handle = AP_NONE;
    d->buf_off = 0;
    ap_ring_push(base, H(base)->desc_ring_off, idx);
    return 0;
}

uint64_t ap_desc_free_count(char *base) { return ap_ring_count(base, H(base)->desc_ring_off); }
uint64_t ap_buf_free_count(char *base, uint32_t c) {
    return c < H(base)->nr_classes ? atomic_load(A64(&S(base, H(base)->classes[c].free_off)->count)) : 0;
}

/* --------------------------------------------------------- request life */
static inline uint64_t entry(struct ap_desc *d, uint32_t idx) {
    return ((uint64_t)atomic_load(A32(&d->gen)) << 32) | idx;
}

int ap_wake(char *base, uint32_t port, int efd) {
    if (efd == AP_NOWAKE) return 0; /* the caller batches wake-ups and calls ap_wake later */
    if (atomic_exchange(A32(&P(base, port)->sleeping), 0) && efd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(efd, &one, sizeof one);
        return r == (ssize_t)sizeof one;
    }
    return 0;
}

static void push_retry(char *base, uint64_t ring, uint64_t e) {
    /* rings hold 2x the descriptors, so a full ring means stale entries; wait them out */
    while (ap_ring_push(base, ring, e) != 0) sched_yield();
}

int ap_submit(char *base, uint32_t idx, uint32_t dst, int efd) {
    struct ap_desc *d = ap_desc_ptr(base, idx);
    if (dst >= H(base)->nr_ports) return -EINVAL;
    d->dst = dst;
    atomic_store(A32(&d->state), AP_D_SUBMITTED);
    struct ap_port *p = P(base, dst);
    if (atomic_load(A32(&p->state)) != AP_P_BOUND) {
        uint32_t st = AP_D_SUBMITTED;
        /* if the reclaimer won the race it already queued a peer-died reply */
        return atomic_compare_exchange_strong(A32(&d->state), &st, AP_D_ALLOC) ? -ENOTCONN : 0;
    }
    if (ap_ring_push(base, p->req_ring, entry(d, idx)) != 0) {
        uint32_t st = AP_D_SUBMITTED;
        return atomic_compare_exchange_strong(A32(&d->state), &st, AP_D_ALLOC) ? -EAGAIN : 0;
    }
    ap_wake(base, dst, efd);
    return 0;
}

static int route_reply(char *base, uint32_t idx, int efd_owner) {
    struct ap_desc *d = ap_desc_ptr(base, idx);
    struct ap_port *o = P(base, d->owner);
    if (atomic_load(A32(&o->state)) != AP_P_BOUND || atomic_load(A32(&o->gen)) != d->owner_gen) {
        ap_desc_free(base, idx, AP_D_COMPLETED);
        return 1;
    }
    push_retry(base, o->rep_ring, entry(d, idx));
    ap_wake(base, d->owner, efd_owner);
    return 0;
}

int ap_complete(char *base, uint32_t idx, int efd_owner) {
    struct ap_desc *d = ap_desc_ptr(base, idx);
    uint32_t st = AP_D_SUBMITTED;
    if (!atomic_compare_exchange_strong(A32(&d->state), &st, AP_D_COMPLETED)) return 1;
    return route_reply(base, idx, efd_owner);
}

static void set_code(struct ap_desc *d, int err, const char *code, const char *msg) {
    d->err = err;
    size_t n = strlen(code);
    memcpy(d->code, code, n);
    d->code_len = (uint16_t)n;
    strncpy(d->msg, msg, AP_MSG_MAX - 1);
}

int ap_fail_local(char *base, uint32_t idx, int err) {
    struct ap_desc *d = ap_desc_ptr(base, idx);
    uint32_t st = AP_D_SUBMITTED;
    if (!atomic_compare_exchange_strong(A32(&d->state), &st, AP_D_COMPLETED)) return -1;
    set_code(d, err, "peer-died", "peer died");
    return 0;
}

static int64_t pop_valid(char *base, uint32_t port, int reply) {
    struct ap_port *p = P(base, port);
    uint64_t e;
    while (ap_ring_pop(base, reply ? p->rep_ring : p->req_ring, &e) == 0) {
        uint32_t idx = (uint32_t)e, gen = (uint32_t)(e >> 32);
        if (idx >= H(base)->nr_desc) continue;
        struct ap_desc *d = ap_desc_ptr(base, idx);
        uint32_t st = atomic_load(A32(&d->state));
        if (atomic_load(A32(&d->gen)) != gen) continue;  /* stale entry */
        if (reply) {
            if (st == AP_D_COMPLETED && d->owner == port && d->owner_gen == atomic_load(A32(&p->gen)))
                return idx;
        } else if (st == AP_D_SUBMITTED && d->dst == port) {
            struct ap_port *o = P(base, d->owner);
            if (atomic_load(A32(&o->state)) == AP_P_BOUND && atomic_load(A32(&o->gen)) == d->owner_gen)
                return idx;
            /* the client died: drop the request unserved */
            uint32_t s2 = AP_D_SUBMITTED;
            if (atomic_compare_exchange_strong(A32(&d->state), &s2, AP_D_COMPLETED))
                ap_desc_free(base, idx, AP_D_COMPLETED);
        }
    }
    return -1;
}

int64_t ap_pop_request(char *base, uint32_t port) { return pop_valid(base, port, 0); }
int64_t ap_pop_reply(char *base, uint32_t port) { return pop_valid(base, port, 1); }

int ap_prepare_sleep(char *base, uint32_t port, int mask) {
    struct ap_port *p = P(base, port);
    atomic_store(A32(&p->sleeping), 1);
    /* re-check after publishing the flag: a producer that pushed before it saw 0 */
    if (((mask & 1) && ap_ring_count(base, p->req_ring)) ||
        ((mask & 2) && ap_ring_count(base, p->rep_ring))) {
        atomic_store(A32(&p->sleeping), 0);
        return 0;
    }
    return 1;
}

int ap_spin_wait(char *base, uint32_t port, int mask, int usec) {
    struct ap_port *p = P(base, port);
    int64_t end = 0;
    for (uint32_t i = 0;; i++) {
        if (((mask & 1) && ap_ring_count(base, p->req_ring)) ||
            ((mask & 2) && ap_ring_count(base, p->rep_ring)))
            return 1;
        if ((i & 63) == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
            if (end == 0) end = now + usec;
            else if (now >= end) return 0;
        }
        cpu_relax();
    }
}

int ap_drain_fd(int efd) {
    uint64_t v;
    return read(efd, &v, sizeof v) == (ssize_t)sizeof v ? 1 : 0;
}

int ap_wait_fd(int efd, int regfd, int timeout_ms) {
    /* events 0 on the registry socket: only hang-up/error wake us, not RPC replies */
    struct pollfd f[2] = {{.fd = efd, .events = POLLIN}, {.fd = regfd, .events = 0}};
    int r = poll(f, regfd >= 0 ? 2 : 1, timeout_ms);
    if (r < 0) return errno == EINTR ? 0 : -errno;
    if (regfd >= 0 && (f[1].revents & (POLLHUP | POLLERR))) return -EPIPE;
    if (f[0].revents) ap_drain_fd(efd);
    return r;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ap_wait_reply(char *base, uint32_t port, int efd, int regfd, int timeout_ms, int spin) {
    int64_t deadline = now_ms() + timeout_ms;
    int busy = 0;
    for (;;) {
        for (int i = 0; i <= spin; i++) {
            int64_t idx = ap_pop_reply(base, port);
            if (idx >= 0) return (int)idx;
            cpu_relax();
        }
        int64_t left = deadline - now_ms();
        if (left <= 0) return -ETIMEDOUT;
        /* a slot claimed but never published (producer killed mid-push) keeps the count
         * above zero: after many fruitless rounds, nap instead of burning the CPU */
        int sleep_ok = ap_prepare_sleep(base, port, 2);
        if (sleep_ok || ++busy > 1000) {
            int r = ap_wait_fd(efd, regfd, sleep_ok ? (int)left : 1);
            if (r == -EPIPE) {
                int64_t idx = ap_pop_reply(base, port);
                return idx >= 0 ? (int)idx : -EPIPE;
            }
        }
    }
}

int ap_port_reclaim(char *base, uint32_t port, const int *efds, uint32_t nfds) {
    struct ap_header *h = H(base);
    int n = 0;
    atomic_store(A32(&P(base, port)->state), AP_P_DEAD);
    for (uint32_t i = 0; i < h->nr_desc; i++) {
        struct ap_desc *d = ap_desc_ptr(base, i);
        uint32_t st = atomic_load(A32(&d->state));
        if (st == AP_D_SUBMITTED && d->dst == port) {
            if (atomic_compare_exchange_strong(A32(&d->state), &st, AP_D_COMPLETED)) {
                set_code(d, ENOTCONN, "peer-died", "server peer died");
                uint32_t o = d->owner;
                route_reply(base, i, o < nfds ? efds[o] : -1);
                n++;
            }
        } else if (d->owner == port && (st == AP_D_ALLOC || st == AP_D_COMPLETED)) {
            if (ap_desc_free(base, i, st) == 0) n++;
        } else if (d->owner == port && st == AP_D_SUBMITTED) {
            /* the server frees it; wake it, the dead client may have deferred the signal */
            uint32_t dst = d->dst;
            if (dst < h->nr_ports) ap_wake(base, dst, dst < nfds ? efds[dst] : -1);
        }
    }
    for (uint32_t c = 0; c < h->nr_classes; c++) {
        struct ap_class *k = &h->classes[c];
        for (uint64_t b = 0; b < k->count; b++) {
            uint32_t cur = atomic_load(A32(base + k->owner_off + 4 * b));
            if (cur == port && ap_buf_free(base, (uint32_t)((c << 24) | b), port) == 0) n++;
        }
    }
    atomic_store(A32(&P(base, port)->pid), 0);
    atomic_store(A32(&P(base, port)->state), AP_P_FREE);
    return n;
}

/* ------------------------------------------------------- fast paths */
int64_t ap_pop_request_fast(char *base, uint32_t port, const int *efds, uint32_t nfds,
                            uint64_t *answered) {
    /* answer PINGs here (no Python per ping), wake each client once per batch */
    uint64_t woken[4] = {0, 0, 0, 0};
    int64_t idx, n_pings = 0;
    while ((idx = ap_pop_request(base, port)) >= 0) {
        struct ap_desc *d = ap_desc_ptr(base, (uint32_t)idx);
        if (d->op != 0) break;
        uint32_t owner = d->owner;
        ap_complete(base, (uint32_t)idx, AP_NOWAKE);
        n_pings++;
        if (owner < 256) woken[owner >> 6] |= 1ULL << (owner & 63);
    }
    for (uint32_t w = 0; w < 4; w++)
        for (uint32_t b = 0; b < 64; b++)
            if (woken[w] >> b & 1) {
                uint32_t o = w * 64 + b;
                ap_wake(base, o, o < nfds ? efds[o] : -1);
            }
    if (answered) *answered += (uint64_t)n_pings; /* the caller counts them as served */
    return idx;
}

int64_t ap_ping_loop(char *base, uint32_t port, uint32_t dst, int efd_dst, int efd_self,
                     int64_t n, int depth, int timeout_ms) {
    /* a C client: keep `depth` PINGs in flight until n completed (benchmarks, health) */
    int64_t sent = 0, done = 0;
    while (done < n) {
        while (sent < n && sent - done < depth) {
            int64_t idx = ap_desc_alloc(base, port);
            if (idx < 0) break;
            ap_desc_ptr(base, (uint32_t)idx)->op = 0;
            int r = ap_submit(base, (uint32_t)idx, dst, AP_NOWAKE);
            if (r < 0) { ap_desc_free(base, (uint32_t)idx, AP_D_ALLOC); return r; }
            sent++;
        }
        ap_wake(base, dst, efd_dst);
        int idx = ap_wait_reply(base, port, efd_self, -1, timeout_ms, 2000);
        if (idx < 0) return idx;
        do {
            struct ap_desc *d = ap_desc_ptr(base, (uint32_t)idx);
            int err = d->err;
            ap_desc_free(base, (uint32_t)idx, AP_D_COMPLETED);
            if (err) return -err;
            done++;
        } while ((idx = (int)ap_pop_reply(base, port)) >= 0);
    }
    return done;
}

int64_t ap_request_new(char *base, uint32_t port, uint32_t op, uint32_t flags, uint64_t offset,
                       uint64_t size, uint64_t arg, uint64_t req_id, const char *target,
                       uint32_t tlen, uint64_t need, const char *payload, uint64_t plen) {
    /* allocate + fill a descriptor (and its buffer, payload copied in) in one call */
    if (tlen > AP_TARGET_MAX) return -3;
    int64_t idx = ap_desc_alloc(base, port);
    if (idx < 0) return -1;
    struct ap_desc *d = ap_desc_ptr(base, (uint32_t)idx);
    d->op = op; d->flags = flags; d->offset = offset; d->size = size; d->arg = arg;
    d->req_id = req_id;
    if (tlen) memcpy(d->target, target, tlen);
    d->target_len = (uint16_t)tlen;
    if (need) {
        int64_t h = ap_buf_alloc(base, need, port);
        if (h < 0 || ap_desc_attach(base, (uint32_t)idx, (uint32_t)h) != 0) {
            if (h >= 0) ap_buf_free(base, (uint32_t)h, port);
            ap_desc_free(base, (uint32_t)idx, AP_D_ALLOC);
            return -2;
        }
        if (plen) memcpy(base + d->buf_off, payload, plen);
        d->data_len = plen;
    }
    return idx;
}

/* -------------------------------------------------- ring stall repair */
int64_t ap_ring_stalled(char *base, uint64_t off) {
    /* head position if its slot is claimed by a producer but not published, else -1 */
    struct ap_ring *r = R(base, off);
    uint64_t h = atomic_load(A64(&r->head)), t = atomic_load(A64(&r->tail));
    if (t <= h) return -1;
    uint64_t seq = atomic_load(A64(&r->slots[h & r->mask].seq));
    return seq == h ? (int64_t)h : -1;
}

int ap_ring_tombstone(char *base, uint64_t off, uint64_t pos) {
    /* publish a tombstone (value ~0, skipped by every consumer) in a slot whose producer
     * died between claiming and publishing it; only if still unpublished at `pos` */
    struct ap_ring *r = R(base, off);
    uint64_t *seq = &r->slots[pos & r->mask].seq;
    if (atomic_load(A64(seq)) != pos) return -1;
    r->slots[pos & r->mask].val = ~(uint64_t)0;
    uint64_t expect = pos;
    return atomic_compare_exchange_strong(A64(seq), &expect, pos + 1) ? 0 : -1;
}

uint32_t ap_ring_offsets(char *base, uint64_t *out, uint32_t max) {
    /* every ring of the segment: per-port request/reply rings and the descriptor pool
     * (buffer pools are stacks: one CAS per change, nothing to repair) */
    struct ap_header *h = H(base);
    uint32_t n = 0;
    for (uint32_t p = 0; p < h->nr_ports && n + 2 <= max; p++) {
        out[n++] = P(base, p)->req_ring;
        out[n++] = P(base, p)->rep_ring;
    }
    if (n < max) out[n++] = h->desc_ring_off;
    return n;
}

/* ------------------------------------------------- batched hot path */
int64_t ap_request_submit(char *base, uint32_t port, uint32_t dst, uint32_t op, uint32_t flags,
                          uint64_t offset, uint64_t size, uint64_t arg, uint64_t req_id,
                          const char *target, uint32_t tlen, uint64_t need,
                          const char *payload, uint64_t plen) {
    if (dst >= H(base)->nr_ports) return AP_E_BADPORT;
    int64_t idx = ap_request_new(base, port, op, flags, offset, size, arg, req_id, target, tlen,
                                 need, payload, plen);
    if (idx < 0) return idx; /* -1, -2, -3 as ap_request_new */
    int r = ap_submit(base, (uint32_t)idx, dst, AP_NOWAKE);
    if (r < 0) {
        ap_desc_free(base, (uint32_t)idx, AP_D_ALLOC);
        return r == -ENOTCONN ? AP_E_NOTCONN : AP_E_FULL;
    }
    return idx;
}

int ap_pop_replies(char *base, uint32_t port, int64_t *out, int max) {
    int n = 0;
    while (n < max) {
        int64_t idx = pop_valid(base, port, 1);
        if (idx < 0) break;
        out[n++] = idx;
    }
    return n;
}

/* ------------------------------------------------- adaptive spin */
#define AP_SPIN_GAP_NS 20000
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ap_spin_init(struct ap_spin *s, int64_t max_ns) {
    memset(s, 0, sizeof *s);
    s->max_ns = max_ns > 0 ? max_ns : 0;
    s->min_ns = s->max_ns / 8 > 1000 ? s->max_ns / 8 : (s->max_ns < 1000 ? s->max_ns : 1000);
    s->yield_ns = 0; /* never: the preemption check backs off instead (ap_spin_adaptive) */
    s->probe_every = 16;
    s->budget_ns = s->max_ns;  /* start optimistic: a fresh port is usually in a dialogue */
}

int64_t ap_spin_plan(struct ap_spin *s) {
    if (s->max_ns <= 0) {
        s->skipped++;
        return 0;
    }
    int64_t b = s->budget_ns;
    if (b <= 0) {
        if (++s->idle < s->probe_every) {
            s->skipped++;
            return 0;
        }
        s->idle = 0;
        /* probe: has the peer become fast again? Long enough to outlast one wake-up of
         * the peer, or two sides that both went to sleeping mode never find out */
        b = s->max_ns / 2 > s->min_ns ? s->max_ns / 2 : s->min_ns;
    }
    if (b > s->max_ns) {
        s->over_budget++;
        b = s->max_ns;
    }
    return b;
}

void ap_spin_update(struct ap_spin *s, int hit, int64_t waited_ns) {
    if (hit) {
        s->hits++;
        s->idle = 0;
        s->ewma_ns = s->ewma_ns ? (3 * s->ewma_ns + waited_ns) / 4 : waited_ns;
        int64_t b = 2 * s->ewma_ns + s->min_ns;
        s->budget_ns = b < s->max_ns ? b : s->max_ns;
    } else {
        s->budget_ns /= 2;
        if (s->budget_ns < s->min_ns) s->budget_ns = 0;
    }
}

int ap_spin_adaptive(char *base, uint32_t port, int mask, struct ap_spin *s) {
    int64_t budget = ap_spin_plan(s);
    if (budget <= 0) return 0;
    struct ap_port *p = P(base, port);
    s->episodes++;
    int64_t t0 = now_ns(), now = t0, prev = t0, last_yield = t0;
    int hit = 0, preempted = 0;
    for (uint32_t i = 1;; i++) {
        if (((mask & 1) && ap_ring_count(base, p->req_ring)) ||
            ((mask & 2) && ap_ring_count(base, p->rep_ring))) {
            hit = 1;
            break;
        }
        if ((i & 15) == 0) {
            now = now_ns();
            /* 16 pauses take ~1 us: a gap of AP_SPIN_GAP_NS means this thread (or its
             * vCPU) was descheduled meanwhile, a syscall-free sign of preemption */
            if (now - prev >= AP_SPIN_GAP_NS) preempted = 1;
            prev = now;
            if (now - t0 >= budget) break;
            if (s->yield_ns > 0 && now - last_yield >= s->yield_ns) {
                sched_yield();
                s->yields++;
                last_yield = now;
            }
        }
        cpu_relax();
    }
    if (hit) now = now_ns();
    if (now - prev >= AP_SPIN_GAP_NS) preempted = 1;
    s->spun_ns += (uint64_t)(now - t0);
    if (preempted) {
        /* the CPU is contended (often by the very peer we wait for, woken on this CPU):
         * spinning steals from it, so back off as after a miss */
        s->preempted++;
        ap_spin_update(s, 0, now - t0);
    } else {
        ap_spin_update(s, hit, now - t0);
    }
    return hit;
}

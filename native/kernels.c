/* archipelago native kernels: zero detection, Pithos block hashing (OpenSSL EVP,
 * SHA-NI where the CPU has it) and full pread/pwrite loops.
 * Called through cffi, which releases the GIL around every call. */
#define _GNU_SOURCE
#include "archip.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
int ap_is_zero(const void *p, size_t n) {
    const unsigned char *c = p;
    if (n == 0) return 1;
    if (c[0]) return 0;
    return memcmp(c, c + 1, n - 1) == 0; /* overlapping compare runs at memcmp speed */
}

int ap_sha256(const void *p, size_t n, unsigned char *out) {
    unsigned int len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

int ap_block_hash(const void *p, size_t n, unsigned char *out) {
    const unsigned char *c = p;
    while (n >= 8 && (n & 7) != 0 && c[n - 1] == 0) n--;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, c + n - 8, 8);
        if (w) break;
        n -= 8;
    }
    while (n > 0 && c[n - 1] == 0) n--;
    return ap_sha256(p, n, out);
}

int64_t ap_pread_full(int fd, void *p, size_t n, int64_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)p + done, n - done, off + (int64_t)done);
        if (r < 0) { if (errno == EINTR) continue; return -errno; }
        if (r == 0) break;
        done += (size_t)r;
    }
    return (int64_t)done;
}

int64_t ap_pwrite_full(int fd, const void *p, size_t n, int64_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const char *)p + done, n - done, off + (int64_t)done);
        if (r < 0) { if (errno == EINTR) continue; return -errno; }
        done += (size_t)r;
    }
    return (int64_t)done;
}


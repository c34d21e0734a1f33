/* Shared pieces of the libFuzzer targets: an input reader that yields
 * zeros once the fuzzer's bytes run out, payload bytes that depend on
 * their stream and offset (so loss, duplication and reordering show), and
 * CHECK, which aborts with a message (libFuzzer then saves the input).
 *
 * Targets run every iteration to completion on the calling thread, bounded
 * in loop iterations: a hang becomes a failed CHECK, not a timeout. */
#ifndef TC_FUZZ_H
#define TC_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

typedef struct fz_in {
    const uint8_t *p;
    size_t n;
} fz_in_t;

static inline uint8_t
fz_u8(fz_in_t *in)
{
    if (in->n == 0) {
        return 0;
    }
    in->n--;
    return *in->p++;
}

static inline uint16_t
fz_u16(fz_in_t *in)
{
    uint16_t hi = fz_u8(in);
    return (uint16_t)(hi << 8 | fz_u8(in));
}

/* Byte `off` of stream `seed`. */
static inline uint8_t
fz_byte(uint64_t seed, uint64_t off)
{
    uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 29;
    return (uint8_t)(x ^ (x >> 17) ^ (off >> 8));
}

static inline void
fz_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t off)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = fz_byte(seed, off + i);
    }
}

/* True when buf holds bytes off..off+len-1 of stream seed. */
static inline int
fz_verify(const uint8_t *buf, size_t len, uint64_t seed, uint64_t off)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != fz_byte(seed, off + i)) {
            fprintf(stderr, "byte %llu of stream %llu: got %u, want %u\n",
                    (unsigned long long)(off + i), (unsigned long long)seed,
                    buf[i], fz_byte(seed, off + i));
            return 0;
        }
    }
    return 1;
}

#endif

/* Cycles per entry of the sparse int8 kernels' inner loops, and the port rates that bound them.
   Built and run by benchmarks/spmm_loop_probe.py (see its docstring); by hand:
     gcc -O3 -march=native benchmarks/spmm_loop_probe.c -o /tmp/probe && /tmp/probe K ENTRIES ROUNDS
   The loops are copies of the column-sum loops of templates/kernels/sparse_gemm.h.j2
   (avx512_vnni, 64-token panel) and variants of them: keep them in step with the template. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int K, N, per;
static uint32_t qmask; /* the largest power of two <= K / 4, less 1 */
static const uint8_t *at;          /* the panel: K rows of 64 bytes (compact) = K / 4 rows of 64 quads */
static uint32_t *ptr;
static uint16_t *qidx, *k4s;       /* quads: one k quad an entry; compact: 4 k an entry */
static int32_t *val;
static int32_t out[16 * 64] __attribute__((aligned(64)));
#define DP(acc, q, w) acc = _mm512_dpbusd_epi32(acc, q, w)
#define UNPACK                                                                                  \
    const __m512i t01lo = _mm512_unpacklo_epi8(r0, r1), t01hi = _mm512_unpackhi_epi8(r0, r1);  \
    const __m512i t23lo = _mm512_unpacklo_epi8(r2, r3), t23hi = _mm512_unpackhi_epi8(r2, r3);  \
    const __m512i q0 = _mm512_unpacklo_epi16(t01lo, t23lo), q1 = _mm512_unpackhi_epi16(t01lo, t23lo); \
    const __m512i q2 = _mm512_unpacklo_epi16(t01hi, t23hi), q3 = _mm512_unpackhi_epi16(t01hi, t23hi);
#define SUMS DP(a0, q0, w); DP(a1, q1, w); DP(a2, q2, w); DP(a3, q3, w);
#define QUAD(x, w)                                                                              \
    DP(a0, _mm512_loadu_si512(x), w); DP(a1, _mm512_loadu_si512((x) + 16), w);                  \
    DP(a2, _mm512_loadu_si512((x) + 32), w); DP(a3, _mm512_loadu_si512((x) + 48), w);
enum { V_COMPACT, V_COMPACT_U64, V_COMPACT_NO_INDEX, V_COMPACT_NO_UNPACK, V_QUADS, V_QUADS_PAIR, V_QUADS_NO_INDEX };

/* every variant runs the same column loop around its entries: sums of column n into a0..a3
   (and b0..b3), stored to out so that they stay live; always inlined, one copy per variant */
static inline __attribute__((always_inline)) void columns(const int variant) {
    const int32_t *aqt = (const int32_t *)at;
    const uint64_t row = 0xffffull << 6;
    (void)aqt;
    (void)row;
    for (int n = 0; n < N; n++) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        uint32_t e = ptr[n];
        const uint32_t e1 = ptr[n + 1];
        switch (variant) {
        case V_COMPACT: /* the kernel's loop */
            for (; e < e1; e++) {
                const uint16_t *k4 = k4s + 4 * (size_t)e;
                const __m512i r0 = _mm512_loadu_si512(at + (size_t)k4[0] * 64);
                const __m512i r1 = _mm512_loadu_si512(at + (size_t)k4[1] * 64);
                const __m512i r2 = _mm512_loadu_si512(at + (size_t)k4[2] * 64);
                const __m512i r3 = _mm512_loadu_si512(at + (size_t)k4[3] * 64);
                const __m512i w = _mm512_set1_epi32(val[e]);
                UNPACK SUMS
            }
            break;
        case V_COMPACT_U64: /* the 4 k in one 64-bit load */
            for (; e < e1; e++) {
                uint64_t k4;
                memcpy(&k4, k4s + 4 * (size_t)e, 8);
                const __m512i r0 = _mm512_loadu_si512(at + ((k4 << 6) & row));
                const __m512i r1 = _mm512_loadu_si512(at + ((k4 >> 10) & row));
                const __m512i r2 = _mm512_loadu_si512(at + ((k4 >> 26) & row));
                const __m512i r3 = _mm512_loadu_si512(at + ((k4 >> 42) & row));
                const __m512i w = _mm512_set1_epi32(val[e]);
                UNPACK SUMS
            }
            break;
        case V_COMPACT_NO_INDEX: /* 4 consecutive rows from the entry number */
            for (; e < e1; e++) {
                const uint8_t *b = at + (size_t)((e * 37u) & qmask) * 256;
                const __m512i r0 = _mm512_loadu_si512(b), r1 = _mm512_loadu_si512(b + 64);
                const __m512i r2 = _mm512_loadu_si512(b + 128), r3 = _mm512_loadu_si512(b + 192);
                const __m512i w = _mm512_set1_epi32(val[e]);
                UNPACK SUMS
            }
            break;
        case V_COMPACT_NO_UNPACK: /* vpdpbusd on the rows as loaded (wrong sums) */
            for (; e < e1; e++) {
                const uint16_t *k4 = k4s + 4 * (size_t)e;
                const __m512i q0 = _mm512_loadu_si512(at + (size_t)k4[0] * 64);
                const __m512i q1 = _mm512_loadu_si512(at + (size_t)k4[1] * 64);
                const __m512i q2 = _mm512_loadu_si512(at + (size_t)k4[2] * 64);
                const __m512i q3 = _mm512_loadu_si512(at + (size_t)k4[3] * 64);
                const __m512i w = _mm512_set1_epi32(val[e]);
                SUMS
            }
            break;
        case V_QUADS: /* the kernel's loop: two entries a step into a0.. and b0.. */
        case V_QUADS_PAIR: /* the same, their k quads in one load, their weights in one */
            for (; e + 2 <= e1; e += 2) {
                const int32_t *x0, *x1;
                __m512i w0, w1;
                if (variant == V_QUADS) {
                    x0 = aqt + (size_t)qidx[e] * 64;
                    x1 = aqt + (size_t)qidx[e + 1] * 64;
                    w0 = _mm512_set1_epi32(val[e]);
                    w1 = _mm512_set1_epi32(val[e + 1]);
                } else {
                    uint32_t q2;
                    int64_t w2;
                    memcpy(&q2, qidx + e, 4);
                    memcpy(&w2, val + e, 8);
                    x0 = aqt + (size_t)(q2 & 0xffff) * 64;
                    x1 = aqt + (size_t)(q2 >> 16) * 64;
                    const __m512i ww = _mm512_set1_epi64(w2);
                    w0 = _mm512_shuffle_epi32(ww, _MM_PERM_AAAA);
                    w1 = _mm512_shuffle_epi32(ww, _MM_PERM_BBBB);
                }
                DP(a0, _mm512_loadu_si512(x0), w0); DP(b0, _mm512_loadu_si512(x1), w1);
                DP(a1, _mm512_loadu_si512(x0 + 16), w0); DP(b1, _mm512_loadu_si512(x1 + 16), w1);
                DP(a2, _mm512_loadu_si512(x0 + 32), w0); DP(b2, _mm512_loadu_si512(x1 + 32), w1);
                DP(a3, _mm512_loadu_si512(x0 + 48), w0); DP(b3, _mm512_loadu_si512(x1 + 48), w1);
            }
            for (; e < e1; e++) {
                const __m512i w = _mm512_set1_epi32(val[e]);
                QUAD(aqt + (size_t)qidx[e] * 64, w)
            }
            break;
        case V_QUADS_NO_INDEX: /* the quad from the entry number */
            for (; e < e1; e++) {
                const __m512i w = _mm512_set1_epi32(val[e]);
                QUAD(aqt + (size_t)((e * 37u) & qmask) * 64, w)
            }
            break;
        }
        int32_t *o = out + (n & 15) * 64;
        _mm512_store_si512(o, _mm512_add_epi32(a0, b0));
        _mm512_store_si512(o + 16, _mm512_add_epi32(a1, b1));
        _mm512_store_si512(o + 32, _mm512_add_epi32(a2, b2));
        _mm512_store_si512(o + 48, _mm512_add_epi32(a3, b3));
    }
}
__attribute__((noinline)) static void loop_compact(void) { columns(V_COMPACT); }
__attribute__((noinline)) static void loop_compact_u64(void) { columns(V_COMPACT_U64); }
__attribute__((noinline)) static void loop_compact_no_index(void) { columns(V_COMPACT_NO_INDEX); }
__attribute__((noinline)) static void loop_compact_no_unpack(void) { columns(V_COMPACT_NO_UNPACK); }
__attribute__((noinline)) static void loop_quads(void) { columns(V_QUADS); }
__attribute__((noinline)) static void loop_quads_pair(void) { columns(V_QUADS_PAIR); }
__attribute__((noinline)) static void loop_quads_no_index(void) { columns(V_QUADS_NO_INDEX); }
#define NLOOPS 7
static const char *names[] = {"compact", "compact_u64", "compact_no_index", "compact_no_unpack", "quads", "quads_pair", "quads_no_index"};
static void (*loops[])(void) = {loop_compact, loop_compact_u64, loop_compact_no_index, loop_compact_no_unpack, loop_quads, loop_quads_pair, loop_quads_no_index};

static double clock_hz(void) {
    uint64_t x = 1; const long n = 200000000; double t0 = now();
    for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    return 4.0 * n / (now() - t0);
}
#define PORTS_N 50000000L
static double rate_dpbusd(void) { /* 12 independent accumulators */
    __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    const __m512i x = _mm512_set1_epi32(3), w = _mm512_set1_epi32(5); double t0 = now();
#define D1(a) __asm__ volatile("vpdpbusd %1, %2, %0" : "+v"(a) : "v"(x), "v"(w));
    for (long i = 0; i < PORTS_N; i++) { D1(a0) D1(a1) D1(a2) D1(a3) D1(a4) D1(a5) D1(a6) D1(a7) D1(a8) D1(a9) D1(a10) D1(a11) }
    double t = now() - t0;
    out[0] = _mm512_reduce_add_epi32(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    return 12.0 * PORTS_N / t;
}
static double latency_dpbusd(void) {
    __m512i a = _mm512_set1_epi32(1); const __m512i x = _mm512_set1_epi32(3), w = _mm512_set1_epi32(5); double t0 = now();
    for (long i = 0; i < PORTS_N; i++) { D1(a) D1(a) D1(a) D1(a) }
    double t = now() - t0; out[1] = _mm512_reduce_add_epi32(a);
    return t / (4.0 * PORTS_N);
}
static double rate_loads(void) {
    double t0 = now();
    for (long i = 0; i < PORTS_N; i++) {
        __m512i r0, r1, r2, r3; const uint8_t *p = at + (size_t)(i & 15) * 256;
        __asm__ volatile("vmovdqu64 (%4), %0\n\tvmovdqu64 64(%4), %1\n\tvmovdqu64 128(%4), %2\n\tvmovdqu64 192(%4), %3"
                         : "=v"(r0), "=v"(r1), "=v"(r2), "=v"(r3) : "r"(p));
    }
    return 4.0 * PORTS_N / (now() - t0);
}
static double rate_unpack(void) { /* 8 independent chains */
    __m512i r0 = _mm512_set1_epi32(1), r1 = r0, r2 = r0, r3 = r0, r4 = r0, r5 = r0, r6 = r0, r7 = r0; const __m512i x = _mm512_set1_epi32(7);
    double t0 = now();
#define U1(r) __asm__ volatile("vpunpcklbw %1, %0, %0" : "+v"(r) : "v"(x));
    for (long i = 0; i < PORTS_N; i++) { U1(r0) U1(r1) U1(r2) U1(r3) U1(r4) U1(r5) U1(r6) U1(r7) }
    double t = now() - t0; out[2] = _mm512_reduce_add_epi32(r0 + r1 + r2 + r3 + r4 + r5 + r6 + r7);
    return 8.0 * PORTS_N / t;
}
int main(int argc, char **argv) {
    if (argc != 4 || atoi(argv[1]) < 4 || atoi(argv[1]) % 4 || atoi(argv[1]) > 65535 || atoi(argv[2]) < 1) {
        fprintf(stderr, "usage: %s K ENTRIES ROUNDS (K a multiple of 4 below 65536, ENTRIES >= 1)\n", argv[0]);
        return 2;
    }
    K = atoi(argv[1]); N = 768; per = atoi(argv[2]); const int rounds = atoi(argv[3]);
    uint8_t *panel = aligned_alloc(64, (size_t)K * 64);
    for (int i = 0; i < K * 64; i++) panel[i] = (uint8_t)rand();
    at = panel;
    for (qmask = 1; 2 * qmask <= (uint32_t)K / 4; qmask *= 2) {}
    qmask -= 1;
    ptr = malloc((N + 1) * sizeof *ptr); qidx = malloc((size_t)N * per * 2); k4s = malloc((size_t)N * per * 8);
    val = malloc((size_t)N * per * 4);
    ptr[0] = 0;
    for (int n = 0; n < N; n++) ptr[n + 1] = ptr[n] + per;
    for (size_t e = 0; e < (size_t)N * per; e++) {
        qidx[e] = (uint16_t)(rand() % (K / 4)); val[e] = rand();
        for (int j = 0; j < 4; j++) k4s[4 * e + j] = (uint16_t)(rand() % K);
    }
    const double hz = clock_hz();
    printf("clock %.2f GHz\n", hz / 1e9);
    printf("port rates a cycle: vpdpbusd zmm %.2f (latency %.1f cycles), zmm loads %.2f, vpunpcklbw zmm %.2f\n",
           rate_dpbusd() / hz, latency_dpbusd() * hz, rate_loads() / hz, rate_unpack() / hz);
    double best[NLOOPS];
    for (int m = 0; m < NLOOPS; m++) best[m] = 1e30;
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < NLOOPS; m++) {
            double t0 = now();
            for (int i = 0; i < 10; i++) loops[m]();
            double t = (now() - t0) / 10;
            if (t < best[m]) best[m] = t;
        }
    printf("K %d, %d entries a column, %d columns, 64 tokens:\n", K, per, N);
    for (int m = 0; m < NLOOPS; m++)
        printf("  %-18s %5.2f cycles an entry\n", names[m], best[m] * hz / ((double)N * per));
    return out[0] == 12345 && out[1] == 678;
}

/* sqc row-wise and attention kernels (fp32). Included once by every generated model.
 * Shapes arrive as arguments; generated code passes them as integer literals. */
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
{% include "kernels/pool.h" %}

#define SQC_RESTRICT __restrict__

/* Build time: gcc -O3 unswitches the loops of a row or attention task once per combination of
 * its flags (mask, QDQ stages, skip, bias...), and the copies cost more to compile than they
 * save at run time. On the tasks marked with this (the largest ones), measured on Zen 5:
 * sqc_attention_heads 92 -> 39 KB of code, sqc_layernorm_rows 21 -> 10 KB, and a bert-base
 * fp32 build's gcc 10.3 -> 5.5 s (the test fixture's int8 build 11.7 -> 6.2 s); the same
 * outputs, and run times within noise (interleaved, fp32 / dynamic int8 / QDQ 1o4i at 1 x 128
 * to 4 x 384: -1.6% to +1.1%). Inlining into them is unchanged. */
#if defined(__GNUC__) && !defined(__clang__)
#define SQC_NO_UNSWITCH __attribute__((optimize("no-unswitch-loops")))
#else
#define SQC_NO_UNSWITCH
#endif

static inline float sqc_gelu_erf_scalar(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float sqc_gelu_tanh_scalar(float x) {
    return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

/* Float to integer casts: out-of-range and NaN values are undefined behaviour in C; saturate
 * instead (NaN -> 0) so a hostile input cannot make generated code misbehave. */
static inline int64_t sqc_f2i64(double x) {
    if (!(x == x)) return 0;
    if (x >= 9.2233720368547758e18) return INT64_MAX;
    if (x <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)x;
}
static inline int32_t sqc_f2i32(double x) {
    if (!(x == x)) return 0;
    if (x >= 2147483647.0) return INT32_MAX;
    if (x <= -2147483648.0) return INT32_MIN;
    return (int32_t)x;
}

/* Row vectors for the row kernels: 16 lanes where the target has AVX-512, else 8. */
#ifdef __AVX512F__
#define SQC_RW 16
#else
#define SQC_RW 8
#endif
typedef float sqc_rv __attribute__((vector_size(SQC_RW * 4)));

static inline sqc_rv sqc_rv_load(const float *p) { sqc_rv v; memcpy(&v, p, sizeof v); return v; }
static inline void sqc_rv_store(float *p, sqc_rv v) { memcpy(p, &v, sizeof v); }
/* a * b + c rounded once, always: gcc's -ffp-contract=fast fuses `a * b + c` or not depending
 * on the code around it (inlining, unrolling), and a kernel's bits should not */
static inline sqc_rv sqc_rv_fma(sqc_rv a, sqc_rv b, sqc_rv c) {
#if SQC_RW == 16
    return (sqc_rv)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#else
    return (sqc_rv)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#endif
}
static inline float sqc_rv_sum(sqc_rv v) {
    float s = 0.0f;
    for (int i = 0; i < SQC_RW; ++i) s += v[i];
    return s;
}

/* the lanes of v halved pairwise down to 4 (a tree: log2(SQC_RW) dependent steps, where a
 * running scalar sum waits on SQC_RW) */
static inline __m128 sqc_rv_fold4(sqc_rv v, int max) {
#if SQC_RW == 16
    __m512 x;
    memcpy(&x, &v, sizeof x);
    const __m256 lo = _mm512_castps512_ps256(x);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    const __m256 h = max ? _mm256_max_ps(lo, hi) : _mm256_add_ps(lo, hi);
#else
    __m256 h;
    memcpy(&h, &v, sizeof h);
#endif
    const __m128 a = _mm256_castps256_ps128(h), b = _mm256_extractf128_ps(h, 1);
    return max ? _mm_max_ps(a, b) : _mm_add_ps(a, b);
}

static inline float sqc_rv_tree_sum(sqc_rv v) {
    __m128 q = sqc_rv_fold4(v, 0);
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

static inline float sqc_rv_tree_max(sqc_rv v) {
    __m128 q = sqc_rv_fold4(v, 1);
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(q, _mm_movehdup_ps(q)));
}

/* Softmax over the last axis of length n, rows independent. */
typedef struct { int n; const float *x; float *y; } sqc_softmax_job;

static void sqc_softmax_rows(void *job, int64_t r0, int64_t r1) {
    const sqc_softmax_job *j = (const sqc_softmax_job *)job;
    const int n = j->n;
    const float *SQC_RESTRICT x = j->x;
    float *SQC_RESTRICT y = j->y;
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float mx = -INFINITY;
        for (int i = 0; i < n; ++i) mx = xr[i] > mx ? xr[i] : mx;
        float sum = 0.0f;
        for (int i = 0; i < n; ++i) {
            yr[i] = expf(xr[i] - mx);
            sum += yr[i];
        }
        const float inv = 1.0f / sum;
        for (int i = 0; i < n; ++i) yr[i] *= inv;
    }
}

static void sqc_softmax_f32(int64_t rows, int n, const float *SQC_RESTRICT x,
                            float *SQC_RESTRICT y, int nthreads) {
    sqc_softmax_job job = { n, x, y };
    sqc_parallel_for(rows > 64 ? nthreads : 1, rows, sqc_chunk(rows, nthreads, 4),
                     sqc_softmax_rows, &job);
}

/* Attention for `batch` examples, each with H heads:
 *   out[h, s, :] = sum_j softmax_j(scale * q[h, s, :] . k[h, j, :] + mask[h, s, j]) v[h, j, :]
 * Every operand is a strided view (offset, stride_h, stride_s, stride_d) into one example's
 * buffer; *_bs is the distance between examples (0 for a constant shared by all). The mask
 * is additive; its strides are 0 along broadcast axes.
 *
 * One task is one (example, head). K is packed once as K^T [D][SkW] and V as [Sk][DW] (SkW, DW
 * rounded up to W = SQC_RW lanes, zero-filled), so both products are small register-blocked
 * GEMMs: a block of SQC_ATT_ROWS query rows x W keys (or W features) accumulates in registers
 * over the inner dimension, each load of K^T or V serving every row of the block. Vectors are
 * GCC vector extensions of SQC_RW lanes: 16 (zmm) with AVX-512, 8 (ymm) with AVX2. */
typedef struct { int64_t off, sh, ss, sd, bs; } sqc_view;
typedef sqc_rv sqc_v8; /* (named for its first width; SQC_RW lanes) */
#define SQC_ATT_ROWS 8
/* vectors of keys (scores) or of features (output) per register block: 8 x 2 = 16
 * accumulators fit AVX-512's 32 registers; AVX2's 16 hold 8 x 1 */
#if SQC_RW == 16
#define SQC_ATT_COLS 2
#else
#define SQC_ATT_COLS 1
#endif

typedef int32_t sqc_v8i __attribute__((vector_size(SQC_RW * 4)));

static inline sqc_v8 sqc_v8_load(const float *p) { sqc_v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void sqc_v8_store(float *p, sqc_v8 v) { memcpy(p, &v, sizeof v); }

/* a where mask m is set (all ones), b elsewhere */
static inline sqc_v8 sqc_v8_select(sqc_v8i m, sqc_v8 a, sqc_v8 b) {
    return (sqc_v8)(((sqc_v8i)a & m) | ((sqc_v8i)b & ~m));
}

/* a > b ? a : b and a < b ? a : b, lane by lane, exactly: vmaxps / vminps return their second
 * operand unless the first compares greater (less), NaN and signed zeros included. One
 * instruction, where sqc_v8_select of the same comparison is three. */
static inline sqc_v8 sqc_v8_max(sqc_v8 a, sqc_v8 b) {
#if SQC_RW == 16
    return (sqc_v8)_mm512_max_ps((__m512)a, (__m512)b);
#else
    return (sqc_v8)_mm256_max_ps((__m256)a, (__m256)b);
#endif
}

static inline sqc_v8 sqc_v8_min(sqc_v8 a, sqc_v8 b) {
#if SQC_RW == 16
    return (sqc_v8)_mm512_min_ps((__m512)a, (__m512)b);
#else
    return (sqc_v8)_mm256_min_ps((__m256)a, (__m256)b);
#endif
}

/* nearbyint(x) as int32 lanes (the current rounding mode: nearest even), |x| < 2^31 */
static inline sqc_v8i sqc_v8_rint_i32(sqc_v8 x) {
#if SQC_RW == 16
    return (sqc_v8i)_mm512_cvtps_epi32((__m512)x);
#else
    return (sqc_v8i)_mm256_cvtps_epi32((__m256)x);
#endif
}

static inline sqc_v8i sqc_v8i_max(sqc_v8i a, sqc_v8i b) {
#if SQC_RW == 16
    return (sqc_v8i)_mm512_max_epi32((__m512i)a, (__m512i)b);
#else
    return (sqc_v8i)_mm256_max_epi32((__m256i)a, (__m256i)b);
#endif
}

static inline sqc_v8i sqc_v8i_min(sqc_v8i a, sqc_v8i b) {
#if SQC_RW == 16
    return (sqc_v8i)_mm512_min_epi32((__m512i)a, (__m512i)b);
#else
    return (sqc_v8i)_mm256_min_epi32((__m256i)a, (__m256i)b);
#endif
}

/* exp(x) for SQC_RW lanes: x = n ln2 + r with |r| <= ln2/2, exp(r) by Cephes' expf polynomial,
 * 2^n built in the exponent bits. Inputs are clamped to [-87.3, 88.3], where expf neither
 * underflows to a denormal nor overflows; within 2 ulp of libm's expf there. Below -87.3 the
 * result is 0 (flushed: exp(-87.3) = 1.2e-38, the smallest normal float), so the keys of a
 * masked tail, scored thousands below their row's maximum, get probability exactly 0 and the
 * attention skips them (sqc_att_key_end). */
static inline sqc_v8 sqc_v8_exp(sqc_v8 x) {
    const sqc_v8 hi = (sqc_v8){ 0 } + 88.3f, lo = (sqc_v8){ 0 } - 87.3f;
    const sqc_v8i under = x < lo; /* NaN compares false: it stays NaN */
    x = sqc_v8_min(hi, x);
    x = sqc_v8_max(lo, x);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const sqc_v8 n = (x * 1.44269504088896341f + magic) - magic;
    const sqc_v8 r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    sqc_v8 y = (sqc_v8){ 0 } + 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
#if SQC_RW == 16
    /* y 2^n in one instruction: the same exact scaling (rounded only where the result is
     * subnormal, as the multiply by 2^n below) */
    y = (sqc_v8)_mm512_scalef_ps((__m512)y, (__m512)n);
#else
    const sqc_v8i bits = (__builtin_convertvector(n, sqc_v8i) + 127) << 23;
    sqc_v8 scale;
    memcpy(&scale, &bits, sizeof scale);
    y = y * scale;
#endif
    return (sqc_v8)((sqc_v8i)y & ~under);
}

/* saturate(round(x / scale) + zp) into [lo, hi]; NaN gives zp (clamped). Branch-free, so
 * loops of it vectorize. */
static inline int32_t sqc_quantize_f32(float x, float scale, int32_t zp, int32_t lo, int32_t hi) {
    float r = nearbyintf(x / scale) + (float)zp;
    r = r == r ? r : (float)zp;
    r = r < (float)lo ? (float)lo : r;
    r = r > (float)hi ? (float)hi : r;
    return (int32_t)r;
}

/* DequantizeLinear(QuantizeLinear(x)) (QDQ graphs): x rounded to the grid of (scale, zp),
 * saturated to [lo, hi] in quantized units, NaN to zp: (clamp(nearbyint(x / s) + zp, lo, hi) -
 * zp) * s. Computed with the zero point taken out of the clamp (bounds lo - zp, hi - zp, NaN to
 * 0): float arithmetic on small integers is exact, so the value is the same, two operations
 * fewer; the branch-free form vectorizes.
 *
 * The "+ 0.0f" keeps the result a rounded product, as DequantizeLinear's output is: gcc
 * contracts a multiply followed by an add into one fma (-ffp-contract=fast), so without it
 * fq(a) + b became fma(level, s, b), rounded once where onnxruntime rounds twice. With it the
 * contraction is fma(level, s, 0) (the same rounded product, zero as +0 like onnxruntime's)
 * and the add of b stays an add. */
static inline float sqc_fake_quant_f32(float x, float scale, float zp, float lo, float hi) {
    float r = nearbyintf(x / scale);
    r = r == r ? r : 0.0f;
    r = r < lo - zp ? lo - zp : r;
    r = r > hi - zp ? hi - zp : r;
    return r * scale + 0.0f;
}

/* y[i] = lut[q(x[i])] for n values x on one quantization grid (scale s, zero point zp, lowest
 * level lo), q = nearbyint(x / s) + zp - lo, the level's index in [0, levels). x * (1 / s) gives
 * the same index as x / s for x on the grid: x = (level - zp) * s within half an ulp, and
 * the two roundings move it by under 1e-4 of a level. NaN or values off the range are clamped
 * to the ends (never read past the table). */
typedef struct {
    const float *x;
    float *y;
    const float *lut;
    float inv_s, shift, top;
    uint8_t *y8; /* non-NULL: y8[i] = (uint8_t)lut[q] instead (the table holds bytes' values) */
} sqc_lut_job;

static void sqc_lut_task(void *job_, int64_t i0, int64_t i1) {
    const sqc_lut_job *j = (const sqc_lut_job *)job_;
    const float *restrict x = j->x, *restrict lut = j->lut;
    float *restrict y = j->y;
    const float inv_s = j->inv_s, shift = j->shift, top = j->top;
    uint8_t *restrict y8 = j->y8;
    int64_t i = i0;
    /* gcc does not use the gather instructions on its own here */
#if defined(__AVX512F__)
    if (top == 255.0f) {
        /* 256 levels: the table in 16 registers, two-table permutes and three selects per
         * vector (faster than vgatherdps, which loads lane by lane) */
        const __m512 vinv = _mm512_set1_ps(inv_s);
        const __m512i vshift = _mm512_set1_epi32((int)shift), vtop = _mm512_set1_epi32(255);
        __m512 t[16];
        for (int k = 0; k < 16; ++k) t[k] = _mm512_loadu_ps(lut + 16 * k);
        for (; i + 16 <= i1; i += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
            q = _mm512_add_epi32(q, vshift);
            q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), vtop);
            __m512 p[8];
            for (int k = 0; k < 8; ++k) p[k] = _mm512_permutex2var_ps(t[2 * k], q, t[2 * k + 1]);
            const __mmask16 b5 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(32));
            const __mmask16 b6 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(64));
            const __mmask16 b7 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(128));
            for (int k = 0; k < 4; ++k) p[k] = _mm512_mask_blend_ps(b5, p[2 * k], p[2 * k + 1]);
            for (int k = 0; k < 2; ++k) p[k] = _mm512_mask_blend_ps(b6, p[2 * k], p[2 * k + 1]);
            const __m512 v = _mm512_mask_blend_ps(b7, p[0], p[1]);
            if (y8)
                _mm_storeu_si128((__m128i *)(y8 + i), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
            else
                _mm512_storeu_ps(y + i, v);
        }
    }
    if (!y8) {
        const __m512 vinv = _mm512_set1_ps(inv_s);
        const __m512i vshift = _mm512_set1_epi32((int)shift), vtop = _mm512_set1_epi32((int)top);
        for (; i + 16 <= i1; i += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
            q = _mm512_add_epi32(q, vshift); /* NaN: INT_MIN, clamped to 0 as below */
            q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), vtop);
            _mm512_storeu_ps(y + i, _mm512_i32gather_ps(q, lut, 4));
        }
    }
#elif defined(__AVX2__)
    if (!y8) {
        const __m256 vinv = _mm256_set1_ps(inv_s);
        const __m256i vshift = _mm256_set1_epi32((int)shift), vtop = _mm256_set1_epi32((int)top);
        for (; i + 8 <= i1; i += 8) {
            __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
            q = _mm256_add_epi32(q, vshift);
            q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), vtop);
            _mm256_storeu_ps(y + i, _mm256_i32gather_ps(lut, q, 4));
        }
    }
#endif
    for (; i < i1; ++i) {
        float r = nearbyintf(x[i] * inv_s) + shift;
        r = r == r ? r : 0.0f;
        r = r < 0.0f ? 0.0f : r;
        r = r > top ? top : r;
        if (y8)
            y8[i] = (uint8_t)lut[(int32_t)r];
        else
            y[i] = lut[(int32_t)r];
    }
}

/* y8 non-NULL: write bytes (the table's values are 0..255) to y8 instead of floats to y */
static void sqc_lut_map(int64_t n, const float *x, float *y, uint8_t *y8, const float *lut,
                        float inv_s, int shift, int levels, int nt) {
    sqc_lut_job job = { x, y, lut, inv_s, (float)shift, (float)(levels - 1), y8 };
    sqc_parallel_for(nt, n, sqc_chunk(n, nt, 4096), sqc_lut_task, &job);
}

/* x[0..n) rounded by one attention stage g = {scale, zp, lo, hi} (scale 0: no rounding) */
static inline void sqc_att_fq(float *x, int n, const float *g) {
    if (g[0] == 0.0f) return;
    const float s = g[0], z = g[1], lo = g[2], hi = g[3];
    for (int j = 0; j < n; ++j) x[j] = sqc_fake_quant_f32(x[j], s, z, lo, hi);
}

/* dst[c * ds + i] = src[i * ss + c] for a W x W block (W = SQC_RW): W row loads, the usual
 * in-register transpose (4 shuffle stages of W each with AVX-512, 3 with AVX2), W row stores */
static inline void sqc_att_transpose_block(const float *src, int64_t ss, float *dst, int64_t ds) {
#if SQC_RW == 16
    __m512 a[16], t[16], u[16];
    for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_ps(src + i * ss);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
    }
    /* u[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 3 */
    for (int g = 0; g < 16; g += 4) {
        u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        const __m512 v02 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        const __m512 w02 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        const __m512 v13 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        const __m512 w13 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        _mm512_storeu_ps(dst + c * ds, _mm512_shuffle_f32x4(v02, w02, 0x88));
        _mm512_storeu_ps(dst + (8 + c) * ds, _mm512_shuffle_f32x4(v02, w02, 0xDD));
        _mm512_storeu_ps(dst + (4 + c) * ds, _mm512_shuffle_f32x4(v13, w13, 0x88));
        _mm512_storeu_ps(dst + (12 + c) * ds, _mm512_shuffle_f32x4(v13, w13, 0xDD));
    }
#else
    __m256 a[8], t[8], u[8];
    for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(src + i * ss);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(a[i], a[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(a[i], a[i + 1]);
    }
    for (int g = 0; g < 8; g += 4) {
        u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        _mm256_storeu_ps(dst + c * ds, _mm256_permute2f128_ps(u[c], u[4 + c], 0x20));
        _mm256_storeu_ps(dst + (4 + c) * ds, _mm256_permute2f128_ps(u[c], u[4 + c], 0x31));
    }
#endif
}

/* K^T: kt[d][j] = k[j][d] for j < Sk, 0 up to Sk8; in blocks of W keys. Whole W x W blocks
 * (contiguous features) are transposed in registers; the rest feature by feature, the W rows
 * staying in L1 while each feature of them is collected into one vector. The scalar part is not
 * auto-vectorized: gcc turns the collection into a scatter per row (vscatterdps), several times
 * slower. */
__attribute__((optimize("no-tree-vectorize"))) static void
sqc_att_pack_kt(float *kt, const float *kb, sqc_view kv, int Sk, int Sk8, int D) {
    for (int j0 = 0; j0 < Sk8; j0 += SQC_RW) {
        const int n = Sk - j0 < SQC_RW ? Sk - j0 : SQC_RW;
        int d = 0;
        if (kv.sd == 1 && n == SQC_RW) /* whole W x W blocks by register transposes */
            for (; d + SQC_RW <= D; d += SQC_RW)
                sqc_att_transpose_block(kb + j0 * kv.ss + d, kv.ss, kt + (size_t)d * Sk8 + j0, Sk8);
        for (; d < D; ++d) {
            float lanes[SQC_RW];
            const float *kd = kb + j0 * kv.ss + d * kv.sd;
            for (int i = 0; i < n; ++i) lanes[i] = kd[i * kv.ss];
            for (int i = n; i < SQC_RW; ++i) lanes[i] = 0.0f;
            sqc_v8_store(kt + (size_t)d * Sk8 + j0, sqc_v8_load(lanes));
        }
    }
}

/* the cache lines of one row of n floats (contiguous rows only) */
static inline void sqc_att_prefetch_row(const float *x, int64_t sx, int n) {
    if (sx != 1) return;
    for (int i = 0; i < n; i += 16) _mm_prefetch((const char *)(x + i), _MM_HINT_T0);
    _mm_prefetch((const char *)(x + n - 1), _MM_HINT_T0);
}

/* A quantization grid {scale, zp, lo, hi} as vectors, made once: loops that store floats cannot
 * keep the table's values in registers (the stores may alias it). */
typedef struct {
    sqc_v8 s, lo, hi; /* scale; the level bounds less the zero point */
    sqc_v8 r, near;   /* 1 / s, rounded; see sqc_v8_level_grid_rcp */
} sqc_v8_grid;

static inline sqc_v8_grid sqc_v8_grid_of(const float *g) {
    const float lo = g[2] - g[1], hi = g[3] - g[1];
    const float b = fmaxf(fabsf(lo), fabsf(hi)) + 1.0f;
    /* the multiply needs a normal, finite 1 / s (a subnormal one has fewer bits); near <= 0
     * (no stage, such a scale, or bounds past 2^21) sends every vector to the division */
    const float r = g[0] != 0.0f ? 1.0f / g[0] : 0.0f;
    const int normal = r >= 0x1p-126f && r <= 0x1p127f;
    return (sqc_v8_grid){ (sqc_v8){ 0 } + g[0], (sqc_v8){ 0 } + lo, (sqc_v8){ 0 } + hi,
                          (sqc_v8){ 0 } + r,
                          (sqc_v8){ 0 } + (normal ? 0.5f - b * 0x1p-22f : 0.0f) };
}

/* sqc_fake_quant_f32 on SQC_RW lanes, the same value: the quotient is clamped to the integer
 * bounds before rounding (the same as after), which keeps the magic-constant rounding (nearest
 * even) exact; NaN goes to level zp as there. */
static inline sqc_v8 sqc_v8_level_grid(sqc_v8 x, sqc_v8_grid g) {
    const float magic = 12582912.0f;
    sqc_v8 q = x / g.s;
    q = sqc_v8_select(q == q, q, (sqc_v8){ 0 });
    q = sqc_v8_max(g.lo, q);
    q = sqc_v8_min(g.hi, q);
    return (q + magic) - magic; /* the level less the zero point */
}

static inline sqc_v8 sqc_v8_fake_quant_grid(sqc_v8 x, sqc_v8_grid g) {
    return sqc_v8_level_grid(x, g) * g.s + 0.0f; /* "+ 0.0f": see sqc_fake_quant_f32 */
}

/* every lane of a is less than the same lane of b (NaN is not) */
static inline int sqc_v8_all_less(sqc_v8 a, sqc_v8 b) {
#if SQC_RW == 16
    return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_LT_OQ) == 0xffff;
#else
    return _mm256_movemask_ps(_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_LT_OQ)) == 0xff;
#endif
}

/* sqc_v8_level_grid by a multiply where that is exact, the division elsewhere: the same value.
 * q' = x * r (r = 1 / s rounded) is within 3 ulps of q = x / s (|q' - x / s| <= 2u |x / s|,
 * |q - x / s| <= u |x / s|, u = 2^-24), so both round to the same integer unless a half-integer
 * lies within |q'| 2^-22 of q'. For |q'| <= B = max(|lo|, |hi|) + 1 that distance is at most
 * 0.5 - near, so a quotient whose distance d to its nearest integer is under near is exact; a
 * larger |q'| clamps to the bound either way. Otherwise (or NaN, or an infinity: their d is
 * NaN) the vector takes the division, which also rounds exact ties to even as before; for an
 * 8-bit grid about 2^-13 of the lanes land that near a half-integer. The integer attention's
 * score stages and probability levels (two divisions a score) use it: bert-base pruned QDQ,
 * 1 thread, +1.6% at 1 x 128, +2.0% at 16 x 128, +1.8% at 8 x 384. The int8 GEMMs' VNNI and
 * sparse epilogues have their own form of it (int8_gemm.h.j2, sqc_fq_level_rcp_f32xv); the AMX
 * blocks' epilogue, whose divisions overlap the tile work, was slower with it. The QDQ LayerNorm
 * takes it too (SQC_LN_RCP). */
static inline sqc_v8 sqc_v8_level_grid_rcp(sqc_v8 x, sqc_v8_grid g) {
    const float magic = 12582912.0f;
    const sqc_v8 q = x * g.r;
    const sqc_v8 n = (q + magic) - magic;
    const sqc_v8 d = (sqc_v8)((sqc_v8i)(q - n) & 0x7fffffff); /* |q - n|, NaN stays NaN */
    if (!sqc_v8_all_less(d, g.near))
        return sqc_v8_level_grid(x, g);
    return sqc_v8_min(g.hi, sqc_v8_max(g.lo, n));
}

static inline sqc_v8 sqc_v8_fake_quant_grid_rcp(sqc_v8 x, sqc_v8_grid g) {
    return sqc_v8_level_grid_rcp(x, g) * g.s + 0.0f;
}

/* the first n (<= SQC_RW) lanes of b (integer-valued floats in [0, 255]) as bytes to p */
static inline void sqc_rv_store_u8(uint8_t *p, sqc_v8 b, int n) {
#if SQC_RW == 16
    const __m128i v = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32((__m512)b));
    if (n >= 16) {
        _mm_storeu_si128((__m128i *)p, v);
        return;
    }
#else
    const __m256i i = _mm256_cvttps_epi32((__m256)b);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    const __m128i v = _mm_packus_epi16(w, w);
    if (n >= 8) {
        _mm_storel_epi64((__m128i *)p, v);
        return;
    }
#endif
    uint8_t lanes[16];
    _mm_storeu_si128((__m128i *)lanes, v);
    memcpy(p, lanes, n > 0 ? (size_t)n : 0);
}

/* the same, g = {scale, zp, lo, hi} */
static inline sqc_v8 sqc_v8_fake_quant(sqc_v8 x, const float *g) {
    return sqc_v8_fake_quant_grid(x, sqc_v8_grid_of(g));
}

/* SQC_LN_RCP (default 1): sqc_layernorm_q's two roundings (the sum's stage, the output's levels)
 * by sqc_v8_level_grid_rcp, the same values; 0 (-DSQC_LN_RCP=0 in SQC_EXTRA_CFLAGS): by the
 * division, for an A/B on a CPU whose divider is fast. The Xeon (avx512vbmi, pruned 90% QDQ):
 * the LayerNorms ~10% faster, end to end +1.7% / +2.2% at 16 x 128 (1 / 2 threads), +1.5% at
 * 1 x 128; Zen 4 not measured. */
#ifndef SQC_LN_RCP
#define SQC_LN_RCP 1
#endif

/* y[r, :] = (x[r, :] (+ skip[r, :]) (+ bias) - mean) / sqrt(var + eps) * gamma + beta, over n
 * features, for rows r in [0, rows). sum_out (optional) receives x + skip + bias. Two passes
 * over the row (mean, then the squared deviations from it), each summed in SQC_RW float lanes
 * and the lanes in double: no cancellation, errors of a few ulps.
 *
 * QDQ graphs (passes/quantize_layernorm.py) add three roundings, each the same operations as the
 * QDQ pair it replaces: skip8 (instead of skip) holds uint8 levels on the grid {skip_s, skip_zp},
 * whose values (level - zp) * s are added; sum_fq (NULL: none) rounds the sum to its grid
 * {scale, zp, lo, hi} (sqc_fake_quant_f32); and y8 (instead of y) receives the output quantized
 * to uint8 on {y_s, y_zp} (QuantizeLinear: saturate(nearbyint(y / s) + zp)). */
typedef struct {
    int n;
    const float *x, *skip, *bias, *gamma, *beta;
    float eps;
    float *y, *sum_out;
    const uint8_t *skip8;
    float skip_s, skip_zp;
    const float *sum_fq;
    uint8_t *y8;
    float y_s, y_zp;
} sqc_layernorm_job;

/* the values of SQC_RW uint8 levels on the grid {s, zp}: (level - zp) * s, a rounded product
 * ("+ 0.0f": see sqc_fake_quant_f32). (Intrinsics: gcc converts a vector of bytes to floats
 * one lane at a time.) */
static inline sqc_rv sqc_rv_dequantize_u8(const uint8_t *p, float s, float zp) {
#if SQC_RW == 16
    const sqc_rv l = (sqc_rv)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
#else
    const sqc_rv l = (sqc_rv)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#endif
    return (l - zp) * s + 0.0f;
}

/* G rows at once, each computed exactly as alone: the sums of a row are one dependent chain
 * of vector adds (each waits on the last), so a row alone runs at the adds' latency; G rows
 * interleaved keep G chains in flight. Called with a constant G (inlined, loops unrolled).
 * The fused multiply-adds are spelled out (sqc_rv_fma, fma, fmaf) where gcc fused them in the
 * one-row loop: left to -ffp-contract, the unrolled group fused them for some rows and not
 * others, and the row's bits then depended on its place in the group (bert-base at 1 x 128:
 * 0.539 -> 0.450 ms per SkipLayerNorm on one thread, bits unchanged). The row's sum is read
 * back from sum_out, from the output (floats), from a stack row (bytes), or, where it is x
 * itself (no skip, bias or rounding), from x without a copy. */
#define SQC_LN_G 4
static inline __attribute__((always_inline)) void sqc_layernorm_group(const sqc_layernorm_job *j,
                                                                      int64_t r, const int G) {
    const int n = j->n;
    const float *SQC_RESTRICT bias = j->bias;
    const float *SQC_RESTRICT gamma = j->gamma, *SQC_RESTRICT beta = j->beta;
    const float *sum_fq = j->sum_fq;
    const float skip_s = j->skip_s, skip_zp = j->skip_zp, y_s = j->y_s, y_zp = j->y_zp;
    const int nv = n / SQC_RW * SQC_RW;
    const int copy = j->skip || j->skip8 || bias || sum_fq || j->sum_out;
    const sqc_v8_grid gs = sum_fq ? sqc_v8_grid_of(sum_fq) : (sqc_v8_grid){ 0 };
    float stack_rows[j->y8 && copy && !j->sum_out ? G * n : 1];
    const float *xr[SQC_LN_G], *sk[SQC_LN_G];
    const uint8_t *sk8[SQC_LN_G];
    float *yr[SQC_LN_G], *row[SQC_LN_G], m[SQC_LN_G], inv[SQC_LN_G];
    uint8_t *yr8[SQC_LN_G];
    sqc_rv acc[SQC_LN_G];
    for (int g = 0; g < G; ++g) {
        xr[g] = j->x + (r + g) * n;
        sk[g] = j->skip ? j->skip + (r + g) * n : NULL;
        sk8[g] = j->skip8 ? j->skip8 + (r + g) * n : NULL;
        yr[g] = j->y ? j->y + (r + g) * n : NULL;
        yr8[g] = j->y8 ? j->y8 + (r + g) * n : NULL;
        row[g] = j->sum_out ? j->sum_out + (r + g) * n : j->y8 ? stack_rows + g * n : yr[g];
        acc[g] = (sqc_rv){ 0 };
    }
    for (int i = 0; i < nv; i += SQC_RW) {
        for (int g = 0; g < G; ++g) {
            sqc_rv v = sqc_rv_load(xr[g] + i);
            if (sk[g]) v += sqc_rv_load(sk[g] + i);
            if (sk8[g]) v += sqc_rv_dequantize_u8(sk8[g] + i, skip_s, skip_zp);
            if (bias) v += sqc_rv_load(bias + i);
            if (sum_fq)
                v = SQC_LN_RCP ? sqc_v8_fake_quant_grid_rcp(v, gs) : sqc_v8_fake_quant_grid(v, gs);
            if (copy) sqc_rv_store(row[g] + i, v);
            acc[g] += v;
        }
    }
    const float *sum[SQC_LN_G];
    for (int g = 0; g < G; ++g) {
        double total = 0.0;
        for (int l = 0; l < SQC_RW; ++l) total += acc[g][l];
        for (int i = nv; i < n; ++i) {
            float v = xr[g][i];
            if (sk[g]) v += sk[g][i];
            if (sk8[g]) v += ((float)sk8[g][i] - skip_zp) * skip_s + 0.0f;
            if (bias) v += bias[i];
            if (sum_fq) v = sqc_fake_quant_f32(v, sum_fq[0], sum_fq[1], sum_fq[2], sum_fq[3]);
            if (copy) row[g][i] = v;
            total += v;
        }
        m[g] = (float)(total / n);
        acc[g] = (sqc_rv){ 0 };
        sum[g] = copy ? row[g] : xr[g];
    }
    for (int i = 0; i < nv; i += SQC_RW) {
        for (int g = 0; g < G; ++g) {
            const sqc_rv d = sqc_rv_load(sum[g] + i) - m[g];
            acc[g] = sqc_rv_fma(d, d, acc[g]);
        }
    }
    for (int g = 0; g < G; ++g) {
        double var = 0.0;
        for (int l = 0; l < SQC_RW; ++l) var += acc[g][l];
        for (int i = nv; i < n; ++i) {
            const double d = sum[g][i] - m[g];
            var = fma(d, d, var);
        }
        inv[g] = (float)(1.0 / sqrt(var / n + (double)j->eps));
    }
    const float yg[4] = { y_s, y_zp, 0.0f, 255.0f };
    const sqc_v8_grid gy = sqc_v8_grid_of(yg);
    for (int i = 0; i < nv; i += SQC_RW) {
        for (int g = 0; g < G; ++g) {
            const sqc_rv v = (sqc_rv_load(sum[g] + i) - m[g]) * inv[g];
            const sqc_rv y = beta ? sqc_rv_fma(v, sqc_rv_load(gamma + i), sqc_rv_load(beta + i))
                                  : v * sqc_rv_load(gamma + i);
            if (yr8[g])
                sqc_rv_store_u8(yr8[g] + i,
                                (SQC_LN_RCP ? sqc_v8_level_grid_rcp(y, gy) : sqc_v8_level_grid(y, gy))
                                    + y_zp, SQC_RW);
            else
                sqc_rv_store(yr[g] + i, y);
        }
    }
    for (int g = 0; g < G; ++g) {
        for (int i = nv; i < n; ++i) {
            const float v = (sum[g][i] - m[g]) * inv[g];
            const float y = beta ? fmaf(v, gamma[i], beta[i]) : v * gamma[i];
            if (yr8[g])
                yr8[g][i] = (uint8_t)sqc_quantize_f32(y, y_s, (int32_t)y_zp, 0, 255);
            else
                yr[g][i] = y;
        }
    }
}

SQC_NO_UNSWITCH static void sqc_layernorm_rows(void *job, int64_t r0, int64_t r1) {
    const sqc_layernorm_job *j = (const sqc_layernorm_job *)job;
    int64_t r = r0;
    for (; r + SQC_LN_G <= r1; r += SQC_LN_G)
        sqc_layernorm_group(j, r, SQC_LN_G);
    for (; r < r1; ++r)
        sqc_layernorm_group(j, r, 1);
}

static void sqc_layernorm_run(int64_t rows, const sqc_layernorm_job *job, int nthreads) {
    sqc_parallel_for(rows > 16 ? nthreads : 1, rows, sqc_chunk(rows, nthreads, 4),
                     sqc_layernorm_rows, (void *)job);
}

static void sqc_layernorm_f32(int64_t rows, int n, const float *SQC_RESTRICT x,
                              const float *SQC_RESTRICT skip, const float *SQC_RESTRICT bias,
                              const float *SQC_RESTRICT gamma, const float *SQC_RESTRICT beta,
                              float eps, float *SQC_RESTRICT y, float *SQC_RESTRICT sum_out,
                              int nthreads) {
    sqc_layernorm_job job = { n, x, skip, bias, gamma, beta, eps, y, sum_out };
    sqc_layernorm_run(rows, &job, nthreads);
}

/* sqc_layernorm_f32 with a QDQ graph's roundings (see sqc_layernorm_job): skip8 and y8 may be
 * NULL (then skip and y are read and written as floats) */
static void sqc_layernorm_q(int64_t rows, int n, const float *x, const float *skip,
                            const uint8_t *skip8, float skip_s, float skip_zp, const float *bias,
                            const float *sum_fq, const float *gamma, const float *beta, float eps,
                            float *y, uint8_t *y8, float y_s, float y_zp, int nthreads) {
    sqc_layernorm_job job = { n, x, skip, bias, gamma, beta, eps, y, NULL,
                              skip8, skip_s, skip_zp, sum_fq, y8, y_s, y_zp };
    sqc_layernorm_run(rows, &job, nthreads);
}

/* features d0 .. min(d0 + W, D) of one output row (feature stride sd) from a vector; rounded
 * by the output stage g first when there is one (QDQ graphs: g[0] != 0) */
static inline void sqc_att_store_row(float *os, int64_t sd, int d0, int D, sqc_v8 v, const float *g) {
    if (g && g[0] != 0.0f)
        v = sqc_v8_fake_quant(v, g);
    float lanes[SQC_RW];
    sqc_v8_store(lanes, v);
    const int n = D - d0 < SQC_RW ? D - d0 : SQC_RW;
    if (sd == 1 && n == SQC_RW) {
        sqc_v8_store(os + d0, v);
        return;
    }
    for (int i = 0; i < n; ++i) os[(d0 + i) * sd] = lanes[i];
}

/* sqc_att_store_row for bytes: features d0 .. min(d0 + W, D) of one output row from a vector
 * of integer-valued floats in [0, 255] */
static inline void sqc_att_store_row8(uint8_t *os, int64_t sd, int d0, int D, sqc_v8 v) {
    const int n = D - d0 < SQC_RW ? D - d0 : SQC_RW;
    if (sd == 1) {
        sqc_rv_store_u8(os + d0, v, n);
        return;
    }
    for (int i = 0; i < n; ++i) os[(d0 + i) * sd] = (uint8_t)v[i];
}

/* every lane of m compares equal to 0 (-0 included; NaN does not) */
static inline int sqc_v8_all_zero(sqc_v8 m) {
#if SQC_RW == 16
    __m512 x;
    memcpy(&x, &m, sizeof x);
    return _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NEQ_UQ) == 0;
#else
    __m256 x;
    memcpy(&x, &m, sizeof x);
    return _mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ)) == 0;
#endif
}

/* 1 when QDQ stages 1 and 2 (fq + 4, fq + 8) give back stage 0's value times post for every
 * level of stage 0 and a zero mask: fq2(fq1(x0 * post) + 0) == x0 * post bit for bit. The usual
 * export (stage 1 = stage 0's grid scaled by post = 1/sqrt(d), stage 2 the same grid) does; then
 * the softmax skips two roundings (two divisions) on every unmasked key. Checked over all of
 * stage 0's levels (at most 256) by the same functions the kernel runs. */
static int sqc_att_fold12(const float *fq, float post) {
    if (!fq || fq[0] == 0.0f || fq[4] == 0.0f || fq[8] == 0.0f)
        return 0;
    for (float n = fq[2] - fq[1]; n <= fq[3] - fq[1]; n += 1.0f) {
        float x0[SQC_RW];
        for (int i = 0; i < SQC_RW; ++i) x0[i] = n;
        /* stage 0's value of level n, as sqc_v8_fake_quant returns it */
        const float v = sqc_v8_fake_quant(sqc_v8_load(x0) * fq[0], fq)[0];
        const float want = v * post;
        float x = sqc_fake_quant_f32(want, fq[4], fq[5], fq[6], fq[7]);
        x = sqc_fake_quant_f32(x + 0.0f, fq[8], fq[9], fq[10], fq[11]);
        if (memcmp(&x, &want, sizeof x) != 0)
            return 0;
    }
    return 1;
}

/* QDQ stages 0-2 of W scores x with their mask m, as the graph has them: x * pre -> stage 0 ->
 * * post -> stage 1 -> + m -> stage 2 (grids g[0..2]); with fold12 (sqc_att_fold12), stages 1
 * and 2 are skipped where the mask is zero, which leaves the same values */
static inline sqc_v8 sqc_att_stages012(sqc_v8 x, sqc_v8 m, const sqc_v8_grid g[3], float pre,
                                       float post, int fold12) {
    x = sqc_v8_fake_quant_grid_rcp(x * pre, g[0]) * post;
    if (!fold12 || !sqc_v8_all_zero(m)) {
        x = sqc_v8_fake_quant_grid_rcp(x, g[1]);
        x = sqc_v8_fake_quant_grid_rcp(x + m, g[2]);
    }
    return x;
}

/* the same for one score, every stage applied (fq: the stages' {scale, zp, lo, hi}) */
static inline float sqc_att_stages012_scalar(float x, float m, const float *fq, float pre,
                                             float post) {
    x = sqc_fake_quant_f32(x * pre, fq[0], fq[1], fq[2], fq[3]);
    x = sqc_fake_quant_f32(x * post, fq[4], fq[5], fq[6], fq[7]);
    return sqc_fake_quant_f32(x + m, fq[8], fq[9], fq[10], fq[11]);
}

/* exp(p[j] - mx) in place for the Sk real keys of a row, 0 for the padded keys up to Sk8;
 * returns their sum (summed in W lanes, then the lanes as a tree) */
static inline float sqc_att_exp_row(float *p, int Sk, int Sk8, float mx) {
    const int W = SQC_RW;
    sqc_v8 sum8 = (sqc_v8){ 0 };
    for (int j0 = 0; j0 < Sk8; j0 += W) {
        sqc_v8 e = sqc_v8_exp(sqc_v8_load(p + j0) - mx);
        if (j0 + W > Sk) {
            float lanes[SQC_RW];
            sqc_v8_store(lanes, e);
            for (int i = Sk - j0; i < W; ++i) lanes[i] = 0.0f;
            e = sqc_v8_load(lanes);
        }
        sqc_v8_store(p + j0, e);
        sum8 += e;
    }
    return sqc_rv_tree_sum(sum8);
}

/* One past the last key to which any of the block's rows (p[r][0..ext), rows Sk8 apart, r <
 * rows) gives a nonzero probability, to a multiple of SQC_RW (at most Sk): the keys after it
 * add nothing to the output, exactly (0 times a finite value). They are the masked padding at
 * the end of a shorter input, whose probabilities sqc_v8_exp flushes to 0: the product with V
 * then stops there. */
static inline int sqc_att_key_end(const float *p, int rows, int Sk, int Sk8, int ext) {
    int end = 0;
    for (int r = 0; r < rows; ++r) {
        const float *pr = p + (size_t)r * Sk8;
        int j = ext;
        while (j > end && sqc_v8_all_zero(sqc_v8_load(pr + j - SQC_RW))) j -= SQC_RW;
        end = j;
    }
    return end < Sk ? end : Sk;
}

/* Softmax of the block's score rows p[r][0..Sk) (rows Sk8 apart; r < rows, query s0 + r), in
 * place: with fq, the QDQ stages (see sqc_attention_job); else scale * score + mask. Padded keys
 * Sk..Sk8 get probability 0. norm[r]: the factor still to apply to row r's output (1 with fq,
 * whose probabilities are normalized and rounded here). ext (a multiple of SQC_RW, at most Sk8):
 * the keys scored; those past it (a masked tail, see sqc_att_tail) have probability 0 and are
 * neither read nor written. */
static inline void sqc_att_softmax_rows(float *p, int Sk, int Sk8, int ext, int rows, int s0,
                                        const float *mb, sqc_view mv, const float *fq,
                                        float pre, float post, float scale, float *norm,
                                        const float *rmax, int fold12, int round_p) {
    const int W = SQC_RW;
    const int row_stride = Sk8;
    Sk = Sk < ext ? Sk : ext;
    Sk8 = ext;
    /* softmax of scale * scores + mask over the Sk real keys of each row; the padded
     * keys Sk..Sk8 get probability 0 */
    for (int r = 0; r < rows; ++r) {
        float *pr = p + (size_t)r * row_stride;
        const float *mr = mb ? mb + (s0 + r) * mv.ss : NULL;
        float mx = -INFINITY;
        if (rmax) {
            /* scaled and masked where the scores were stored (sqc_att_scores_store), which
             * also kept each row's maximum */
            mx = rmax[r];
        } else if (fq && fq[0] != 0.0f && fq[4] != 0.0f && fq[8] != 0.0f && mr) {
            /* every stage present (the usual QDQ graph): one pass */
            const sqc_v8_grid g[3] = { sqc_v8_grid_of(fq), sqc_v8_grid_of(fq + 4),
                                       sqc_v8_grid_of(fq + 8) };
            const int64_t msd = mv.sd;
            int j = 0;
            if (msd == 1) /* vectors of W keys */
                for (; j + W <= Sk; j += W)
                    sqc_v8_store(pr + j, sqc_att_stages012(sqc_v8_load(pr + j), sqc_v8_load(mr + j),
                                                           g, pre, post, fold12));
            for (; j < Sk; ++j) pr[j] = sqc_att_stages012_scalar(pr[j], mr[j * msd], fq, pre, post);
        } else if (fq) {
            for (int j = 0; j < Sk; ++j) pr[j] *= pre;
            sqc_att_fq(pr, Sk, fq);
            for (int j = 0; j < Sk; ++j) pr[j] *= post;
            sqc_att_fq(pr, Sk, fq + 4);
            if (mr)
                for (int j = 0; j < Sk; ++j) pr[j] += mr[j * mv.sd];
            sqc_att_fq(pr, Sk, fq + 8);
        } else if (mr && mv.sd == 1) {
            for (int j = 0; j < Sk; ++j) pr[j] = pr[j] * scale + mr[j];
        } else if (mr) {
            for (int j = 0; j < Sk; ++j) pr[j] = pr[j] * scale + mr[j * mv.sd];
        } else {
            for (int j = 0; j < Sk; ++j) pr[j] *= scale;
        }
        if (!rmax) { /* max over the real keys: 4 independent W-lane maxima, then lanes */
            sqc_v8 m0 = (sqc_v8){ 0 } - INFINITY, m1 = m0, m2 = m0, m3 = m0;
            int j = 0;
            for (; j + 4 * W <= Sk; j += 4 * W) {
                const sqc_v8 x0 = sqc_v8_load(pr + j), x1 = sqc_v8_load(pr + j + W);
                const sqc_v8 x2 = sqc_v8_load(pr + j + 2 * W);
                const sqc_v8 x3 = sqc_v8_load(pr + j + 3 * W);
                m0 = sqc_v8_max(x0, m0);
                m1 = sqc_v8_max(x1, m1);
                m2 = sqc_v8_max(x2, m2);
                m3 = sqc_v8_max(x3, m3);
            }
            m0 = sqc_v8_max(m1, m0);
            m2 = sqc_v8_max(m3, m2);
            m0 = sqc_v8_max(m2, m0);
            mx = sqc_rv_tree_max(m0);
            for (; j < Sk; ++j) mx = pr[j] > mx ? pr[j] : mx;
        }
        const float inv = 1.0f / sqc_att_exp_row(pr, Sk, Sk8, mx);
        if (fq) { /* the probabilities themselves are rounded: normalize them now, and round
                   * them here unless the caller does (round_p 0) */
            for (int j0 = 0; j0 < Sk8; j0 += W)
                sqc_v8_store(pr + j0, sqc_v8_load(pr + j0) * inv);
            if (round_p)
                sqc_att_fq(pr, Sk, fq + 12);
            norm[r] = 1.0f;
        } else { /* else the output rows are scaled instead: one pass less */
            norm[r] = inv;
        }
    }
}

/* fq (optional, QDQ models): 5 stages x {scale, zero point, lo, hi} applied as in the graph:
 * x = dot * pre -> stage 0 -> * post -> stage 1 -> + mask -> stage 2 -> softmax -> stage 3,
 * and the output -> stage 4 (scale 0: a stage the graph does not have).
 * Without fq, x = dot * scale + mask (scale = pre * post). */
typedef struct {
    int H, Sq, Sk, D;
    float scale, pre, post;
    const float *q, *k, *v, *mask, *fq;
    sqc_view qv, kv, vv, mv, ov;
    float *out;
    int fold12; /* sqc_att_fold12(fq, post) */
} sqc_attention_job;

/* Store one vector of scores (keys j .. j + W of one row) as the softmax reads them, scale *
 * score + mask (mrow: the row's mask, contiguous, or NULL), and fold the real keys (j < Sk)
 * into the row's running maximum: the same operations as the separate pass they replace. */
static inline void sqc_att_scores_store(float *dst, sqc_v8 v, int j, int Sk, float scale,
                                        const float *mrow, sqc_v8 *vmax, float *smax) {
    if (j + SQC_RW <= Sk) {
        v = mrow ? v * scale + sqc_v8_load(mrow + j) : v * scale;
        *vmax = sqc_v8_max(v, *vmax);
        sqc_v8_store(dst, v);
        return;
    }
    float lanes[SQC_RW];
    sqc_v8_store(lanes, v);
    for (int i = 0; i < SQC_RW && j + i < Sk; ++i) {
        lanes[i] = mrow ? lanes[i] * scale + mrow[j + i] : lanes[i] * scale;
        *smax = lanes[i] > *smax ? lanes[i] : *smax;
    }
    sqc_v8_store(dst, sqc_v8_load(lanes));
}

/* Euclidean norm of n floats x[i * sd] (float sums: relative error under n * 2^-24) */
static inline double sqc_att_norm(const float *x, int64_t sd, int n) {
    float s = 0.0f;
    int i = 0;
    if (sd == 1) {
        sqc_v8 acc = (sqc_v8){ 0 };
        for (; i + SQC_RW <= n; i += SQC_RW) {
            const sqc_v8 v = sqc_v8_load(x + i);
            acc += v * v;
        }
        s = sqc_rv_tree_sum(acc);
    }
    for (; i < n; ++i) s += x[i * sd] * x[i * sd];
    return sqrt((double)s);
}

/* The keys one (example, head) needs scored: all (Sk8), or, where the mask is one row for
 * every query (mv.ss == 0: BERT's padding mask) and ends in a run of keys with a negative mask
 * (the padding of a shorter input), the keys before that run, to a multiple of SQC_RW.
 * Skipping the run is exact when each of its keys' exponentials is flushed to 0 anyway
 * (sqc_v8_exp, below -87.3 from the row's maximum): the row's maximum is at least the score
 * of key k0 (the first key of the largest mask value before the run), so with Cauchy-Schwarz
 * it suffices that, for every query q,
 *     |scale| |q| (|k_j| + |k_k0|) + mask_j - mask_k0 < -100   for each key j of the run,
 * which leaves 12.7 for the rounding of the scores (relative 1e-3 more is added). Checked
 * with the largest |q| of the head and the run's largest |k_j| and mask. NaN or infinite
 * operands fail the check (nothing is skipped). Without QDQ stages only: their clamps bound
 * the masked scores. */
static int sqc_att_scored_keys(const float *qb, sqc_view qv, int Sq, const float *kb, sqc_view kv,
                               int Sk, int D, const float *mb, sqc_view mv, float scale) {
    const int W = SQC_RW, Sk8 = (Sk + W - 1) / W * W;
    if (!mb || mv.ss != 0)
        return Sk8;
    int tail = Sk;
    float m_tail = -INFINITY;
    while (tail > 0 && mb[(tail - 1) * mv.sd] < 0.0f) {
        const float m = mb[(tail - 1) * mv.sd];
        m_tail = m > m_tail ? m : m_tail;
        --tail;
    }
    const int ext = (tail + W - 1) / W * W;
    if (tail == 0 || ext >= Sk8)
        return Sk8;
    int k0 = 0;
    for (int j = 1; j < tail; ++j)
        if (mb[j * mv.sd] > mb[k0 * mv.sd]) k0 = j;
    double kn = 0.0, qn = 0.0;
    for (int j = tail; j < Sk; ++j) {
        const double n = sqc_att_norm(kb + j * kv.ss, kv.sd, D);
        kn = n > kn || n != n ? n : kn;
    }
    kn += sqc_att_norm(kb + k0 * kv.ss, kv.sd, D);
    for (int s = 0; s < Sq; ++s) {
        const double n = sqc_att_norm(qb + s * qv.ss, qv.sd, D);
        qn = n > qn || n != n ? n : qn;
    }
    const double bound = fabs((double)scale) * qn * kn * 1.001 + ((double)m_tail - mb[k0 * mv.sd]);
    return bound < -100.0 ? ext : Sk8;
}

SQC_NO_UNSWITCH static void sqc_attention_heads(void *job, int64_t t0, int64_t t1) {
    const sqc_attention_job *J = (const sqc_attention_job *)job;
    const int H = J->H, Sq = J->Sq, Sk = J->Sk, D = J->D;
    const float scale = J->scale, pre = J->pre, post = J->post;
    const float *q = J->q, *k = J->k, *v = J->v, *mask = J->mask, *fq = J->fq;
    const sqc_view qv = J->qv, kv = J->kv, vv = J->vv, mv = J->mv, ov = J->ov;
    float *out = J->out;
    const int W = SQC_RW;
    const int Sk8 = (Sk + W - 1) / W * W, D8 = (D + W - 1) / W * W, R = SQC_ATT_ROWS;
    for (int64_t t = t0; t < t1; ++t) {
        const int b = (int)(t / H);
        const int h = (int)(t % H);
        const float *qb = q + b * qv.bs + qv.off + h * qv.sh;
        const float *kb = k + b * kv.bs + kv.off + h * kv.sh;
        const float *vb = v + b * vv.bs + vv.off + h * vv.sh;
        const float *mb = mask ? mask + b * mv.bs + mv.off + h * mv.sh : NULL;
        float *ob = out + b * ov.bs + ov.off + h * ov.sh;
        float kt[(size_t)D * Sk8];  /* K^T: kt[d][j] */
        float vp[(size_t)Sk * D8];  /* V: vp[j][d] */
        float p[(size_t)SQC_ATT_ROWS * Sk8];
        float norm[SQC_ATT_ROWS]; /* 1 / (sum of row r's exponentials), applied to its output */
        /* K^T: read K row by row (contiguous when the feature stride is 1; rows of a fused
         * QKV buffer are far apart), write columns of the small local buffer */
        /* in blocks of W keys: the W rows stay in L1 while each feature d of them is
         * collected into one vector of K^T */
        sqc_att_pack_kt(kt, kb, kv, Sk, Sk8, D);
        /* keys scored: past ext, a masked tail whose probabilities are 0 (not read) */
        const int ext = fq ? Sk8 : sqc_att_scored_keys(qb, qv, Sq, kb, kv, Sk, D, mb, mv, scale);
        const int Sv = Sk < ext ? Sk : ext;
        for (int j = 0; j < Sv; ++j) {
            float *vpj = vp + (size_t)j * D8;
            if (j + 8 < Sv) /* rows come from L3 or DRAM at large batches: fetch ahead */
                sqc_att_prefetch_row(vb + (j + 8) * vv.ss, vv.sd, D);
            if (vv.sd == 1)
                memcpy(vpj, vb + j * vv.ss, sizeof(float) * (size_t)D);
            else
                for (int d = 0; d < D; ++d) vpj[d] = vb[j * vv.ss + d * vv.sd];
            for (int d = D; d < D8; ++d) vpj[d] = 0.0f;
        }
        for (int s0 = 0; s0 < Sq; s0 += R) {
            const int rows = Sq - s0 < R ? Sq - s0 : R;
            /* the block's query rows, broadcast from where they lie (q[r][d] at qr[r] + d * qsd);
             * rows past the end repeat the last row: no branches in the blocks below */
            const float *qr[SQC_ATT_ROWS];
            for (int r = 0; r < R; ++r) qr[r] = qb + (s0 + (r < rows ? r : rows - 1)) * qv.ss;
            for (int r = 0; r < R && s0 + R + r < Sq; ++r)
                sqc_att_prefetch_row(qb + (s0 + R + r) * qv.ss, qv.sd, D);
            const int64_t qsd = qv.sd;
            /* without QDQ stages and with a contiguous (or no) mask, the stores below apply
             * scale and mask and keep each row's maximum: two passes of the softmax fewer */
            const int fused = !fq && (!mb || mv.sd == 1);
            const float *mrow[SQC_ATT_ROWS];
            sqc_v8 vmax[SQC_ATT_ROWS];
            float smax[SQC_ATT_ROWS];
            for (int r = 0; r < R; ++r) {
                mrow[r] = mb ? mb + (s0 + (r < rows ? r : rows - 1)) * mv.ss : NULL;
                vmax[r] = (sqc_v8){ 0 } - INFINITY;
                smax[r] = -INFINITY;
            }
            /* scores: p[r][j] = q[r] . k[j], blocks of R rows x SQC_ATT_COLS vectors of keys
             * (each broadcast q value serves SQC_ATT_COLS vectors), then single vectors */
            int j0 = 0;
            for (; j0 + SQC_ATT_COLS * W <= ext; j0 += SQC_ATT_COLS * W) {
                sqc_v8 acc[SQC_ATT_ROWS][SQC_ATT_COLS];
#pragma GCC unroll 8
                for (int r = 0; r < SQC_ATT_ROWS; ++r)
#pragma GCC unroll 4
                    for (int c = 0; c < SQC_ATT_COLS; ++c) acc[r][c] = (sqc_v8){ 0 };
                for (int d = 0; d < D; ++d) {
                    sqc_v8 kd[SQC_ATT_COLS];
#pragma GCC unroll 4
                    for (int c = 0; c < SQC_ATT_COLS; ++c)
                        kd[c] = sqc_v8_load(kt + (size_t)d * Sk8 + j0 + c * W);
#pragma GCC unroll 8
                    for (int r = 0; r < SQC_ATT_ROWS; ++r) {
                        const float a = qr[r][d * qsd];
#pragma GCC unroll 4
                        for (int c = 0; c < SQC_ATT_COLS; ++c) acc[r][c] += a * kd[c];
                    }
                }
#pragma GCC unroll 8
                for (int r = 0; r < SQC_ATT_ROWS; ++r)
#pragma GCC unroll 4
                    for (int c = 0; c < SQC_ATT_COLS; ++c)
                        if (fused)
                            sqc_att_scores_store(p + (size_t)r * Sk8 + j0 + c * W, acc[r][c],
                                                 j0 + c * W, Sk, scale, mrow[r], &vmax[r], &smax[r]);
                        else
                            sqc_v8_store(p + (size_t)r * Sk8 + j0 + c * W, acc[r][c]);
            }
            for (; j0 < ext; j0 += W) {
                sqc_v8 acc[SQC_ATT_ROWS];
                for (int r = 0; r < SQC_ATT_ROWS; ++r) acc[r] = (sqc_v8){ 0 };
                for (int d = 0; d < D; ++d) {
                    const sqc_v8 kd = sqc_v8_load(kt + (size_t)d * Sk8 + j0);
#pragma GCC unroll 8
                    for (int r = 0; r < SQC_ATT_ROWS; ++r) acc[r] += qr[r][d * qsd] * kd;
                }
#pragma GCC unroll 8
                for (int r = 0; r < SQC_ATT_ROWS; ++r)
                    if (fused)
                        sqc_att_scores_store(p + (size_t)r * Sk8 + j0, acc[r], j0, Sk, scale,
                                             mrow[r], &vmax[r], &smax[r]);
                    else
                        sqc_v8_store(p + (size_t)r * Sk8 + j0, acc[r]);
            }
            float rmax[SQC_ATT_ROWS];
            for (int r = 0; fused && r < R; ++r) {
                const float m = sqc_rv_tree_max(vmax[r]);
                rmax[r] = m > smax[r] ? m : smax[r];
            }
            sqc_att_softmax_rows(p, Sk, Sk8, ext, rows, s0, mb, mv, fq, pre, post, scale, norm,
                                 fused ? rmax : NULL, J->fold12, 1);
            const int kend = sqc_att_key_end(p, rows, Sk < ext ? Sk : ext, Sk8, ext);
            /* out[r] = sum_j p[r][j] v[j]: blocks of R rows x SQC_ATT_COLS vectors of
             * features, then single vectors */
            int d0 = 0;
            for (; d0 + SQC_ATT_COLS * W <= D8; d0 += SQC_ATT_COLS * W) {
                sqc_v8 acc[SQC_ATT_ROWS][SQC_ATT_COLS];
#pragma GCC unroll 8
                for (int r = 0; r < SQC_ATT_ROWS; ++r)
#pragma GCC unroll 4
                    for (int c = 0; c < SQC_ATT_COLS; ++c) acc[r][c] = (sqc_v8){ 0 };
                const float *vj = vp + d0;
                const float *prow[SQC_ATT_ROWS];
                for (int r = 0; r < SQC_ATT_ROWS; ++r) prow[r] = p + (size_t)r * Sk8;
                for (size_t j = 0; j < (size_t)kend; ++j, vj += D8) {
                    sqc_v8 vv8[SQC_ATT_COLS];
#pragma GCC unroll 4
                    for (int c = 0; c < SQC_ATT_COLS; ++c) vv8[c] = sqc_v8_load(vj + c * W);
#pragma GCC unroll 8
                    for (int r = 0; r < SQC_ATT_ROWS; ++r) {
                        const float pj = prow[r][j];
#pragma GCC unroll 4
                        for (int c = 0; c < SQC_ATT_COLS; ++c) acc[r][c] += pj * vv8[c];
                    }
                }
                for (int r = 0; r < rows; ++r)
                    for (int c = 0; c < SQC_ATT_COLS; ++c)
                        sqc_att_store_row(ob + (s0 + r) * ov.ss, ov.sd, d0 + c * W, D,
                                          acc[r][c] * norm[r], fq ? fq + 16 : NULL);
            }
            for (; d0 < D8; d0 += W) {
                sqc_v8 acc[SQC_ATT_ROWS];
                for (int r = 0; r < SQC_ATT_ROWS; ++r) acc[r] = (sqc_v8){ 0 };
                const float *vj = vp + d0;
                for (size_t j = 0; j < (size_t)kend; ++j, vj += D8) {
                    const sqc_v8 vv8 = sqc_v8_load(vj);
#pragma GCC unroll 8
                    for (int r = 0; r < SQC_ATT_ROWS; ++r) acc[r] += p[(size_t)r * Sk8 + j] * vv8;
                }
                for (int r = 0; r < rows; ++r)
                    sqc_att_store_row(ob + (s0 + r) * ov.ss, ov.sd, d0, D, acc[r] * norm[r],
                                      fq ? fq + 16 : NULL);
            }
        }
    }
}

/* fq (optional, QDQ models): 5 stages x {scale, zero point, lo, hi}, see above. One task is one
 * (example, head). */
static void sqc_attention_f32(int batch, int H, int Sq, int Sk, int D, float scale,
                              const float *q, sqc_view qv, const float *k, sqc_view kv,
                              const float *v, sqc_view vv, const float *mask, sqc_view mv,
                              float *out, sqc_view ov, const float *fq, float pre, float post,
                              int nthreads) {
    sqc_attention_job job = { H, Sq, Sk, D, scale, pre, post, q, k, v, mask, fq,
                              qv, kv, vv, mv, ov, out, sqc_att_fold12(fq, post) };
    sqc_parallel_for(nthreads, (int64_t)batch * H, 1, sqc_attention_heads, &job);
}

#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
/* ---- Attention of a QDQ graph in integers (VNNI) ---------------------------------------------
 * When Q, K and V lie on quantization grids (they are the rounded outputs of int8 layers) and the
 * probabilities are rounded too (fq stage 3), both products are integer products: q . k =
 * sq sk sum_d (iq - zq)(ik - zk), exact in int32, and so p . v. vpdpbusd multiplies u8 by s8, so
 * Q and P go to the u8 domain (s8 grids + 128) and K and V to the s8 domain (u8 grids - 128),
 * zero points with them; the zero points come back as row and column sums:
 *   sum (a - za)(b - zb) = sum a b - zb sum a - za sum b + n za zb.
 * Scores and the softmax stages are then as in sqc_attention_f32. A value's level is
 * nearbyint(x * (1 / s)) + zp: exact for x on the grid (see sqc_lut_map). */
#if SQC_RW == 16
static inline sqc_v8i sqc_att_dpbusd(sqc_v8i acc, int32_t a, const int32_t *b) {
    __m512i w;
    memcpy(&w, b, sizeof w);
    return (sqc_v8i)_mm512_dpbusd_epi32((__m512i)acc, _mm512_set1_epi32(a), w);
}
#else
static inline sqc_v8i sqc_att_dpbusd(sqc_v8i acc, int32_t a, const int32_t *b) {
    __m256i w;
    memcpy(&w, b, sizeof w);
    return (sqc_v8i)_mm256_dpbusd_avx_epi32((__m256i)acc, _mm256_set1_epi32(a), w);
}
#endif

/* level of x on grid g = {scale, zp, lo, hi}, moved by `shift` (+128: s8 grid to u8; -128: u8
 * grid to s8; 0). inv = 1 / scale for x on the grid (a multiply finds its level); inv = 0 for
 * any x: QuantizeLinear's division, NaN to level zp. */
static inline int32_t sqc_att_level(float x, float inv, const float *g, int32_t shift) {
    float r = inv != 0.0f ? nearbyintf(x * inv) : nearbyintf(x / g[0]);
    r = r == r ? r + g[1] : g[1];
    r = r < g[2] ? g[2] : r;
    r = r > g[3] ? g[3] : r;
    return (int32_t)r + shift;
}

typedef int8_t sqc_v8b __attribute__((vector_size(SQC_RW)));

/* sqc_att_level on SQC_RW lanes, gv = g as vectors (sqc_v8_grid_of), zs = zp + shift: inv != 0,
 * clamped before rounding (the same for integer bounds; the magic constant rounds to nearest
 * even, |x| < 2^22); inv 0, the division by a multiply where that is exact
 * (sqc_v8_level_grid_rcp) */
static inline sqc_v8i sqc_att_levels(sqc_v8 x, float inv, const sqc_v8_grid *gv, int32_t zs) {
    sqc_v8 l;
    if (inv != 0.0f) {
        const float magic = 12582912.0f;
        l = (sqc_v8_min(gv->hi, sqc_v8_max(gv->lo, x * inv)) + magic) - magic;
    } else {
        l = sqc_v8_level_grid_rcp(x, *gv);
    }
    return __builtin_convertvector(l, sqc_v8i) + zs;
}

/* the sum of the lanes (int32 sums wrap, so any order is the same), as a tree: gcc makes the
 * loop over the lanes one extract and one add per lane */
static inline int32_t sqc_v8i_sum(sqc_v8i v) {
#if SQC_RW == 16
    return _mm512_reduce_add_epi32((__m512i)v);
#else
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128((__m256i)v),
                              _mm256_extracti128_si256((__m256i)v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4E));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xB1));
    return _mm_cvtsi128_si32(x);
#endif
}

/* n values x[i * sx] * mul as levels (bytes) at dst[0..n), zero bytes up to n4; returns their
 * sum */
static inline int32_t sqc_att_row_levels(const float *x, int64_t sx, float mul, int n, int n4,
                                         float inv, const float *g, int32_t shift, uint8_t *dst) {
    int32_t sum = 0;
    int i = 0;
    if (sx == 1) {
        sqc_v8i acc = (sqc_v8i){ 0 };
        const sqc_v8_grid gv = sqc_v8_grid_of(g);
        const int32_t zs = (int32_t)g[1] + shift;
        for (; i + SQC_RW <= n; i += SQC_RW) {
            const sqc_v8i l = sqc_att_levels(sqc_v8_load(x + i) * mul, inv, &gv, zs);
            const sqc_v8b b = __builtin_convertvector(l, sqc_v8b);
            memcpy(dst + i, &b, sizeof b);
            acc += l;
        }
        sum = sqc_v8i_sum(acc);
    }
    for (; i < n; ++i) {
        const int32_t l = sqc_att_level(x[i * sx] * mul, inv, g, shift);
        dst[i] = (uint8_t)l;
        sum += l;
    }
    for (; i < n4; ++i) dst[i] = 0;
    return sum;
}

/* sqc_att_row_levels for a row already in levels: n bytes of the operand's grid in its uint8
 * form (level - lowest level: fuse_lut_epilogue's out8), x-ored with flip (0x80: to the s8
 * domain, where the u8 form's byte b is the level b - 128 there whichever the grid's type)
 * into dst, zero to n4; returns the sum of the levels written (u8 or s8 as flip says). */
static inline int32_t sqc_att_row_bytes(const uint8_t *x, int64_t sx, int n, int n4,
                                        uint8_t flip, uint8_t *dst) {
    int32_t sum = 0;
    int i = 0;
    if (sx == 1) {
#if SQC_RW == 16
        if (n >= 64) { /* 64 bytes a step; the sums of the uint8 form in vpsadbw's 8 lanes */
            __m512i sums = _mm512_setzero_si512();
            for (; i + 64 <= n; i += 64) {
                const __m512i a = _mm512_loadu_si512(x + i);
                _mm512_storeu_si512(dst + i, _mm512_xor_si512(a, _mm512_set1_epi8((char)flip)));
                sums = _mm512_add_epi64(sums, _mm512_sad_epu8(a, _mm512_setzero_si512()));
            }
            sum += (int32_t)_mm512_reduce_add_epi64(sums) - (flip ? 128 * i : 0);
        }
#endif
        for (; i + 16 <= n; i += 16) {
            const __m128i a = _mm_loadu_si128((const __m128i *)(x + i));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, _mm_set1_epi8((char)flip)));
            /* the uint8 form's sum (vpsadbw against 0: two halves); its s8 levels are 128 less */
            const __m128i s2 = _mm_sad_epu8(a, _mm_setzero_si128());
            sum += _mm_cvtsi128_si32(s2) + _mm_extract_epi16(s2, 4) - (flip ? 128 * 16 : 0);
        }
    }
    for (; i < n; ++i) {
        const uint8_t b = (uint8_t)(x[i * sx] ^ flip);
        dst[i] = b;
        sum += flip ? (int32_t)(int8_t)b : (int32_t)b;
    }
    for (; i < n4; ++i) dst[i] = 0;
    return sum;
}

/* One register block of an integer product: acc[r][c] (r < SQC_ATT_ROWS, c < cols) = the sum
 * over quads g < n of the u8 quad a[r * lda + g] times the s8 quads of b + g * ldb + c * W. */
static inline __attribute__((always_inline)) void
sqc_att_q8_block(sqc_v8i acc[SQC_ATT_ROWS][SQC_ATT_COLS], int cols, const int32_t *a, int lda,
                 const int32_t *b, size_t ldb, int n) {
    const int W = SQC_RW;
#pragma GCC unroll 8
    for (int r = 0; r < SQC_ATT_ROWS; ++r)
#pragma GCC unroll 4
        for (int c = 0; c < SQC_ATT_COLS; ++c) acc[r][c] = (sqc_v8i){ 0 };
    if (cols == SQC_ATT_COLS) {
        for (int g = 0; g < n; ++g) {
            const int32_t *bg = b + (size_t)g * ldb;
#pragma GCC unroll 8
            for (int r = 0; r < SQC_ATT_ROWS; ++r)
#pragma GCC unroll 4
                for (int c = 0; c < SQC_ATT_COLS; ++c)
                    acc[r][c] = sqc_att_dpbusd(acc[r][c], a[r * lda + g], bg + c * W);
        }
    } else { /* the last vector of a row whose width is an odd number of vectors */
        for (int g = 0; g < n; ++g) {
            const int32_t *bg = b + (size_t)g * ldb;
#pragma GCC unroll 8
            for (int r = 0; r < SQC_ATT_ROWS; ++r)
                acc[r][0] = sqc_att_dpbusd(acc[r][0], a[r * lda + g], bg);
        }
    }
}

/* K as levels in quads of features, transposed for the score product: kq[d4][j] (4 s8 levels
 * of key j, features 4 d4 .. 4 d4 + 3) for j < Sk8, zero for the padded keys; ksum[j] the sum of
 * key j's levels (0 for the padded keys). Each block of W keys is made as W rows of D4 quads,
 * then moved by the in-register W x W transpose (a permutation of 32-bit lanes: int32 quads go
 * through the float shuffles unchanged). */
static inline void sqc_att_q8_pack_k(int32_t *kq, int32_t *ksum, const float *kb,
                                     const uint8_t *kb8, sqc_view kv, int Sk, int Sk8, int D,
                                     int D4, float ik, const float *gk, int32_t shk) {
    const int W = SQC_RW;
    int32_t rows[SQC_RW][D4];
    int j_first = 0;
#if SQC_RW == 16
    if (kb8 && kv.sd == 1 && D4 % 16 == 0 && kv.ss % 4 == 0) {
        /* levels already, rows of whole zmm: each block of 16 keys transposed straight from K's
         * rows, then moved to the s8 domain in place (x-or 0x80: lane by lane, so after the
         * transpose as before it) and summed per key by vpdpbusd with ones, where the rows
         * went one at a time through sqc_att_row_bytes (3.5x the operations) */
        j_first = Sk / 16 * 16;
        for (int j0 = 0; j0 < j_first; j0 += 16) {
            for (int d4 = 0; d4 < D4; d4 += 16)
                sqc_att_transpose_block((const float *)(kb8 + j0 * kv.ss + 4 * d4), kv.ss / 4,
                                        (float *)(kq + (size_t)d4 * Sk8 + j0), Sk8);
            __m512i sum = _mm512_setzero_si512();
            for (int d4 = 0; d4 < D4; ++d4) {
                int32_t *q = kq + (size_t)d4 * Sk8 + j0;
                const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(q), _mm512_set1_epi8((char)0x80));
                _mm512_storeu_si512(q, v);
                sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi32(0x01010101), v);
            }
            _mm512_storeu_si512(ksum + j0, sum);
        }
    }
#endif
    for (int j0 = j_first; j0 < Sk8; j0 += W) {
        for (int i = 0; i < W; ++i) {
            const int j = j0 + i;
            if (j >= Sk) {
                memset(rows[i], 0, sizeof rows[i]);
                ksum[j] = 0;
                continue;
            }
            /* rows of K (and V, Q) are read one at a time, each from L3 or DRAM at large
             * batches: fetch a few rows ahead */
            if (kb8) { /* levels already (uint8 form): to the s8 domain */
                ksum[j] = sqc_att_row_bytes(kb8 + j * kv.ss, kv.sd, D, D4 * 4, 0x80,
                                            (uint8_t *)rows[i]);
                continue;
            }
            if (j + 8 < Sk)
                sqc_att_prefetch_row(kb + (j + 8) * kv.ss, kv.sd, D);
            ksum[j] = sqc_att_row_levels(kb + j * kv.ss, kv.sd, 1.0f, D, D4 * 4, ik, gk, shk,
                                         (uint8_t *)rows[i]);
        }
        int d4 = 0;
        for (; d4 + W <= D4; d4 += W)
            sqc_att_transpose_block((const float *)&rows[0][d4], D4,
                                    (float *)(kq + (size_t)d4 * Sk8 + j0), Sk8);
        for (; d4 < D4; ++d4)
            for (int i = 0; i < W; ++i) kq[(size_t)d4 * Sk8 + j0 + i] = rows[i][d4];
    }
}

/* V as levels in quads of keys: vq[j4][d] (4 s8 levels, keys 4 j4 .. 4 j4 + 3 of feature d) for
 * d < D8, zero past D and past Sk; vsum[d] the sum of feature d's levels over the keys. Four
 * keys' rows of bytes are interleaved 16 features at a time (two unpack stages); the sums are
 * vpdpbusd of the quads with ones. */
static inline void sqc_att_q8_pack_v(int32_t *vq, int32_t *vsum, const float *vb,
                                     const uint8_t *vb8, sqc_view vv, int Sk, int Sk4, int D,
                                     int D8, float iv, const float *gv, int32_t shv) {
    const int D16 = (D8 + 15) / 16 * 16;
    uint8_t rows[4][D16];
    int j4_first = 0;
#if SQC_RW == 16
    if (vb8 && vv.sd == 1 && D % 64 == 0) {
        /* levels already, rows of whole zmm: four keys' rows interleaved 64 features at a
         * time (byte and word unpacks inside 128-bit lanes, then a 4 x 4 transpose of the
         * lanes), where sqc_att_row_bytes and the 16-feature unpacks took 3x the operations */
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (; 4 * j4_first + 4 <= Sk; ++j4_first) {
            const uint8_t *r = vb8 + (size_t)(4 * j4_first) * vv.ss;
            int32_t *dst = vq + (size_t)j4_first * D8;
            for (int d = 0; d < D; d += 64) {
                const __m512i r0 = _mm512_xor_si512(_mm512_loadu_si512(r + d), flip);
                const __m512i r1 = _mm512_xor_si512(_mm512_loadu_si512(r + vv.ss + d), flip);
                const __m512i r2 = _mm512_xor_si512(_mm512_loadu_si512(r + 2 * vv.ss + d), flip);
                const __m512i r3 = _mm512_xor_si512(_mm512_loadu_si512(r + 3 * vv.ss + d), flip);
                const __m512i t0 = _mm512_unpacklo_epi8(r0, r1), t1 = _mm512_unpackhi_epi8(r0, r1);
                const __m512i u0 = _mm512_unpacklo_epi8(r2, r3), u1 = _mm512_unpackhi_epi8(r2, r3);
                /* q_c, 128-bit lane L: the quads of features 16 L + 4 c .. + 3 */
                const __m512i q0 = _mm512_unpacklo_epi16(t0, u0), q1 = _mm512_unpackhi_epi16(t0, u0);
                const __m512i q2 = _mm512_unpacklo_epi16(t1, u1), q3 = _mm512_unpackhi_epi16(t1, u1);
                const __m512i a = _mm512_shuffle_i32x4(q0, q1, 0x44), b = _mm512_shuffle_i32x4(q2, q3, 0x44);
                const __m512i c = _mm512_shuffle_i32x4(q0, q1, 0xEE), e = _mm512_shuffle_i32x4(q2, q3, 0xEE);
                _mm512_storeu_si512(dst + d, _mm512_shuffle_i32x4(a, b, 0x88));
                _mm512_storeu_si512(dst + d + 16, _mm512_shuffle_i32x4(a, b, 0xDD));
                _mm512_storeu_si512(dst + d + 32, _mm512_shuffle_i32x4(c, e, 0x88));
                _mm512_storeu_si512(dst + d + 48, _mm512_shuffle_i32x4(c, e, 0xDD));
            }
        }
    }
#endif
    for (int j4 = j4_first; j4 < Sk4; ++j4) {
        for (int i = 0; i < 4; ++i) {
            const int j = 4 * j4 + i;
            if (j >= Sk) {
                memset(rows[i], 0, sizeof rows[i]);
                continue;
            }
            if (vb8) {
                sqc_att_row_bytes(vb8 + j * vv.ss, vv.sd, D, D16, 0x80, rows[i]);
                continue;
            }
            if (j + 8 < Sk)
                sqc_att_prefetch_row(vb + (j + 8) * vv.ss, vv.sd, D);
            sqc_att_row_levels(vb + j * vv.ss, vv.sd, 1.0f, D, D16, iv, gv, shv, rows[i]);
        }
        int32_t *dst = vq + (size_t)j4 * D8;
        for (int d = 0; d < D8; d += 16) {
            const __m128i a0 = _mm_loadu_si128((const __m128i *)(rows[0] + d));
            const __m128i a1 = _mm_loadu_si128((const __m128i *)(rows[1] + d));
            const __m128i a2 = _mm_loadu_si128((const __m128i *)(rows[2] + d));
            const __m128i a3 = _mm_loadu_si128((const __m128i *)(rows[3] + d));
            const __m128i t0 = _mm_unpacklo_epi8(a0, a1), t1 = _mm_unpackhi_epi8(a0, a1);
            const __m128i u0 = _mm_unpacklo_epi8(a2, a3), u1 = _mm_unpackhi_epi8(a2, a3);
            _mm_storeu_si128((__m128i *)(dst + d), _mm_unpacklo_epi16(t0, u0));
            _mm_storeu_si128((__m128i *)(dst + d + 4), _mm_unpackhi_epi16(t0, u0));
            if (d + 8 < D8) { /* D8 is a multiple of 8 only on 8-lane targets */
                _mm_storeu_si128((__m128i *)(dst + d + 8), _mm_unpacklo_epi16(t1, u1));
                _mm_storeu_si128((__m128i *)(dst + d + 12), _mm_unpackhi_epi16(t1, u1));
            }
        }
    }
    for (int d0 = 0; d0 < D8; d0 += SQC_RW) {
        sqc_v8i acc = (sqc_v8i){ 0 };
        for (int j4 = 0; j4 < Sk4; ++j4)
            acc = sqc_att_dpbusd(acc, 0x01010101, vq + (size_t)j4 * D8 + d0);
        memcpy(vsum + d0, &acc, sizeof acc);
    }
}

#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
{% include "kernels/amx.h" %}
#define SQC_ATT_AMX 1
#define SQC_ATT_MAX_ROWS 16 /* the query rows of a block on AMX tiles: a tile's rows */

/* c[r][j] (r < 16, j < n, rows ldc int32 apart) = the sum over quads g < kq of a[r][g] (u8
 * quads, rows lda int32 apart) times b[g][j] (s8 quads, rows ldb apart): sqc_att_q8_block's
 * product on AMX tiles, the same int32 sums (TDPBUSD adds exactly what vpdpbusd adds). K^T's
 * and V's packed quads are already a B tile's layout (16 rows of quads x 16 columns x 4 bytes).
 * kq and n are multiples of 16, the operands zero past their real quads; kq 0 gives zeros.
 * Tiles: C 0-3 (64 columns at a time), A 4, B 5-7. */
static void sqc_att_amx_product(int32_t *c, int ldc, const int32_t *a, int lda, const int32_t *b,
                                int ldb, int kq, int n) {
    for (int j0 = 0; j0 < n; j0 += 64) {
        const int t = (n - j0) / 16 < 4 ? (n - j0) / 16 : 4;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int g = 0; g < kq; g += 16) {
            const int32_t *bg = b + (size_t)g * ldb + j0;
            _tile_loadd(4, a + g, lda * 4);
            _tile_loadd(5, bg, ldb * 4);
            _tile_dpbusd(0, 4, 5);
            if (t > 1) {
                _tile_loadd(6, bg + 16, ldb * 4);
                _tile_dpbusd(1, 4, 6);
            }
            if (t > 2) {
                _tile_loadd(7, bg + 32, ldb * 4);
                _tile_dpbusd(2, 4, 7);
            }
            if (t > 3) {
                _tile_loadd(5, bg + 48, ldb * 4);
                _tile_dpbusd(3, 4, 5);
            }
        }
        _tile_stored(0, c + j0, ldc * 4);
        if (t > 1)
            _tile_stored(1, c + j0 + 16, ldc * 4);
        if (t > 2)
            _tile_stored(2, c + j0 + 32, ldc * 4);
        if (t > 3)
            _tile_stored(3, c + j0 + 48, ldc * 4);
    }
}
#else
#define SQC_ATT_MAX_ROWS SQC_ATT_ROWS
#endif

typedef struct {
    sqc_attention_job a;
    const float *grids; /* Q, K, V: {scale, zp, lo, hi} each; P is fq stage 3 */
    /* non-NULL: the operand as its grid's levels in uint8 form (its float pointer unused) */
    const uint8_t *q8, *k8, *v8;
    /* non-NULL: the output as stage 4's levels in uint8 form, instead of floats to out */
    uint8_t *out8;
    int amx; /* 1: the products on AMX tiles (sqc_att_amx_product) */
} sqc_attention_q8_job;

/* The staged softmax's exponentials by table. Stages 0-2 leave every score of a row on stage
 * 2's grid, x = k s (k an integer: the level less the zero point; s the grid's scale), so x - mx
 * = -d s with d = kmax - k in [0, 255], and a key's exponential depends on d alone:
 * E[d] = A[d % 16] B[d / 16] with A[i] = exp(-i s) and B[h] = exp(-16 h s) rounded to float,
 * each flushed to 0 below 2^-63 so that no product is subnormal (the flushed values are under
 * 1e-19 of the row's largest exponential, 1: below the sum's rounding). E is within 3 2^-24 of
 * exp(-d s) relatively (three roundings; the polynomial, sqc_v8_exp, is within 2 ulp): two
 * 16-entry permutes and a multiply per 16 keys, where the polynomial took 17 operations.
 * AVX2 gathers E's 256 products: the same values. */
typedef struct {
    float a[16], b[16]; /* A, B */
    float e[256];       /* E */
    float r;            /* 1 / s, rounded (the grid's r): d = (mx - x) r to nearest */
} sqc_att_exp_table;

static void sqc_att_exp_table_of(sqc_att_exp_table *t, const sqc_v8_grid *g2) {
    const double s = (double)g2->s[0], tiny = 0x1p-63;
    for (int i = 0; i < 16; ++i) {
        const double a = exp(-i * s), b = exp(-16 * i * s);
        t->a[i] = a < tiny ? 0.0f : (float)a;
        t->b[i] = b < tiny ? 0.0f : (float)b;
    }
    for (int d = 0; d < 256; ++d) t->e[d] = t->a[d % 16] * t->b[d / 16];
    t->r = g2->r[0];
}

/* E[d] on SQC_RW lanes (ta, tb: the table's A and B as vectors; d in [0, 255]) */
static inline sqc_v8 sqc_att_exp_of(const sqc_att_exp_table *t, sqc_v8 ta, sqc_v8 tb, sqc_v8i d) {
#if SQC_RW == 16
    (void)t;
    const __m512 a = _mm512_permutexvar_ps((__m512i)d, (__m512)ta);
    const __m512 b = _mm512_permutexvar_ps(_mm512_srli_epi32((__m512i)d, 4), (__m512)tb);
    __m512 e = _mm512_mul_ps(a, b);
    __asm__("" : "+v"(e)); /* E rounded: no fma of the product into a sum (AVX2's E is) */
    return (sqc_v8)e;
#else
    (void)ta;
    (void)tb;
    return (sqc_v8)_mm256_i32gather_ps(t->e, (__m256i)(d & 255), 4);
#endif
}

/* d = (mx - x) r to nearest, the lanes' integers */
static inline sqc_v8i sqc_att_exp_index(sqc_v8 x, float mx, float r) {
    return sqc_v8_rint_i32((mx - x) * r);
}

/* The exponentials of a staged row (p: its scores after stages 0-2, mx their maximum), E[d], in
 * place of the scores (0 past Sk, to a whole vector), summed as sqc_att_exp_row sums (in
 * SQC_RW lanes in key order, then a tree). The keys of [c0, c1) (whole vectors: the masked run
 * of sqc_att_q8_tail, not stored) all hold the value c. */
static inline float sqc_att_q8_exp_sum(float *p, int Sk, float mx, int c0, int c1, float c,
                                       const sqc_att_exp_table *t) {
    const int W = SQC_RW, whole = Sk / W * W;
    const float r = t->r;
    const sqc_v8 ta = sqc_v8_load(t->a), tb = sqc_v8_load(t->b);
    sqc_v8 sum8 = (sqc_v8){ 0 };
    /* whole vectors, key order: [0, c0), the run, [c1, whole) (no branch per vector) */
    for (int part = 0; part < 2; ++part) {
        const int j1 = part == 0 && c0 < whole ? c0 : whole;
        for (int j0 = part == 0 ? 0 : c1; j0 < j1; j0 += W) {
            const sqc_v8i d = sqc_att_exp_index(sqc_v8_load(p + j0), mx, r);
            const sqc_v8 e = sqc_att_exp_of(t, ta, tb, d);
            sum8 += e;
            sqc_v8_store(p + j0, e);
        }
        if (part == 0 && c0 < c1) {
            const sqc_v8 ec =
                sqc_att_exp_of(t, ta, tb, sqc_att_exp_index((sqc_v8){ 0 } + c, mx, r));
            for (int j0 = c0; j0 < c1; j0 += W) {
                sum8 += ec;
                sqc_v8_store(p + j0, ec);
            }
        }
    }
    if (whole < Sk) { /* the last vector: no key past Sk */
        sqc_v8i live;
        for (int i = 0; i < W; ++i) live[i] = whole + i < Sk ? -1 : 0;
        const sqc_v8i d = sqc_att_exp_index(sqc_v8_load(p + whole), mx, r) & live;
        const sqc_v8 e = (sqc_v8)((sqc_v8i)sqc_att_exp_of(t, ta, tb, d) & live);
        sum8 += e;
        sqc_v8_store(p + whole, e);
    }
    return sqc_rv_tree_sum(sum8);
}

/* Stage 3's grid for sqc_att_q8_p_levels: g (as vectors) and zs (its zero point plus the shift
 * to the u8 domain); r = 1 / s where the one-multiply form applies (0: it does not), lo and hi
 * the level bounds less the zero point, clamp whether a probability's level can pass them */
typedef struct {
    sqc_v8_grid g;
    int32_t zs, lo, hi;
    float r;
    int clamp;
} sqc_att_p_grid;

static inline sqc_att_p_grid sqc_att_p_grid_of(const float *gp, int32_t zs) {
    sqc_att_p_grid pg = { sqc_v8_grid_of(gp), zs, 0, 0, 0.0f, 0 };
    const float r = pg.g.r[0];
    pg.lo = (int32_t)pg.g.lo[0];
    pg.hi = (int32_t)pg.g.hi[0];
    /* a probability is at most 1 (the row's largest exponential is E[0] = 1, so the sum is at
     * least 1), its level at most nearbyint(r): an int32 for r <= 2^30; and the clamp only where
     * the bounds are nearer than [0, nearbyint(r)] */
    if (r >= 0x1p-30f && r <= 0x1p30f) {
        pg.r = r;
        pg.clamp = pg.lo > 0 || nearbyintf(r) > (float)pg.hi;
    }
    return pg;
}

/* One vector of a staged row's probability levels (sqc_att_q8_p_levels): fast, by the one
 * multiply c = inv / s; otherwise by QuantizeLinear's division (sqc_att_levels) */
static inline __attribute__((always_inline)) sqc_v8i
sqc_att_q8_p_vector(const sqc_att_p_grid *p, sqc_v8 e, float inv, float c, int fast) {
    if (!fast)
        return sqc_att_levels(e * inv, 0.0f, &p->g, p->zs);
    /* (zs added before the rounding, one operation fewer: the same integer but within an ulp
     * of a half-integer) */
    sqc_v8i l = sqc_v8_rint_i32(e * c + (float)p->zs);
    if (p->clamp)
        l = sqc_v8i_min(sqc_v8i_max(l, (sqc_v8i){ 0 } + (p->lo + p->zs)),
                        (sqc_v8i){ 0 } + (p->hi + p->zs));
    return l;
}

/* Four vectors of levels in [0, 255] as 4 SQC_RW bytes in key order to dst, their sum added to
 * *sum (int64 lanes): two dword-to-word packs, a word-to-byte pack and a dword permute (the
 * packs work within 128-bit lanes) where four narrowing moves take eight operations; the sum by
 * one vpsadbw against zero where four vector adds took four */
static inline void sqc_att_bytes4(sqc_v8i a, sqc_v8i b, sqc_v8i c, sqc_v8i d, uint8_t *dst,
                                  sqc_v8i *sum) {
#if SQC_RW == 16
    const __m512i abcd = _mm512_packus_epi16(_mm512_packus_epi32((__m512i)a, (__m512i)b),
                                             _mm512_packus_epi32((__m512i)c, (__m512i)d));
    /* 128-bit lane L holds dwords a[4L..], b[4L..], c[4L..], d[4L..] */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i bytes = _mm512_permutexvar_epi32(order, abcd);
    _mm512_storeu_si512(dst, bytes);
    *sum = (sqc_v8i)_mm512_add_epi64((__m512i)*sum, _mm512_sad_epu8(bytes, _mm512_setzero_si512()));
#else
    const __m256i abcd = _mm256_packus_epi16(_mm256_packus_epi32((__m256i)a, (__m256i)b),
                                             _mm256_packus_epi32((__m256i)c, (__m256i)d));
    const __m256i bytes = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, bytes);
    *sum = (sqc_v8i)_mm256_add_epi64((__m256i)*sum, _mm256_sad_epu8(bytes, _mm256_setzero_si256()));
#endif
}

/* A staged row's probabilities, e (sqc_att_q8_exp_sum's exponentials) times inv (1 / their
 * sum), as stage 3's levels, bytes to dst, zero from Sk up to n4; returns the levels' sum (as
 * sqc_att_row_levels). Each level is nearbyint(e * c) + zs, c = inv * (1 / s): one multiply and
 * one conversion per 16 keys, where QuantizeLinear's division (sqc_att_levels: the
 * multiply-with-check that stands in for it) takes eleven operations. The two differ only where
 * e * inv / s lies within a few units in the last place of a half-integer, a difference the
 * table's exponentials (within 3 * 2^-24 of exp) already make there: the probabilities are
 * onnxruntime's within its tolerance, not its bits. (attention kernel, 1 thread: -5% at
 * 2 x 384, -9% at 16 x 128; output bytes of the benchmark's inputs unchanged) */
static inline int32_t sqc_att_q8_p_levels(const float *e, float inv, int Sk, int n4,
                                          const sqc_att_p_grid *pg, uint8_t *dst) {
    const int W = SQC_RW, whole = Sk / W * W;
    const sqc_att_p_grid p = *pg; /* in registers: the stores below may alias *pg */
    const float c = inv * p.r;
    sqc_v8i acc = (sqc_v8i){ 0 }, sum64 = (sqc_v8i){ 0 };
    /* whole vectors (a loop for each form; four at a time in the multiply's), then the last
     * one: no key past Sk */
    int i = 0;
    if (p.r != 0.0f) {
        for (; i + 4 * W <= whole; i += 4 * W)
            sqc_att_bytes4(sqc_att_q8_p_vector(&p, sqc_v8_load(e + i), inv, c, 1),
                           sqc_att_q8_p_vector(&p, sqc_v8_load(e + i + W), inv, c, 1),
                           sqc_att_q8_p_vector(&p, sqc_v8_load(e + i + 2 * W), inv, c, 1),
                           sqc_att_q8_p_vector(&p, sqc_v8_load(e + i + 3 * W), inv, c, 1),
                           dst + i, &sum64);
        for (; i < whole; i += W) {
            const sqc_v8i l = sqc_att_q8_p_vector(&p, sqc_v8_load(e + i), inv, c, 1);
            const sqc_v8b b = __builtin_convertvector(l, sqc_v8b);
            memcpy(dst + i, &b, sizeof b);
            acc += l;
        }
    } else
        for (; i < whole; i += W) {
            const sqc_v8i l = sqc_att_q8_p_vector(&p, sqc_v8_load(e + i), inv, c, 0);
            const sqc_v8b b = __builtin_convertvector(l, sqc_v8b);
            memcpy(dst + i, &b, sizeof b);
            acc += l;
        }
    if (i < Sk) {
        sqc_v8i l = sqc_att_q8_p_vector(&p, sqc_v8_load(e + i), inv, c, p.r != 0.0f);
        for (int k = Sk - i; k < W; ++k) l[k] = 0;
        acc += l;
        const sqc_v8b b = __builtin_convertvector(l, sqc_v8b);
        memcpy(dst + i, &b, n4 - i < W ? (size_t)(n4 - i) : sizeof b);
        i += W;
    }
    for (; i < n4; ++i) dst[i] = 0;
    int64_t s64[SQC_RW / 2];
    memcpy(s64, &sum64, sizeof s64);
    int32_t total = sqc_v8i_sum(acc);
    for (int k = 0; k < SQC_RW / 2; ++k) total += (int32_t)s64[k];
    return total;
}

/* The keys of one (example, head) whose integer products the staged q8 attention computes:
 * all (Sk8), or, where the mask is one row for every query (mv.ss == 0) and ends in a run of
 * keys with a negative mask, the keys before that run (to a multiple of SQC_RW), when QDQ
 * stages 0-2 take every score of the run to one value *c (stage 2's lowest level, typically:
 * the mask, -10000 or, in onnxruntime's QDQ files, -128 after its own rounding, pushes the
 * sum below stage 2's grid). The stages are non-decreasing in the score and in
 * the mask, so the run's values lie between those of the four corners (scores of +-1e30,
 * the run's lowest and highest mask); equal corners make them one value, exactly as the
 * stages would compute it. The caller stores that value for the run instead of scoring it:
 * everything after (maximum, exponentials, sums, levels) is then computed as before. */
static int sqc_att_q8_tail(const float *mb, sqc_view mv, int Sk, const sqc_v8_grid g[3],
                           float pre, float post, int fold12, float *c) {
    const int W = SQC_RW, Sk8 = (Sk + W - 1) / W * W;
    if (mv.ss != 0)
        return Sk8;
    int tail = Sk;
    float lo = INFINITY, hi = -INFINITY;
    while (tail > 0 && mb[(tail - 1) * mv.sd] < 0.0f) {
        const float m = mb[(tail - 1) * mv.sd];
        lo = m < lo ? m : lo;
        hi = m > hi ? m : hi;
        --tail;
    }
    const int ext = (tail + W - 1) / W * W;
    if (tail == 0 || ext >= Sk8)
        return Sk8;
    float v[4];
    for (int i = 0; i < 4; ++i) {
        const sqc_v8 x = (sqc_v8){ 0 } + (i & 1 ? 1e30f : -1e30f);
        const sqc_v8 m = (sqc_v8){ 0 } + (i & 2 ? hi : lo);
        v[i] = sqc_att_stages012(x, m, g, pre, post, fold12)[0];
    }
    if (memcmp(&v[0], &v[1], sizeof(float)) != 0 || memcmp(&v[0], &v[2], sizeof(float)) != 0 ||
        memcmp(&v[0], &v[3], sizeof(float)) != 0)
        return Sk8;
    *c = v[0];
    return ext;
}

/* One vector of scores of a block's query row: the integer product's zero-point corrections and
 * scale and, when staged, QDQ stages 0-2 into the row's maximum (see sqc_attention_q8_heads) */
typedef struct {
    const int32_t *qsum;
    int32_t zk, zq, dzz; /* dzz = D zq zk */
    float sqk, pre, post;
    int staged, fold12, Sk, Sk8, s0, rows;
    int zero_end; /* keys before it: fold12 and a mask of zeros for every row (stage 0 alone) */
    const float *mb;
    sqc_view mv;
    const sqc_v8_grid *g;
    float *p;
} sqc_att_q8_scores;

/* (m: row r's running maximum) */
static inline __attribute__((always_inline)) void
sqc_att_q8_score(const sqc_att_q8_scores *c, sqc_v8i acc, sqc_v8i ks, int r, int j, sqc_v8 *m) {
    const int W = SQC_RW;
    const sqc_v8i xi = acc - c->zk * c->qsum[r] - c->zq * ks + c->dzz;
    sqc_v8 x = __builtin_convertvector(xi, sqc_v8) * c->sqk;
    if (c->staged && j + W <= c->Sk) {
        const int sr = c->s0 + (r < c->rows ? r : c->rows - 1);
        if (j + W <= c->zero_end) /* sqc_att_stages012 with fold12 and a zero mask */
            x = sqc_v8_fake_quant_grid_rcp(x * c->pre, c->g[0]) * c->post;
        else
            x = sqc_att_stages012(x, sqc_v8_load(c->mb + sr * c->mv.ss + j), c->g, c->pre,
                                  c->post, c->fold12);
        *m = sqc_v8_max(x, *m);
    }
    sqc_v8_store(c->p + (size_t)r * c->Sk8 + j, x);
}

/* One vector of output features d.. of a block's row r: the product's corrections, the scale
 * and stage 4 (to bytes with out8) */
typedef struct {
    const int32_t *psum;
    const float *norm;
    int32_t zv, zp, skzz; /* skzz = Sk zp zv */
    float spv, out8_zp;
    int out_stage, D, s0;
    const sqc_v8_grid *g4;
    float *ob;
    uint8_t *ob8;
    sqc_view ov;
} sqc_att_q8_outs;

static inline __attribute__((always_inline)) void
sqc_att_q8_out(const sqc_att_q8_outs *c, sqc_v8i acc, sqc_v8i vs, int r, int d) {
    const sqc_v8i x = acc - c->zv * c->psum[r] - c->zp * vs + c->skzz;
    sqc_v8 o = __builtin_convertvector(x, sqc_v8) * c->spv * c->norm[r];
    if (c->ob8) { /* the level in uint8 form (stage 4 is present) */
        sqc_att_store_row8(c->ob8 + (c->s0 + r) * c->ov.ss, c->ov.sd, d, c->D,
                           sqc_v8_level_grid(o, *c->g4) + c->out8_zp);
        return;
    }
    if (c->out_stage)
        o = sqc_v8_fake_quant_grid(o, *c->g4);
    sqc_att_store_row(c->ob + (c->s0 + r) * c->ov.ss, c->ov.sd, d, c->D, o, NULL);
}

SQC_NO_UNSWITCH static void sqc_attention_q8_heads(void *job, int64_t t0, int64_t t1) {
    const sqc_attention_q8_job *JQ = (const sqc_attention_q8_job *)job;
    const sqc_attention_job *J = &JQ->a;
    const int H = J->H, Sq = J->Sq, Sk = J->Sk, D = J->D;
    const float scale = J->scale, pre = J->pre, post = J->post;
    const float *q = J->q, *k = J->k, *v = J->v, *mask = J->mask, *fq = J->fq;
    const sqc_view qv = J->qv, kv = J->kv, vv = J->vv, mv = J->mv, ov = J->ov;
    const float *gq = JQ->grids, *gk = JQ->grids + 4, *gv = JQ->grids + 8, *gp = fq + 12;
    const uint8_t *q8 = JQ->q8, *k8 = JQ->k8, *v8 = JQ->v8;
    uint8_t *out8 = JQ->out8;
    float *out = J->out;
    /* amx: both products on AMX tiles, 16 query rows a block, the quads of Q and K's features
     * and of P and V's keys zero-padded to 16 (a tile's 64 bytes) */
    const int amx = JQ->amx;
    const int W = SQC_RW, R = amx ? SQC_ATT_MAX_ROWS : SQC_ATT_ROWS;
    const int Sk8 = (Sk + W - 1) / W * W, D8 = (D + W - 1) / W * W;
    const int D4 = (D + 3) / 4, Sk4 = (Sk + 3) / 4;
    const int D4p = amx ? (D4 + 15) / 16 * 16 : D4, Sk4p = amx ? (Sk4 + 15) / 16 * 16 : Sk4;
    /* u8-domain shifts of Q and P, s8-domain shifts of K and V, and their zero points there */
    const int32_t shq = gq[2] < 0 ? 128 : 0, shp = gp[2] < 0 ? 128 : 0;
    const int32_t shk = gk[2] < 0 ? 0 : -128, shv = gv[2] < 0 ? 0 : -128;
    const int32_t zq = (int32_t)gq[1] + shq, zp = (int32_t)gp[1] + shp;
    const int32_t zk = (int32_t)gk[1] + shk, zv = (int32_t)gv[1] + shv;
    const float iq = 1.0f / gq[0], ik = 1.0f / gk[0], iv = 1.0f / gv[0];
    /* the usual QDQ graph (every score stage present, a contiguous mask): stages 0-2 run as the
     * scores leave the product (see below), on the grids made into vectors here */
    const int staged = fq[0] != 0.0f && fq[4] != 0.0f && fq[8] != 0.0f && mask && mv.sd == 1;
    const sqc_v8_grid g[3] = { sqc_v8_grid_of(fq), sqc_v8_grid_of(fq + 4), sqc_v8_grid_of(fq + 8) };
    const int fold12 = J->fold12;
    const sqc_v8_grid g4 = sqc_v8_grid_of(fq + 16);
    const sqc_att_p_grid g3 = sqc_att_p_grid_of(gp, zp);
    sqc_att_exp_table et = { { 0 } }; /* the staged softmax's exponentials (zeros: for gcc) */
    if (staged)
        sqc_att_exp_table_of(&et, &g[2]);
#ifdef SQC_ATT_AMX
    if (amx)
        sqc_amx_configure();
#endif
    for (int64_t t = t0; t < t1; ++t) {
        const int b = (int)(t / H);
        const int h = (int)(t % H);
        const int64_t qo = b * qv.bs + qv.off + h * qv.sh, ko = b * kv.bs + kv.off + h * kv.sh;
        const int64_t vo = b * vv.bs + vv.off + h * vv.sh;
        const float *qb = q8 ? NULL : q + qo, *kb = k8 ? NULL : k + ko, *vb = v8 ? NULL : v + vo;
        const uint8_t *qb8 = q8 ? q8 + qo : NULL, *kb8 = k8 ? k8 + ko : NULL;
        const uint8_t *vb8 = v8 ? v8 + vo : NULL;
        const float *mb = mask ? mask + b * mv.bs + mv.off + h * mv.sh : NULL;
        const int64_t oo = b * ov.bs + ov.off + h * ov.sh;
        int32_t kq[(size_t)D4p * Sk8]; /* K^T in quads of features: kq[d4][j], 4 s8 */
        int32_t vq[(size_t)Sk4p * D8]; /* V in quads of keys: vq[j4][d], 4 s8 */
        int32_t ksum[Sk8], vsum[D8];   /* sum over d of K's levels per key; over j of V's per d */
        /* u8 quads of the block's rows */
        int32_t qa[SQC_ATT_MAX_ROWS][D4p], pa[SQC_ATT_MAX_ROWS][Sk4p];
        int32_t qsum[SQC_ATT_MAX_ROWS], psum[SQC_ATT_MAX_ROWS];
        float p[(size_t)SQC_ATT_MAX_ROWS * Sk8];
        float norm[SQC_ATT_MAX_ROWS];
        sqc_v8 vmax[SQC_ATT_MAX_ROWS];
        /* amx: the products' int32 sums, as the tiles store them */
        int32_t sums[amx ? (size_t)SQC_ATT_MAX_ROWS * (Sk8 > D8 ? Sk8 : D8) : 1];
        sqc_att_q8_pack_k(kq, ksum, kb, kb8, kv, Sk, Sk8, D, D4, ik, gk, shk);
        sqc_att_q8_pack_v(vq, vsum, vb, vb8, vv, Sk, Sk4, D, D8, iv, gv, shv);
        memset(kq + (size_t)D4 * Sk8, 0, sizeof(int32_t) * (size_t)(D4p - D4) * Sk8);
        memset(vq + (size_t)Sk4 * D8, 0, sizeof(int32_t) * (size_t)(Sk4p - Sk4) * D8);
        /* keys scored: past qext, a masked tail whose staged scores are all tail_c */
        float tail_c = 0.0f;
        const int qext = staged ? sqc_att_q8_tail(mb, mv, Sk, g, pre, post, fold12, &tail_c) : Sk8;
        /* a mask shared by the rows, zero (or -0) up to zero_end: those keys skip its test */
        int zero_end = 0;
        if (staged && fold12 && mv.ss == 0)
            while (zero_end < Sk && mb[zero_end] == 0.0f) ++zero_end;
        sqc_att_q8_scores sc = { qsum, zk, zq, D * zq * zk, gq[0] * gk[0], pre, post, staged,
                                 fold12, Sk, Sk8, 0, 0, zero_end, mb, mv, g, p };
        sqc_att_q8_outs oc = { psum, norm, zv, zp, Sk * zp * zv, gp[0] * gv[0],
                               fq[17] - fq[18] /* stage 4's zero point in uint8 form */,
                               fq[16] != 0.0f, D, 0, &g4, out8 ? NULL : out + oo,
                               out8 ? out8 + oo : NULL, ov };
        for (int s0 = 0; s0 < Sq; s0 += R) {
            const int rows = Sq - s0 < R ? Sq - s0 : R;
            sc.s0 = oc.s0 = s0;
            sc.rows = rows;
            /* the block's query rows as u8 quads; rows past the end repeat the last row */
            for (int r = 0; r < R && s0 + R + r < Sq && qb; ++r)
                sqc_att_prefetch_row(qb + (s0 + R + r) * qv.ss, qv.sd, D);
            for (int r = 0; r < R; ++r) {
                const int64_t row = (s0 + (r < rows ? r : rows - 1)) * qv.ss;
                /* levels already: the uint8 form is the u8 domain's */
                qsum[r] = qb8 ? sqc_att_row_bytes(qb8 + row, qv.sd, D, D4p * 4, 0, (uint8_t *)qa[r])
                              : sqc_att_row_levels(qb + row, qv.sd, 1.0f, D, D4p * 4, iq, gq, shq,
                                                   (uint8_t *)qa[r]);
            }
            /* scores: R rows x SQC_ATT_COLS vectors of keys per register block (or, amx, the
             * block's sums from the tiles). When staged, each whole vector of real keys leaves
             * the product through QDQ stages 0-2 and into its row's maximum (the first pass of
             * sqc_att_softmax_rows, the same operations); the row's last partial vector is
             * stored as scores, for the scalar tail below. */
            for (int r = 0; r < R; ++r) vmax[r] = (sqc_v8){ 0 } - INFINITY;
#ifdef SQC_ATT_AMX
            if (amx) {
                sqc_att_amx_product(sums, Sk8, &qa[0][0], D4p, kq, Sk8, D4p, qext);
                for (int r = 0; r < rows; ++r) {
                    sqc_v8 m = vmax[r];
                    for (int j = 0; j < qext; j += W) {
                        sqc_v8i ks, acc;
                        memcpy(&ks, ksum + j, sizeof ks);
                        memcpy(&acc, sums + (size_t)r * Sk8 + j, sizeof acc);
                        sqc_att_q8_score(&sc, acc, ks, r, j, &m);
                    }
                    vmax[r] = m;
                }
            } else
#endif
            for (int j0 = 0; j0 < qext; j0 += SQC_ATT_COLS * W) {
                const int cols = (qext - j0) / W < SQC_ATT_COLS ? (qext - j0) / W : SQC_ATT_COLS;
                sqc_v8i acc[SQC_ATT_ROWS][SQC_ATT_COLS];
                sqc_att_q8_block(acc, cols, &qa[0][0], D4, kq + j0, Sk8, D4);
                for (int c = 0; c < cols; ++c) {
                    const int j = j0 + c * W;
                    sqc_v8i ks;
                    memcpy(&ks, ksum + j, sizeof ks);
                    for (int r = 0; r < SQC_ATT_ROWS; ++r)
                        sqc_att_q8_score(&sc, acc[r][c], ks, r, j, &vmax[r]);
                }
            }
            /* the unscored tail: its staged value; the last partial vector as raw scores (0,
             * which the scalar stages below take to the same value). The run's whole vectors
             * [qext, run_end) are not stored: the exponentials and the levels below make their
             * one value once (sqc_att_q8_p_levels) */
            const int run_end = Sk / W * W > qext ? Sk / W * W : qext;
            for (int j = qext; j < Sk8; j += W)
                for (int r = 0; r < R; ++r) {
                    const sqc_v8 x = (sqc_v8){ 0 } + (j + W <= Sk ? tail_c : 0.0f);
                    if (j + W <= Sk)
                        vmax[r] = sqc_v8_max(x, vmax[r]);
                    else
                        sqc_v8_store(p + (size_t)r * Sk8 + j, x);
                }
            if (staged) {
                /* the rest of the softmax per row: the scalar tail of stages 0-2, then the
                 * exponentials, and the probabilities (normalized) rounded to stage 3's grid by
                 * division, as the stage would, written as its u8 levels in quads of keys */
                for (int r = 0; r < rows; ++r) {
                    float *pr = p + (size_t)r * Sk8;
                    const float *mr = mb + (s0 + r) * mv.ss;
                    float mx = sqc_rv_tree_max(vmax[r]);
                    for (int j = Sk / W * W; j < Sk; ++j) {
                        const float x = sqc_att_stages012_scalar(pr[j], mr[j], fq, pre, post);
                        pr[j] = x;
                        mx = x > mx ? x : mx;
                    }
                    norm[r] = sqc_att_q8_exp_sum(pr, Sk, mx, qext, run_end, tail_c, &et);
                }
                /* then the levels, row by row: each row's sum, its reciprocal and the multiplier
                 * are a chain of dependent steps that the rows' exponentials now overlap */
                for (int r = 0; r < rows; ++r) {
                    psum[r] = sqc_att_q8_p_levels(p + (size_t)r * Sk8, 1.0f / norm[r], Sk,
                                                  Sk4p * 4, &g3, (uint8_t *)pa[r]);
                    norm[r] = 1.0f;
                }
                for (int r = rows; r < R; ++r)
                    psum[r] = sqc_att_row_levels(p, 1, 1.0f, 0, Sk4p * 4, 0.0f, gp, shp,
                                                 (uint8_t *)pa[r]);
            } else {
                sqc_att_softmax_rows(p, Sk, Sk8, Sk8, rows, s0, mb, mv, fq, pre, post, scale, norm,
                                     NULL, fold12, 0);
                for (int r = 0; r < R; ++r)
                    psum[r] = sqc_att_row_levels(p + (size_t)r * Sk8, 1, 1.0f, r < rows ? Sk : 0,
                                                 Sk4p * 4, 0.0f, gp, shp, (uint8_t *)pa[r]);
            }
            /* keys past the block's last nonzero probability level add nothing when level 0 is
             * byte 0 (zp 0: stage 3's usual grid, u8 with zero point 0 or s8 with -128): then
             * neither their products nor the corrections below (zp * vs, Sk * zp * zv) change,
             * and the product stops at the last quad with a nonzero byte (the masked padding
             * of a shorter input rounds to level 0) */
            int k4 = Sk4;
            if (zp == 0) {
                k4 = 0;
                for (int r = 0; r < R; ++r) {
                    int j = Sk4;
                    while (j > k4 && pa[r][j - 1] == 0) --j;
                    k4 = j;
                }
            }
            /* out[r] = sum_j p[r][j] v[j], R rows x SQC_ATT_COLS vectors of features */
#ifdef SQC_ATT_AMX
            if (amx) {
                sqc_att_amx_product(sums, D8, &pa[0][0], Sk4p, vq, D8, (k4 + 15) / 16 * 16, D8);
                for (int d = 0; d < D8; d += W) {
                    sqc_v8i vs, acc;
                    memcpy(&vs, vsum + d, sizeof vs);
                    for (int r = 0; r < rows; ++r) {
                        memcpy(&acc, sums + (size_t)r * D8 + d, sizeof acc);
                        sqc_att_q8_out(&oc, acc, vs, r, d);
                    }
                }
                continue;
            }
#endif
            for (int d0 = 0; d0 < D8; d0 += SQC_ATT_COLS * W) {
                const int cols = (D8 - d0) / W < SQC_ATT_COLS ? (D8 - d0) / W : SQC_ATT_COLS;
                sqc_v8i acc[SQC_ATT_ROWS][SQC_ATT_COLS];
                sqc_att_q8_block(acc, cols, &pa[0][0], Sk4, vq + d0, D8, k4);
                for (int c = 0; c < cols; ++c) {
                    sqc_v8i vs;
                    memcpy(&vs, vsum + d0 + c * W, sizeof vs);
                    for (int r = 0; r < rows; ++r)
                        sqc_att_q8_out(&oc, acc[r][c], vs, r, d0 + c * W);
                }
            }
        }
    }
#ifdef SQC_ATT_AMX
    if (amx)
        _tile_release();
#endif
}

/* sqc_attention_f32's contract for a QDQ graph whose Q, K, V lie on the grids `grids` (12
 * floats) and whose probabilities are rounded (fq stage 3 present): both products in integers. */
static void sqc_attention_q8(int batch, int H, int Sq, int Sk, int D, float scale,
                             const float *q, sqc_view qv, const float *k, sqc_view kv,
                             const float *v, sqc_view vv, const float *mask, sqc_view mv,
                             float *out, sqc_view ov, const float *fq, float pre, float post,
                             const float *grids, const uint8_t *q8, const uint8_t *k8,
                             const uint8_t *v8, uint8_t *out8, int nthreads) {
#ifdef SQC_ATT_AMX
    const int amx = sqc_amx_permitted();
#else
    const int amx = 0;
#endif
    sqc_attention_q8_job job = { { H, Sq, Sk, D, scale, pre, post, q, k, v, mask, fq,
                                   qv, kv, vv, mv, ov, out, sqc_att_fold12(fq, post) }, grids,
                                 q8, k8, v8, out8, amx };
    sqc_parallel_for(nthreads, (int64_t)batch * H, 1, sqc_attention_q8_heads, &job);
}
#endif /* VNNI */

/* Gather along one axis: data viewed as [outer, n, inner], indices [m] per example (int64 or
 * int32, idx_elem bytes each); out[o, i, :] = data[o, idx[i] (negative counts from the end), :].
 * Out-of-range indices write zeros and return nonzero, so a bad token id is an error, never a
 * wild read. */
static int sqc_gather(int batch, int64_t outer, int64_t n, int64_t inner, int64_t m,
                      const uint8_t *data, int64_t data_bs, const void *idx, int idx_elem,
                      int64_t idx_bs, uint8_t *out, int64_t elem, int nthreads) {
    int bad = 0;
    (void)nthreads;
    for (int b = 0; b < batch; ++b) {
        const uint8_t *db = data + b * data_bs * elem;
        uint8_t *obase = out + (int64_t)b * outer * m * inner * elem;
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t i = 0; i < m; ++i) {
                const int64_t at = b * idx_bs + i;
                int64_t j = idx_elem == 8 ? ((const int64_t *)idx)[at]
                                          : (int64_t)((const int32_t *)idx)[at];
                j = j < 0 ? j + n : j;
                uint8_t *dst = obase + ((o * m + i) * inner) * elem;
                if (j < 0 || j >= n) {
                    memset(dst, 0, (size_t)(inner * elem));
                    bad = 1;
                    continue;
                }
                memcpy(dst, db + ((o * n + j) * inner) * elem, (size_t)(inner * elem));
            }
    }
    return bad;
}

/* C[M, N] = A[M, K] B[K, N] for row-major operands given by their pointers; no packing (the
 * activation x activation matmuls that attention fusion did not absorb). */
static void sqc_matmul_f32_plain(int M, int N, int K, const float *SQC_RESTRICT A,
                                 const float *SQC_RESTRICT B, float *SQC_RESTRICT C) {
    for (int i = 0; i < M; ++i) {
        float *c = C + (int64_t)i * N;
        for (int j = 0; j < N; ++j) c[j] = 0.0f;
        for (int kk = 0; kk < K; ++kk) {
            const float a = A[(int64_t)i * K + kk];
            const float *b = B + (int64_t)kk * N;
#pragma omp simd
            for (int j = 0; j < N; ++j) c[j] += a * b[j];
        }
    }
}

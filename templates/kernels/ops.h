/* sqc row-wise and attention kernels (fp32). Included once by every generated model.
 * Shapes arrive as arguments; generated code passes them as integer literals. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SQC_RESTRICT __restrict__

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

/* y[r, :] = (x[r, :] (+ skip[r, :]) (+ bias) - mean) / sqrt(var + eps) * gamma + beta, over n
 * features, for rows r in [0, rows). sum_out (optional) receives x + skip + bias. Mean and
 * variance are accumulated in double, as two passes over the row, for accuracy. */
static void sqc_layernorm_f32(int64_t rows, int n, const float *SQC_RESTRICT x,
                              const float *SQC_RESTRICT skip, const float *SQC_RESTRICT bias,
                              const float *SQC_RESTRICT gamma, const float *SQC_RESTRICT beta,
                              float eps, float *SQC_RESTRICT y, float *SQC_RESTRICT sum_out,
                              int nthreads) {
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1 && rows > 16) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float row[n];
        double mean = 0.0;
        for (int i = 0; i < n; ++i) {
            float v = xr[i];
            if (skip) v += skip[r * n + i];
            if (bias) v += bias[i];
            row[i] = v;
            mean += v;
        }
        mean /= n;
        double var = 0.0;
        for (int i = 0; i < n; ++i) {
            double d = row[i] - mean;
            var += d * d;
        }
        var /= n;
        const float inv = (float)(1.0 / sqrt(var + (double)eps));
        const float m = (float)mean;
        if (sum_out) memcpy(sum_out + r * n, row, sizeof(float) * (size_t)n);
        for (int i = 0; i < n; ++i) {
            float v = (row[i] - m) * inv * gamma[i];
            yr[i] = beta ? v + beta[i] : v;
        }
    }
}

/* Softmax over the last axis of length n, rows independent. */
static void sqc_softmax_f32(int64_t rows, int n, const float *SQC_RESTRICT x,
                            float *SQC_RESTRICT y, int nthreads) {
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1 && rows > 64) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
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

/* Attention for `batch` examples, each with H heads:
 *   out[h, s, :] = sum_j softmax_j(scale * q[h, s, :] . k[h, j, :] + mask[h, s, j]) v[h, j, :]
 * Every operand is a strided view (offset, stride_h, stride_s, stride_d) into one example's
 * buffer; *_bs is the distance between examples (0 for a constant shared by all). The mask
 * is additive; its strides are 0 along broadcast axes. One task is one (example, head): K is
 * transposed once into a [D][Sk] tile so that scores vectorize across keys, then each query
 * row computes its scores, softmax and weighted sum of V with the row in a stack buffer. */
typedef struct { int64_t off, sh, ss, sd, bs; } sqc_view;

static void sqc_attention_f32(int batch, int H, int Sq, int Sk, int D, float scale,
                              const float *q, sqc_view qv, const float *k, sqc_view kv,
                              const float *v, sqc_view vv, const float *mask, sqc_view mv,
                              float *out, sqc_view ov, int nthreads) {
    const int64_t tasks = (int64_t)batch * H;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
        const int b = (int)(t / H);
        const int h = (int)(t % H);
        const float *qb = q + b * qv.bs + qv.off + h * qv.sh;
        const float *kb = k + b * kv.bs + kv.off + h * kv.sh;
        const float *vb = v + b * vv.bs + vv.off + h * vv.sh;
        const float *mb = mask ? mask + b * mv.bs + mv.off + h * mv.sh : NULL;
        float *ob = out + b * ov.bs + ov.off + h * ov.sh;
        float kt[(size_t)D * Sk];
        float p[Sk];
        float acc[D];
        for (int j = 0; j < Sk; ++j)
            for (int d = 0; d < D; ++d) kt[(size_t)d * Sk + j] = kb[j * kv.ss + d * kv.sd];
        for (int s = 0; s < Sq; ++s) {
            const float *qs = qb + s * qv.ss;
            for (int j = 0; j < Sk; ++j) p[j] = 0.0f;
            for (int d = 0; d < D; ++d) {
                const float qd = qs[d * qv.sd];
                const float *kr = kt + (size_t)d * Sk;
                for (int j = 0; j < Sk; ++j) p[j] += qd * kr[j];
            }
            float mx = -INFINITY;
            if (mb) {
                const float *mr = mb + s * mv.ss;
                if (mv.sd == 1)
                    for (int j = 0; j < Sk; ++j) p[j] = p[j] * scale + mr[j];
                else
                    for (int j = 0; j < Sk; ++j) p[j] = p[j] * scale + mr[j * mv.sd];
            } else {
                for (int j = 0; j < Sk; ++j) p[j] *= scale;
            }
            for (int j = 0; j < Sk; ++j) mx = p[j] > mx ? p[j] : mx;
            float sum = 0.0f;
            for (int j = 0; j < Sk; ++j) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            const float inv = 1.0f / sum;
            for (int d = 0; d < D; ++d) acc[d] = 0.0f;
            if (vv.sd == 1) {
                for (int j = 0; j < Sk; ++j) {
                    const float pj = p[j] * inv;
                    const float *vj = vb + j * vv.ss;
                    for (int d = 0; d < D; ++d) acc[d] += pj * vj[d];
                }
            } else {
                for (int j = 0; j < Sk; ++j) {
                    const float pj = p[j] * inv;
                    const float *vj = vb + j * vv.ss;
                    for (int d = 0; d < D; ++d) acc[d] += pj * vj[d * vv.sd];
                }
            }
            float *os = ob + s * ov.ss;
            if (ov.sd == 1)
                memcpy(os, acc, sizeof(float) * (size_t)D);
            else
                for (int d = 0; d < D; ++d) os[d * ov.sd] = acc[d];
        }
    }
}

/* Gather along one axis: data viewed as [outer, n, inner], indices [m] per example;
 * out[o, i, :] = data[o, idx[i] (negative counts from the end), :]. Out-of-range indices
 * write zeros and return nonzero, so a bad token id is an error, never a wild read. */
static int sqc_gather(int batch, int64_t outer, int64_t n, int64_t inner, int64_t m,
                      const uint8_t *data, int64_t data_bs, const int64_t *idx, int64_t idx_bs,
                      uint8_t *out, int64_t elem, int nthreads) {
    int bad = 0;
    (void)nthreads;
    for (int b = 0; b < batch; ++b) {
        const uint8_t *db = data + b * data_bs * elem;
        const int64_t *ib = idx + b * idx_bs;
        uint8_t *obase = out + (int64_t)b * outer * m * inner * elem;
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t i = 0; i < m; ++i) {
                int64_t j = ib[i] < 0 ? ib[i] + n : ib[i];
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

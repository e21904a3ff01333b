/* Quantization glue: elementwise rounding, int8 linear layers, a plain integer matmul.
   Rendered after the int8 GEMM header (templates/kernels/int8_gemm.h.j2), whose
   sqc_dynamic_qparams_u8 / sqc_quantize_rows_u8 / sqc_u8s8_gemm it calls.
   Rounding: nearbyintf (to nearest, ties to even), after a float32 division, as ONNX and
   onnxruntime quantize. */
#include <stdint.h>
#include <stddef.h>
#include <math.h>

/* sqc_quantize_f32 (QuantizeLinear) and sqc_fake_quant_f32 (QDQ pairs) are in ops.h: the
   LayerNorm and the attention kernel round with them too. */

/* ONNX DynamicQuantizeLinear of n floats: y, and (optional) its scale and zero point */
static void sqc_dynamic_quantize_u8(int64_t n, const float *x, uint8_t *y, float *scale_out,
                                    uint8_t *zp_out)
{
    float scale;
    int32_t zp;
    sqc_dynamic_qparams_u8(1, (int)n, x, (int)n, &scale, &zp);
    for (int64_t i = 0; i < n; ++i)
        y[i] = (uint8_t)(scale != 0.0f ? sqc_quantize_f32(x[i], scale, zp, 0, 255) : zp);
    if (scale_out)
        *scale_out = scale;
    if (zp_out)
        *zp_out = (uint8_t)zp;
}

/* Already-quantized rows into the GEMM's padded uint8 layout; int8 rows are shifted by +128
   (the zero point moves with them, so differences are unchanged). */
static void sqc_copy_rows_u8(int M, int K, const void *src, int is_s8, uint8_t *aq, int ldq,
                             int32_t *rowsum)
{
    for (int m = 0; m < M; ++m) {
        const uint8_t *s = (const uint8_t *)src + (size_t)m * K;
        uint8_t *d = aq + (size_t)m * ldq;
        int32_t sum = 0;
        for (int k = 0; k < K; ++k) {
            d[k] = is_s8 ? (uint8_t)(s[k] ^ 0x80u) : s[k];
            sum += d[k];
        }
        for (int k = K; k < ldq; ++k)
            d[k] = 0;
        if (rowsum)
            rowsum[m] = sum;
    }
}

/* sqc_qlinear's first step: X quantized (or taken as it is) into the GEMM's operands: *aq (rows
   ldq bytes apart), a_scale / a_zp per row, rowsum per row (NULL without w_zp), in scratch */
static void sqc_qlinear_operands(int B, int rows, int K, const void *x, int mode, float x_scale,
                                 int32_t x_zp, const int32_t *w_zp, uint8_t *scratch, int ldq,
                                 int nt, uint8_t **aq_out, float **a_scale_out,
                                 int32_t **a_zp_out, int32_t **rowsum_out)
{
    const int M = B * rows;
    uint8_t *aq = scratch;
    float *a_scale = (float *)(scratch + (size_t)M * ldq);
    int32_t *a_zp = (int32_t *)(a_scale + M);
    int32_t *rowsum = w_zp ? a_zp + M : NULL;
    if (mode == 0 && (nt <= 1 || B >= 2 * nt)) {
        /* enough examples to share out: each one's two passes on one thread, from L2 */
        sqc_quantize_examples_u8(B, rows, K, (const float *)x, K, a_scale, a_zp, aq, ldq, rowsum, nt);
    } else {
        /* mode 0: each row's range on every thread, into a_scale and the rowsum slot (both
           written only after), then each example's range from its rows' */
        float *row_lo = a_scale, *row_hi = (float *)(a_zp + M);
        if (mode == 0)
            sqc_range_rows_f32(M, K, (const float *)x, K, row_lo, row_hi, nt);
        for (int b = 0; b < B; ++b) {
            float s = x_scale;
            int32_t z = mode == 3 ? x_zp + 128 : x_zp;
            if (mode == 0) {
                float lo = 0.0f, hi = 0.0f;
                for (int r = b * rows; r < (b + 1) * rows; ++r) {
                    lo = row_lo[r] < lo ? row_lo[r] : lo;
                    hi = row_hi[r] > hi ? row_hi[r] : hi;
                }
                sqc_dynamic_qparams_from_range(lo, hi, &s, &z);
            }
            for (int r = 0; r < rows; ++r) {
                a_scale[b * rows + r] = s;
                a_zp[b * rows + r] = z;
            }
        }
        if (mode <= 1) {
            sqc_quantize_rows_u8(M, K, (const float *)x, K, a_scale, a_zp, aq, ldq, rowsum, nt);
        } else if (mode == 2 && ldq == K) {
            /* uint8 rows already in the GEMM's layout: read in place (only their sums are made) */
            aq = (uint8_t *)x;
            if (rowsum)
                for (int m = 0; m < M; ++m) {
                    int32_t sum = 0;
                    for (int k = 0; k < K; ++k) sum += aq[(size_t)m * K + k];
                    rowsum[m] = sum;
                }
        } else {
            sqc_copy_rows_u8(M, K, x, mode == 3, aq, ldq, rowsum);
        }
    }
    *aq_out = aq;
    *a_scale_out = a_scale;
    *a_zp_out = a_zp;
    *rowsum_out = rowsum;
}

/* The arguments of one sqc_qlinear call */
typedef struct {
    int B, rows, N, K;
    const void *x;
    int mode;
    float x_scale;
    int32_t x_zp;
    const int8_t *Wp;
    const int32_t *col_comp, *w_zp;
    const float *w_scale, *bias, *residual;
    float *y;
    uint8_t *scratch;
    int ldq;
    const void *Wsp;
    size_t sp_offset;
    int act;
    const sqc_qpost *post;
    uint8_t *y8;
    const uint8_t *lut8;
    int nt;
} sqc_qlinear_args;

/* sqc_qlinear's second step: the GEMM (sparse where a->Wsp) on the operands of its first */
static void sqc_qlinear_gemm(const sqc_qlinear_args *a, const uint8_t *aq, const float *a_scale,
                             const int32_t *a_zp, const int32_t *rowsum)
{
    const int M = a->B * a->rows;
{% if sparse %}
    if (a->Wsp) {
        sqc_u8s8_spmm(M, a->N, a->K, aq, a->ldq, a->Wsp, a_scale, a_zp, a->col_comp, a->w_zp,
                      rowsum, a->w_scale, a->bias, a->residual, a->y, a->N, a->act, a->post,
                      a->y8, a->lut8, a->scratch + a->sp_offset, a->nt);
        return;
    }
{% endif %}
    sqc_u8s8_gemm(M, a->N, a->K, aq, a->ldq, a->Wp, a_scale, a_zp, a->col_comp, a->w_zp, rowsum,
                  a->w_scale, a->bias, a->residual, a->y, a->N, a->act, a->post, a->y8, a->lut8,
                  a->nt);
}

static void sqc_qlinear_call(const sqc_qlinear_args *a)
{
    uint8_t *aq;
    float *a_scale;
    int32_t *a_zp, *rowsum;
    sqc_qlinear_operands(a->B, a->rows, a->K, a->x, a->mode, a->x_scale, a->x_zp, a->w_zp,
                         a->scratch, a->ldq, a->nt, &aq, &a_scale, &a_zp, &rowsum);
    sqc_qlinear_gemm(a, aq, a_scale, a_zp, rowsum);
}

/* An int8 linear layer (sqc.QLinear) over B examples of `rows` rows:
   quantize X (mode 0: DynamicQuantizeLinear's range per example; 1: given scale and zero
   point; 2: X is uint8 already; 3: X is int8 already), then
   Y = act(float(acc) * (x_scale * w_scale[n]) + bias + residual) by sqc_u8s8_gemm, or with
   post (QDQ rounding stages, see sqc_qpost) Y = FQ_c(FQ_b(FQ_a(product) + bias) + FQ_r(residual)).
   Wsp non-NULL: W is the sparse blob of sparse_packing.pack_s8_sparse (Wp unused) and
   sqc_u8s8_spmm runs instead, with its scratch at scratch + sp_offset.
   y8 non-NULL (see sqc_u8s8_gemm's C8): the bytes lut8[level index of the last
   stage] (lut8 NULL: the index) go to y8 and y is not written (passes/fuse_lut_epilogue.py).
   scratch: B * (rows * ldq + 12 * rows) bytes (+ the sparse kernel's, at sp_offset). */
static void sqc_qlinear(int B, int rows, int N, int K, const void *x, int mode, float x_scale,
                        int32_t x_zp, const int8_t *Wp, const int32_t *col_comp,
                        const int32_t *w_zp, const float *w_scale, const float *bias,
                        const float *residual, float *y, uint8_t *scratch, int ldq,
                        const void *Wsp, size_t sp_offset, int act, const sqc_qpost *post,
                        uint8_t *y8, const uint8_t *lut8, int nt)
{
    const sqc_qlinear_args a = { B, rows, N, K, x, mode, x_scale, x_zp, Wp, col_comp, w_zp,
                                 w_scale, bias, residual, y, scratch, ldq, Wsp, sp_offset, act,
                                 post, y8, lut8, nt };
    sqc_qlinear_call(&a);
}

{% if sparse %}
/* A transformer FFN's two sparse int8 layers (passes/pair_sparse_ffn.py): l1 writes the bytes
   l1->y8 (its GELU table's) that l2 alone reads, as its uint8 input. Where
   sqc_u8s8_spmm_ffn applies (the avx512_vnni kernels with 64-token panels), one call runs
   both, each thread taking token panels through the two layers; l2's per-row a_scale and a_zp
   go to l1->scratch + q2_offset (8 bytes a row, past what l1's own call uses). Otherwise the
   two sqc_qlinear calls. The same bits either way. */
static void sqc_qlinear_ffn(const sqc_qlinear_args *l1, const sqc_qlinear_args *l2, size_t q2_offset)
{
#ifdef SQC_HAVE_U8S8_SPMM_FFN
    const int M = l1->B * l1->rows;
    if (l1->Wsp && l2->Wsp && l1->y8 && !l1->residual && !l1->act && l2->mode == 2 &&
        l2->x == (const void *)l1->y8 && l2->K == l1->N && l2->B * l2->rows == M) {
        uint8_t *aq;
        float *as1;
        int32_t *azp1, *rs1;
        sqc_qlinear_operands(l1->B, l1->rows, l1->K, l1->x, l1->mode, l1->x_scale, l1->x_zp,
                             l1->w_zp, l1->scratch, l1->ldq, l1->nt, &aq, &as1, &azp1, &rs1);
        float *as2 = (float *)(l1->scratch + q2_offset);
        int32_t *azp2 = (int32_t *)(as2 + M);
        for (int m = 0; m < M; ++m) {
            as2[m] = l2->x_scale;
            azp2[m] = l2->x_zp;
        }
        if (sqc_u8s8_spmm_ffn(M, l1->K, l1->N, l2->N, aq, l1->ldq, l1->Wsp, as1, azp1, l1->col_comp,
                              l1->w_zp, l1->w_scale, l1->bias, l1->post, l1->lut8, l1->y8, l2->Wsp,
                              as2, azp2, l2->col_comp, l2->w_zp, l2->w_scale, l2->bias,
                              l2->residual, l2->y, l2->N, l2->act, l2->post, l2->y8, l2->lut8,
                              l1->scratch + l1->sp_offset, l1->nt))
            return;
        sqc_qlinear_gemm(l1, aq, as1, azp1, rs1); /* not fused: l1 on the operands made above */
        sqc_qlinear_call(l2);
        return;
    }
#else
    (void)q2_offset; /* no fused kernel for this target's int8 sparse kernels */
#endif
    sqc_qlinear_call(l1);
    sqc_qlinear_call(l2);
}
{% endif %}

/* C[M,N] = (A - a_zp) x (B - b_zp[n]) in int32; A, B uint8 or int8 (is_s8 flags), row-major */
static void sqc_matmul_i8_plain(int M, int N, int K, const void *A, const void *Bm, int32_t *C,
                                int a_s8, int32_t a_zp, int b_s8, const int32_t *b_zp)
{
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            int32_t acc = 0;
            for (int k = 0; k < K; ++k) {
                const int32_t a = a_s8 ? ((const int8_t *)A)[(size_t)i * K + k]
                                       : ((const uint8_t *)A)[(size_t)i * K + k];
                const int32_t b = b_s8 ? ((const int8_t *)Bm)[(size_t)k * N + j]
                                       : ((const uint8_t *)Bm)[(size_t)k * N + j];
                acc += (a - a_zp) * (b - b_zp[j]);
            }
            C[(size_t)i * N + j] = acc;
        }
}

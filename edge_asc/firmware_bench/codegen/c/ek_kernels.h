/* edge-asc firmware kernels: plain C99 int8 kernels with TensorFlow Lite's integer reference arithmetic.
 *
 * Every kernel gives the bit-exact result of TensorFlow Lite Micro's reference kernel for the same op and the same
 * quantisation parameters; the parameters (multipliers, shifts, offsets, clamps, broadcast strides, index tables)
 * are computed by the generator (edge_asc/firmware_bench/codegen/lower.py) exactly as TFLM's Prepare computes them.
 *
 * Requantisation: x * M * 2^shift with M a Q31 multiplier, by default in TFLite's "double rounding" form
 * (saturating rounding doubling high multiply, then rounding divide by a power of two); build with
 * -DEK_SINGLE_ROUNDING=1 for runtimes compiled with TFLITE_SINGLE_ROUNDING.
 */
#ifndef EK_KERNELS_H
#define EK_KERNELS_H

#include <stdint.h>
#include <stddef.h>

#define EK_MAXD 6

#ifndef EK_SINGLE_ROUNDING
#define EK_SINGLE_ROUNDING 0
#endif

#if defined(__GNUC__)
#define EK_INLINE static inline __attribute__((always_inline))
#else
#define EK_INLINE static inline
#endif

/* ---- fixed-point arithmetic (gemmlowp / TFLite reference semantics) ------------------------------------------ */

/* round(a * b / 2^31) with ties away from zero; the only overflow (INT32_MIN * INT32_MIN) saturates. */
EK_INLINE int32_t ek_srdhm(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* x / 2^e rounded to nearest, ties away from zero (e in 0..31). */
EK_INLINE int32_t ek_rdbpot(int32_t x, int e) {
    const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (remainder > threshold ? 1 : 0);
}

/* ek_srdhm for a multiplier m >= 0 (every requantisation multiplier): round(a * m / 2^31) with ties away from
 * zero equals floor((a * m + 2^30) / 2^31) -- one multiply-accumulate and a shift; no saturation case exists. */
EK_INLINE int32_t ek_srdhm_pos(int32_t a, int32_t m) {
    return (int32_t)(((int64_t)a * m + ((int64_t)1 << 30)) >> 31);
}

/* ek_srdhm for |a| < 2^30 and m >= 0: floor((a m + 2^30) / 2^31) = floor((2a m + 2^31) / 2^32), the rounded high
 * word of a 32 x 32 multiply (one SMMULR on cores with the DSP extension). */
EK_INLINE int32_t ek_srdhm_small(int32_t a, int32_t m) {
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a * 2), "r"(m));
    return r;
#else
    return (int32_t)(((int64_t)(a * 2) * m + ((int64_t)1 << 31)) >> 32);
#endif
}

/* x * M * 2^shift (MultiplyByQuantizedMultiplier); M >= 0. */
EK_INLINE int32_t ek_mbqm(int32_t x, int32_t m, int shift) {
#if EK_SINGLE_ROUNDING
    const int total = 31 - shift;
    const int64_t round = (int64_t)1 << (total - 1);
    return (int32_t)(((int64_t)x * m + round) >> total);
#else
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return ek_rdbpot(ek_srdhm_pos((int32_t)((uint32_t)x << left), m), right);
#endif
}

/* ek_mbqm for |x| < 2^30 (element-wise rescaling: |x| <= 255 * 2^20 sums, 255 * 255 products): with shift <= 0
 * RoundingDivideByPOT(v, e) = (v + 2^(e-1) - (v < 0)) >> e exactly, since |v| <= |x| leaves room for the add. */
EK_INLINE int32_t ek_mbqm_s(int32_t x, int32_t m, int shift) {
#if EK_SINGLE_ROUNDING
    return ek_mbqm(x, m, shift);
#else
    if (shift > 0) return ek_mbqm(x, m, shift);
    const int32_t v = ek_srdhm_small(x, m);
    return shift ? (v + (1 << (-shift - 1)) + (v >> 31)) >> -shift : v;
#endif
}

EK_INLINE int32_t ek_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* ---- parameters (one const struct per op, generated) --------------------------------------------------------- */

/* Broadcast of a binary element-wise op: the output's (collapsed) dims and each input's strides in elements (0 on
 * a broadcast dim). nd == 0 means both inputs have the output's shape (plain element-wise loop over `size`). */
typedef struct {
    int32_t size;
    int32_t nd;
    int32_t dims[EK_MAXD];
    int32_t st1[EK_MAXD];
    int32_t st2[EK_MAXD];
} ek_bcast_t;

typedef struct {            /* ADD / SUB (int8) */
    ek_bcast_t b;
    int32_t in1_offset, in2_offset, out_offset;
    int32_t in1_mult, in2_mult, out_mult;
    int32_t in1_shift, in2_shift, out_shift;
    int32_t left_shift;
    int32_t act_min, act_max;
} ek_addsub_t;

typedef struct {            /* MUL (int8) */
    ek_bcast_t b;
    int32_t in1_offset, in2_offset, out_offset;
    int32_t out_mult, out_shift;
    int32_t act_min, act_max;
} ek_mul_t;

/* A binary op evaluated through 256-entry tables: for every element v of the small operand, the table
 * t[x] = f(x, v) (or f(v, x)) is built, then applied to the output elements that use v. s_* dims: where the small
 * operand varies (its strides in s_small); b_* dims: where it is constant. Strides in elements of the output and of
 * the big operand. */
typedef struct {
    int32_t n_s, n_b, small_first;
    int32_t s_dims[EK_MAXD], s_out[EK_MAXD], s_big[EK_MAXD], s_small[EK_MAXD];
    int32_t b_dims[EK_MAXD], b_out[EK_MAXD], b_big[EK_MAXD];
} ek_grouped_t;

/* Per-channel requantisation of the fast kernels: accumulator + bias, then x M / 2^e rounded as TFLite (shift <= 0;
 * half = 2^(e-1), 0 when e = 0). */
typedef struct {
    int32_t bias, mult, e, half;
} ek_rq_t;

enum { EK_OP_ADD = 0, EK_OP_SUB = 1, EK_OP_MUL = 2, EK_OP_MAX = 3, EK_OP_MIN = 4 };

typedef struct {            /* CONV_2D (int8, per-channel requantisation) */
    int32_t in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, k_c;  /* k_c: filter input depth (grouped conv) */
    int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t in_offset, out_offset, act_min, act_max;
    int32_t patch;          /* fast kernel: weights per output channel padded to a multiple of 4 bytes */
    int32_t round_fast;     /* fast kernel: every shift <= 0 and no accumulator can overflow the rounding add
                               (1), nor 2^30 (2: the multiply is one rounded high-word multiply) */
} ek_conv_t;

typedef struct {            /* DEPTHWISE_CONV_2D (int8, per-channel) */
    int32_t in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, depth_mult;
    int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t in_offset, out_offset, act_min, act_max;
} ek_dwconv_t;

typedef struct {            /* FULLY_CONNECTED (int8); per_channel: mult/shift arrays have out_depth entries */
    int32_t batches, accum_depth, out_depth, per_channel;
    int32_t in_offset, w_offset, out_offset, act_min, act_max;
    int32_t depth4;         /* fast kernel: weights per output channel padded to a multiple of 4 bytes */
    int32_t round_fast;     /* fast kernel: as ek_conv_t.round_fast */
} ek_fc_t;

typedef struct {            /* AVERAGE_POOL_2D / MAX_POOL_2D (int8) */
    int32_t batches, in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
} ek_pool_t;

/* A reduction: every output element combines the input elements of the reduced dims. Output dims (kept axes, in
 * output order) and reduced dims each come with their input strides in elements. */
typedef struct {
    int32_t n_out, n_red;
    int32_t out_dims[EK_MAXD], out_st[EK_MAXD];
    int32_t red_dims[EK_MAXD], red_st[EK_MAXD];
    int32_t count;                                   /* elements per output (product of red_dims) */
    int32_t in_zp, out_zp, mult, shift;              /* MEAN / SUM */
} ek_reduce_t;

typedef struct {            /* PAD (int8), 4-D after extension */
    int32_t in_dims[4], out_dims[4], before[4];
    int32_t pad_value;
} ek_pad_t;

typedef struct {            /* TRANSPOSE: output dims and the input stride of each output dim */
    int32_t nd, size;
    int32_t dims[EK_MAXD], st[EK_MAXD];
} ek_transpose_t;

typedef struct {            /* RESIZE_NEAREST_NEIGHBOR: source row/column of every output row/column */
    int32_t batches, in_h, in_w, c, out_h, out_w;
} ek_resize_t;

typedef struct {            /* RELU family with requantisation (int8 RELU) */
    int32_t size, in_zp, out_zp, mult, shift, act_min, act_max;
} ek_requant_t;

/* ---- kernels --------------------------------------------------------------------------------------------------- */

void ek_add_s8(const ek_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void ek_sub_s8(const ek_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void ek_mul_s8(const ek_mul_t *p, const int8_t *a, const int8_t *b, int8_t *out);
/* ADD / SUB with the two inputs' rescaling tabulated (scratch: 512 int32) */
void ek_addsub_tab_s8(const ek_addsub_t *p, int sub, const int8_t *a, const int8_t *b, int8_t *out, int32_t *scratch);
/* any binary op through per-value tables (scratch: 256 bytes); params: ek_addsub_t or ek_mul_t (NULL: MAX/MIN) */
void ek_binary_grouped_s8(const ek_grouped_t *g, int op, const void *params, const int8_t *big, const int8_t *small,
                          int8_t *out, int8_t *scratch);
void ek_maximum_s8(const ek_bcast_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void ek_minimum_s8(const ek_bcast_t *p, const int8_t *a, const int8_t *b, int8_t *out);

void ek_conv2d_s8(const ek_conv_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                  const int32_t *mult, const int32_t *shift, int8_t *out);
/* Fast paths (groups == 1 for conv; w_offset == 0 for dense): weights per output channel zero-padded to a multiple
 * of 4 bytes, channel pairs word-interleaved (see lower.fast_weight_layout); requantisation from `rq` when the
 * generator set round_fast, else from mult/shift/bias (TFLite's two-step rounding). Dual 16-bit MACs (SMLAD) where
 * the core has the DSP extension, portable C elsewhere. */
void ek_conv2d_s8_fast(const ek_conv_t *p, const int8_t *in, const int8_t *w, const ek_rq_t *rq,
                       const int32_t *mult, const int32_t *shift, const int32_t *bias, int8_t *out,
                       int8_t *scratch);
void ek_fc_s8_fast(const ek_fc_t *p, const int8_t *in, const int8_t *w, const ek_rq_t *rq,
                   const int32_t *mult, const int32_t *shift, const int32_t *bias, int8_t *out, int8_t *scratch);
void ek_dwconv2d_s8(const ek_dwconv_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                    const int32_t *mult, const int32_t *shift, int8_t *out);
void ek_fc_s8(const ek_fc_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
              const int32_t *mult, const int32_t *shift, int8_t *out);

void ek_avgpool_s8(const ek_pool_t *p, const int8_t *in, int8_t *out);
void ek_maxpool_s8(const ek_pool_t *p, const int8_t *in, int8_t *out);

void ek_mean_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out);
void ek_sum_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out);
void ek_reduce_max_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out);
void ek_reduce_min_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out);

void ek_pad_s8(const ek_pad_t *p, const int8_t *in, int8_t *out);
void ek_transpose_s8(const ek_transpose_t *p, const int8_t *in, int8_t *out);
void ek_resize_nearest_s8(const ek_resize_t *p, const int16_t *src_y, const int16_t *src_x,
                          const int8_t *in, int8_t *out);
/* RESIZE_NEAREST_NEIGHBOR written straight into the interior of the PAD that consumes it (H/W padding only). */
void ek_resize_nearest_pad_s8(const ek_resize_t *p, const int16_t *src_y, const int16_t *src_x, const ek_pad_t *pad,
                              const int8_t *in, int8_t *out);
void ek_concat_part_s8(int32_t outer, int32_t chunk, int32_t out_row, int32_t offset, const int8_t *in, int8_t *out);

void ek_relu_requant_s8(const ek_requant_t *p, const int8_t *in, int8_t *out);   /* RELU: requantise and clamp */
/* RELU / int8 QUANTIZE through a 256-entry table built at run time (scratch: 256 bytes) */
void ek_requant_tab_s8(const ek_requant_t *p, const int8_t *in, int8_t *out, int8_t *scratch);
void ek_clamp_s8(int32_t size, int32_t lo, int32_t hi, const int8_t *in, int8_t *out);  /* RELU6, RELU_N1_TO_1 */
void ek_requantize_s8(const ek_requant_t *p, const int8_t *in, int8_t *out);     /* QUANTIZE int8 -> int8 */
void ek_quantize_f32_s8(int32_t size, float scale, int32_t zp, const float *in, int8_t *out);
void ek_dequantize_s8_f32(int32_t size, double scale, int32_t zp, const int8_t *in, float *out);
void ek_copy(size_t n, const void *in, void *out);

#endif /* EK_KERNELS_H */

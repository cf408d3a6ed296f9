/* edge-asc firmware kernels (see ek_kernels.h). Portable C99; the generated model calls them with const
 * parameter structs. Loop orders may differ from TFLite's reference kernels: every result is an exact int32 sum
 * (or a max/min/copy), so the order of accumulation does not change a single bit. */
#include "ek_kernels.h"

#include <string.h>

/* Rounding of an element-wise result v = SRDHM(x, m) by 2^e (e = -shift >= 0), |x| < 2^30: see ek_mbqm_s. */
#define EK_ROUND_E(v, e, half) ((e) ? ((v) + (half) + ((v) >> 31)) >> (e) : (v))

/* ---- binary element-wise ops with broadcasting ---------------------------------------------------------------- */

/* Calls BODY(x, y) -> int8 for every output element; x from a, y from b (both int32). */
#define EK_BINARY(B, A, BB, OUT, BODY)                                                                        \
    do {                                                                                                       \
        const ek_bcast_t *b_ = (B);                                                                            \
        if (b_->nd == 0) {                                                                                     \
            for (int32_t i_ = 0; i_ < b_->size; ++i_) {                                                        \
                const int32_t x = (A)[i_], y = (BB)[i_];                                                       \
                (OUT)[i_] = (int8_t)(BODY);                                                                    \
            }                                                                                                  \
        } else {                                                                                               \
            int32_t idx_[EK_MAXD] = {0};                                                                       \
            const int nd_ = b_->nd;                                                                            \
            const int32_t inner_ = b_->dims[nd_ - 1], s1_ = b_->st1[nd_ - 1], s2_ = b_->st2[nd_ - 1];         \
            int32_t o1_ = 0, o2_ = 0;                                                                          \
            int8_t *po_ = (OUT);                                                                               \
            for (;;) {                                                                                         \
                const int8_t *pa_ = (A) + o1_, *pb_ = (BB) + o2_;                                              \
                for (int32_t i_ = 0; i_ < inner_; ++i_) {                                                      \
                    const int32_t x = pa_[i_ * s1_], y = pb_[i_ * s2_];                                        \
                    *po_++ = (int8_t)(BODY);                                                                   \
                }                                                                                              \
                int d_ = nd_ - 2;                                                                              \
                for (; d_ >= 0; --d_) {                                                                        \
                    o1_ += b_->st1[d_];                                                                        \
                    o2_ += b_->st2[d_];                                                                        \
                    if (++idx_[d_] < b_->dims[d_]) break;                                                      \
                    o1_ -= b_->st1[d_] * b_->dims[d_];                                                         \
                    o2_ -= b_->st2[d_] * b_->dims[d_];                                                         \
                    idx_[d_] = 0;                                                                              \
                }                                                                                              \
                if (d_ < 0) break;                                                                             \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

EK_INLINE int32_t ek_addsub_one(const ek_addsub_t *p, int32_t x, int32_t y, int sub) {
    const int32_t a = (int32_t)((uint32_t)(x + p->in1_offset) << p->left_shift);
    const int32_t b = (int32_t)((uint32_t)(y + p->in2_offset) << p->left_shift);
    const int32_t sa = ek_mbqm_s(a, p->in1_mult, p->in1_shift);
    const int32_t sb = ek_mbqm_s(b, p->in2_mult, p->in2_shift);
    const int32_t raw = ek_mbqm_s(sub ? sa - sb : sa + sb, p->out_mult, p->out_shift) + p->out_offset;
    return ek_clamp(raw, p->act_min, p->act_max);
}

void ek_add_s8(const ek_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(&p->b, a, b, out, ek_addsub_one(p, x, y, 0));
}

void ek_sub_s8(const ek_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(&p->b, a, b, out, ek_addsub_one(p, x, y, 1));
}

EK_INLINE int32_t ek_mul_one(const ek_mul_t *p, int32_t x, int32_t y) {
    const int32_t raw = ek_mbqm_s((x + p->in1_offset) * (y + p->in2_offset), p->out_mult, p->out_shift) + p->out_offset;
    return ek_clamp(raw, p->act_min, p->act_max);
}

void ek_mul_s8(const ek_mul_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
#if !EK_SINGLE_ROUNDING
    if (p->b.nd == 0 && p->out_shift <= 0) {
        const int32_t o1 = p->in1_offset, o2 = p->in2_offset, m = p->out_mult, e = -p->out_shift;
        const int32_t half = e ? 1 << (e - 1) : 0, oo = p->out_offset, lo = p->act_min, hi = p->act_max;
        const int32_t n = p->b.size;
        for (int32_t i = 0; i < n; ++i) {
            int32_t v = ek_srdhm_small((a[i] + o1) * (b[i] + o2), m);
            v = EK_ROUND_E(v, e, half) + oo;
            v = v < lo ? lo : v;
            out[i] = (int8_t)(v > hi ? hi : v);
        }
        return;
    }
#endif
    EK_BINARY(&p->b, a, b, out, ek_mul_one(p, x, y));
}

void ek_maximum_s8(const ek_bcast_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(p, a, b, out, x > y ? x : y);
}

void ek_minimum_s8(const ek_bcast_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(p, a, b, out, x < y ? x : y);
}

/* ---- table-driven element-wise ops ------------------------------------------------------------------------------ */

void ek_addsub_tab_s8(const ek_addsub_t *p, int sub, const int8_t *a, const int8_t *b, int8_t *out, int32_t *scratch) {
    int32_t *t1 = scratch, *t2 = scratch + 256;
    for (int32_t v = -128; v < 128; ++v) {
        const int32_t a_ = (int32_t)((uint32_t)(v + p->in1_offset) << p->left_shift);
        const int32_t b_ = (int32_t)((uint32_t)(v + p->in2_offset) << p->left_shift);
        t1[(uint8_t)v] = ek_mbqm_s(a_, p->in1_mult, p->in1_shift);
        const int32_t sb = ek_mbqm_s(b_, p->in2_mult, p->in2_shift);
        t2[(uint8_t)v] = sub ? -sb : sb;
    }
    const int32_t mo = p->out_mult, so = p->out_shift, oo = p->out_offset, lo = p->act_min, hi = p->act_max;
#if !EK_SINGLE_ROUNDING
    if (p->b.nd == 0 && so <= 0) {
        const int32_t e = -so, half = e ? 1 << (e - 1) : 0, n = p->b.size;
        for (int32_t i = 0; i < n; ++i) {
            int32_t v = ek_srdhm_small(t1[(uint8_t)a[i]] + t2[(uint8_t)b[i]], mo);
            v = EK_ROUND_E(v, e, half) + oo;
            v = v < lo ? lo : v;
            out[i] = (int8_t)(v > hi ? hi : v);
        }
        return;
    }
#endif
    EK_BINARY(&p->b, a, b, out, ek_clamp(ek_mbqm_s(t1[(uint8_t)x] + t2[(uint8_t)y], mo, so) + oo, lo, hi));
}

static int32_t ek_binary_one(int op, const void *params, int32_t x, int32_t y) {
    switch (op) {
        case EK_OP_ADD: return ek_addsub_one((const ek_addsub_t *)params, x, y, 0);
        case EK_OP_SUB: return ek_addsub_one((const ek_addsub_t *)params, x, y, 1);
        case EK_OP_MUL: return ek_mul_one((const ek_mul_t *)params, x, y);
        case EK_OP_MAX: return x > y ? x : y;
        default: return x < y ? x : y;
    }
}

void ek_binary_grouped_s8(const ek_grouped_t *g, int op, const void *params, const int8_t *big, const int8_t *small,
                          int8_t *out, int8_t *scratch) {
    int32_t si[EK_MAXD] = {0};
    int32_t s_out = 0, s_big = 0, s_small = 0;
    const int nb = g->n_b;
    const int32_t inner = nb ? g->b_dims[nb - 1] : 1, io = nb ? g->b_out[nb - 1] : 0, ib = nb ? g->b_big[nb - 1] : 0;
    for (;;) {
        const int32_t v = small[s_small];
        for (int32_t x = -128; x < 128; ++x)
            scratch[(uint8_t)x] = (int8_t)(g->small_first ? ek_binary_one(op, params, v, x)
                                                          : ek_binary_one(op, params, x, v));
        int32_t bi[EK_MAXD] = {0};
        int32_t b_out = 0, b_big = 0;
        for (;;) {
            int8_t *po = out + s_out + b_out;
            const int8_t *pb = big + s_big + b_big;
            for (int32_t k = 0; k < inner; ++k) po[k * io] = scratch[(uint8_t)pb[k * ib]];
            int d = nb - 2;
            for (; d >= 0; --d) {
                b_out += g->b_out[d];
                b_big += g->b_big[d];
                if (++bi[d] < g->b_dims[d]) break;
                b_out -= g->b_out[d] * g->b_dims[d];
                b_big -= g->b_big[d] * g->b_dims[d];
                bi[d] = 0;
            }
            if (d < 0) break;
        }
        int e = g->n_s - 1;
        for (; e >= 0; --e) {
            s_out += g->s_out[e];
            s_big += g->s_big[e];
            s_small += g->s_small[e];
            if (++si[e] < g->s_dims[e]) break;
            s_out -= g->s_out[e] * g->s_dims[e];
            s_big -= g->s_big[e] * g->s_dims[e];
            s_small -= g->s_small[e] * g->s_dims[e];
            si[e] = 0;
        }
        if (e < 0) break;
    }
}

/* ---- convolutions ----------------------------------------------------------------------------------------------- */

void ek_conv2d_s8(const ek_conv_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                  const int32_t *mult, const int32_t *shift, int8_t *out) {
    const int32_t groups = p->in_c / p->k_c;
    const int32_t per_group = p->out_c / groups;
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_h;
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_w;
            for (int32_t oc = 0; oc < p->out_c; ++oc) {
                const int32_t g = oc / per_group;
                const int8_t *wo = w + (size_t)oc * p->k_h * p->k_w * p->k_c;
                int32_t acc = 0;
                for (int32_t ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (int32_t kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        if (ix < 0 || ix >= p->in_w) continue;
                        const int8_t *pi = in + ((size_t)iy * p->in_w + ix) * p->in_c + g * p->k_c;
                        const int8_t *pw = wo + ((size_t)ky * p->k_w + kx) * p->k_c;
                        for (int32_t ci = 0; ci < p->k_c; ++ci) acc += pw[ci] * (pi[ci] + p->in_offset);
                    }
                }
                if (bias) acc += bias[oc];
                acc = ek_mbqm(acc, mult[oc], shift[oc]) + p->out_offset;
                out[((size_t)oy * p->out_w + ox) * p->out_c + oc] = (int8_t)ek_clamp(acc, p->act_min, p->act_max);
            }
        }
    }
}

/* ---- dual 16-bit MAC dot products (Cortex-M DSP extension: SXTB16 / SXTAB16 / SMLAD) ------------------------ */

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define EK_DSP 1
EK_INLINE uint32_t ek_ld32(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
EK_INLINE uint32_t ek_sxtb16(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}
EK_INLINE uint32_t ek_sxtb16_r8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
EK_INLINE uint32_t ek_sxtab16(uint32_t a, uint32_t x) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
EK_INLINE uint32_t ek_sxtab16_r8(uint32_t a, uint32_t x) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
EK_INLINE int32_t ek_smlad(uint32_t a, uint32_t b, int32_t acc) {
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#else
#define EK_DSP 0
#endif

/* Dot products of the fast kernels. Operand layouts: a "pair" holds two int8 vectors of n bytes word-interleaved
 * (4 bytes of the first, 4 of the second, ...), so one LDRD fetches both; every x is offset by `off`
 * (SXTAB16 adds it to the sign-extended halves); n is a multiple of 4. */

EK_INLINE uint32_t ek_off2(int32_t off) { return ((uint32_t)(uint16_t)off << 16) | (uint16_t)off; }

/* acc[0..1] += (x . w0, x . w1); x: one vector, w: pair of channels */
EK_INLINE void ek_dot_1p(const int8_t *x, const int8_t *w, int32_t n, int32_t off, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1];
#if EK_DSP
    const uint32_t off2 = ek_off2(off);
    const uint32_t *pw = (const uint32_t *)(const void *)w;
    for (int32_t i = 0; i < n; i += 4) {
        const uint32_t x0 = ek_ld32(x + i), w0 = pw[0], w1 = pw[1];
        pw += 2;
        const uint32_t xl = ek_sxtab16(off2, x0), xh = ek_sxtab16_r8(off2, x0);
        a0 = ek_smlad(ek_sxtb16(w0), xl, a0);
        a0 = ek_smlad(ek_sxtb16_r8(w0), xh, a0);
        a1 = ek_smlad(ek_sxtb16(w1), xl, a1);
        a1 = ek_smlad(ek_sxtb16_r8(w1), xh, a1);
    }
#else
    for (int32_t i = 0; i < n; i += 4) {
        for (int32_t j = 0; j < 4; ++j) {
            const int32_t x0 = x[i + j] + off;
            a0 += w[2 * i + j] * x0;
            a1 += w[2 * i + 4 + j] * x0;
        }
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
}

/* x . w with every x offset by `off`; x at stride `xs` words apart (1: plain vector, 2: one half of a pair) */
EK_INLINE int32_t ek_dot_11(const int8_t *x, int32_t xs, const int8_t *w, int32_t n, int32_t off) {
    int32_t a0 = 0;
#if EK_DSP
    const uint32_t off2 = ek_off2(off);
    for (int32_t i = 0; i < n; i += 4) {
        const uint32_t x0 = ek_ld32(x + i * xs), w0 = ek_ld32(w + i);
        a0 = ek_smlad(ek_sxtb16(w0), ek_sxtab16(off2, x0), a0);
        a0 = ek_smlad(ek_sxtb16_r8(w0), ek_sxtab16_r8(off2, x0), a0);
    }
#else
    for (int32_t i = 0; i < n; i += 4)
        for (int32_t j = 0; j < 4; ++j) a0 += w[i + j] * (x[i * xs + j] + off);
#endif
    return a0;
}

/* Pre-expanded pixel pairs ("q15 pairs"): for every 4 patch bytes of pixels A and B, 8 int16 values x + offset in
 * the lane order of SXTAB16 (bytes 0, 2, then 1, 3 of A; the same of B), so the inner loops only expand weights. */
#if !EK_DSP
static const int8_t ek_lane[4] = {0, 2, 1, 3};
#endif

EK_INLINE void ek_expand4(uint32_t va, uint32_t vb, int32_t off, int16_t *d) {
#if EK_DSP
    const uint32_t off2 = ek_off2(off);
    uint32_t *q = (uint32_t *)(void *)d;
    q[0] = ek_sxtab16(off2, va);
    q[1] = ek_sxtab16_r8(off2, va);
    q[2] = ek_sxtab16(off2, vb);
    q[3] = ek_sxtab16_r8(off2, vb);
#else
    for (int k = 0; k < 4; ++k) {
        d[k] = (int16_t)((int8_t)(va >> (8 * ek_lane[k])) + off);
        d[4 + k] = (int16_t)((int8_t)(vb >> (8 * ek_lane[k])) + off);
    }
#endif
}

/* acc[0..3] += (A . w0, A . w1, B . w0, B . w1); xq: q15 pair of n patch bytes, w: channel pair */
EK_INLINE void ek_dot_qp(const int16_t *xq, const int8_t *w, int32_t n, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
#if EK_DSP
    const uint32_t *px = (const uint32_t *)(const void *)xq, *pw = (const uint32_t *)(const void *)w;
    for (int32_t i = n >> 2; i > 0; --i) {
        const uint32_t x0l = px[0], x0h = px[1], x1l = px[2], x1h = px[3], w0 = pw[0], w1 = pw[1];
        px += 4;
        pw += 2;
        uint32_t wl = ek_sxtb16(w0), wh = ek_sxtb16_r8(w0);
        a0 = ek_smlad(wl, x0l, a0);
        a0 = ek_smlad(wh, x0h, a0);
        a2 = ek_smlad(wl, x1l, a2);
        a2 = ek_smlad(wh, x1h, a2);
        wl = ek_sxtb16(w1);
        wh = ek_sxtb16_r8(w1);
        a1 = ek_smlad(wl, x0l, a1);
        a1 = ek_smlad(wh, x0h, a1);
        a3 = ek_smlad(wl, x1l, a3);
        a3 = ek_smlad(wh, x1h, a3);
    }
#else
    for (int32_t g = 0; g < n / 4; ++g) {
        for (int k = 0; k < 4; ++k) {
            const int32_t xa = xq[8 * g + k], xb = xq[8 * g + 4 + k];
            const int32_t w0 = w[8 * g + ek_lane[k]], w1 = w[8 * g + 4 + ek_lane[k]];
            a0 += w0 * xa;
            a1 += w1 * xa;
            a2 += w0 * xb;
            a3 += w1 * xb;
        }
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* one pixel of a q15 pair (half = 0: A, 4: B) . one plain channel w */
EK_INLINE int32_t ek_dot_q1(const int16_t *xq, int32_t half, const int8_t *w, int32_t n) {
    int32_t a0 = 0;
#if EK_DSP
    const uint32_t *px = (const uint32_t *)(const void *)(xq + half);
    for (int32_t i = 0; i < n; i += 4, px += 4) {
        const uint32_t w0 = ek_ld32(w + i);
        a0 = ek_smlad(ek_sxtb16(w0), px[0], a0);
        a0 = ek_smlad(ek_sxtb16_r8(w0), px[1], a0);
    }
#else
    for (int32_t g = 0; g < n / 4; ++g)
        for (int k = 0; k < 4; ++k) a0 += w[4 * g + ek_lane[k]] * xq[8 * g + half + k];
#endif
    return a0;
}

EK_INLINE void ek_copy_small(int8_t *d, const int8_t *s, int32_t n) {
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t v;
        memcpy(&v, s + i, 4);
        memcpy(d + i, &v, 4);
    }
    for (; i < n; ++i) d[i] = s[i];
}

/* The receptive field of output pixel `pix` as one contiguous patch (ky, kx, c), out-of-image taps = input zero
 * point (so that x + in_offset = 0, as TFLite skips them), padded to p->patch bytes. */
static void ek_im2col(const ek_conv_t *p, const int8_t *in, int32_t pix, int8_t *dst) {
    const int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
    const int8_t zp = (int8_t)(-p->in_offset);
    const int32_t row = p->k_w * p->in_c;
    int8_t *d = dst;
    for (int32_t ky = 0; ky < p->k_h; ++ky, d += row) {
        const int32_t iy = iy0 + ky * p->dil_h;
        if (iy < 0 || iy >= p->in_h) {
            memset(d, zp, (size_t)row);
            continue;
        }
        const int8_t *src = in + (size_t)iy * p->in_w * p->in_c;
        if (p->dil_w == 1 && ix0 >= 0 && ix0 + p->k_w <= p->in_w) {
            ek_copy_small(d, src + (size_t)ix0 * p->in_c, row);
            continue;
        }
        for (int32_t kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ix0 + kx * p->dil_w;
            if (ix < 0 || ix >= p->in_w) memset(d + kx * p->in_c, zp, (size_t)p->in_c);
            else ek_copy_small(d + kx * p->in_c, src + (size_t)ix * p->in_c, p->in_c);
        }
    }
    for (int32_t i = p->k_h * row; i < p->patch; ++i) dst[i] = zp;
}

/* Both pixels' patches straight into a q15 pair when both receptive fields lie inside the image, rows are whole
 * words and there is no dilation; returns 0 (nothing written) otherwise. */
static int ek_im2col_q15(const ek_conv_t *p, const int8_t *in, int32_t pix, int16_t *xq) {
    const int32_t row = p->k_w * p->in_c;
    if ((row & 3) || p->dil_w != 1 || p->dil_h != 1) return 0;
    const int32_t oy0 = pix / p->out_w, ox0 = pix - oy0 * p->out_w;
    const int32_t oy1 = (pix + 1) / p->out_w, ox1 = pix + 1 - oy1 * p->out_w;
    const int32_t iya = oy0 * p->stride_h - p->pad_h, ixa = ox0 * p->stride_w - p->pad_w;
    const int32_t iyb = oy1 * p->stride_h - p->pad_h, ixb = ox1 * p->stride_w - p->pad_w;
    if (iya < 0 || iyb < 0 || ixa < 0 || ixb < 0 || iya + p->k_h > p->in_h || iyb + p->k_h > p->in_h ||
        ixa + p->k_w > p->in_w || ixb + p->k_w > p->in_w)
        return 0;
    const size_t line = (size_t)p->in_w * p->in_c;
    const int8_t *a = in + iya * line + (size_t)ixa * p->in_c, *b = in + iyb * line + (size_t)ixb * p->in_c;
    const int32_t off = p->in_offset;
    int16_t *d = xq;
    for (int32_t ky = 0; ky < p->k_h; ++ky, a += line, b += line) {
        for (int32_t i = 0; i < row; i += 4, d += 8) {
            uint32_t va, vb;
            memcpy(&va, a + i, 4);
            memcpy(&vb, b + i, 4);
            ek_expand4(va, vb, off, d);
        }
    }
    for (int32_t i = p->k_h * row; i < p->patch; i += 4, d += 8) ek_expand4(0, 0, 0, d);  /* weights are 0 there */
    return 1;
}

/* two int8 patches of n bytes (a multiple of 4) into a q15 pair */
static void ek_expand_pair(const int8_t *a, const int8_t *b, int32_t n, int32_t off, int16_t *xq) {
    for (int32_t i = 0; i < n; i += 4, xq += 8) {
        uint32_t va, vb;
        memcpy(&va, a + i, 4);
        memcpy(&vb, b + i, 4);
        ek_expand4(va, vb, off, xq);
    }
}

/* Requantise a row of n accumulators (channels 0..n-1) into int8 outputs. */
static void ek_requant_row(const int32_t *acc, int32_t n, const ek_rq_t *rq, const int32_t *mult,
                           const int32_t *shift, const int32_t *bias, int32_t fast, int32_t oo, int32_t lo,
                           int32_t hi, int8_t *out) {
#if !EK_SINGLE_ROUNDING
    if (fast == 2) {
        for (int32_t c = 0; c < n; ++c, ++rq) {
            int32_t v = ek_srdhm_small(acc[c] + rq->bias, rq->mult);
            if (rq->e) v = (v + rq->half + (v >> 31)) >> rq->e;
            v += oo;
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            out[c] = (int8_t)v;
        }
        return;
    }
    if (fast) {
        for (int32_t c = 0; c < n; ++c, ++rq) {
            int32_t v = ek_srdhm_pos(acc[c] + rq->bias, rq->mult);
            if (rq->e) v = (v + rq->half + (v >> 31)) >> rq->e;
            v += oo;
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            out[c] = (int8_t)v;
        }
        return;
    }
#endif
    (void)rq;
    (void)fast;
    for (int32_t c = 0; c < n; ++c) {
        const int32_t v = ek_mbqm(acc[c] + (bias ? bias[c] : 0), mult[c], shift[c]) + oo;
        out[c] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
    }
}

/* Weights: output channels in pairs, each pair word-interleaved (2 * patch bytes), an odd last channel plain.
 * Scratch: 6 * patch + 8 * out_c bytes, word aligned. */
void ek_conv2d_s8_fast(const ek_conv_t *p, const int8_t *in, const int8_t *w, const ek_rq_t *rq,
                       const int32_t *mult, const int32_t *shift, const int32_t *bias, int8_t *out,
                       int8_t *scratch) {
    const int32_t L = p->patch, n_pix = p->out_h * p->out_w, oc_n = p->out_c;
    const int32_t off = p->in_offset;
    int8_t *pa = scratch, *pb = scratch + L;
    int16_t *xq = (int16_t *)(void *)(scratch + 2 * L);
    int32_t *acc_a = (int32_t *)(void *)(scratch + 6 * L), *acc_b = acc_a + oc_n;
    for (int32_t pix = 0; pix < n_pix; pix += 2) {
        const int two = pix + 1 < n_pix;
        int8_t *oa = out + (size_t)pix * oc_n;
        int32_t oc = 0;
        if (two) {
            if (!ek_im2col_q15(p, in, pix, xq)) {
                ek_im2col(p, in, pix, pa);
                ek_im2col(p, in, pix + 1, pb);
                ek_expand_pair(pa, pb, L, off, xq);
            }
            for (; oc + 1 < oc_n; oc += 2) {
                int32_t acc[4] = {0, 0, 0, 0};
                ek_dot_qp(xq, w + (size_t)oc * L, L, acc);
                acc_a[oc] = acc[0];
                acc_a[oc + 1] = acc[1];
                acc_b[oc] = acc[2];
                acc_b[oc + 1] = acc[3];
            }
            if (oc < oc_n) {
                const int8_t *wa = w + (size_t)oc * L;
                acc_a[oc] = ek_dot_q1(xq, 0, wa, L);
                acc_b[oc] = ek_dot_q1(xq, 4, wa, L);
            }
            ek_requant_row(acc_a, oc_n, rq, mult, shift, bias, p->round_fast, p->out_offset, p->act_min, p->act_max, oa);
            ek_requant_row(acc_b, oc_n, rq, mult, shift, bias, p->round_fast, p->out_offset, p->act_min,
                           p->act_max, oa + oc_n);
        } else {
            ek_im2col(p, in, pix, pa);
            for (; oc + 1 < oc_n; oc += 2) {
                int32_t acc[2] = {0, 0};
                ek_dot_1p(pa, w + (size_t)oc * L, L, off, acc);
                acc_a[oc] = acc[0];
                acc_a[oc + 1] = acc[1];
            }
            if (oc < oc_n) acc_a[oc] = ek_dot_11(pa, 1, w + (size_t)oc * L, L, off);
            ek_requant_row(acc_a, oc_n, rq, mult, shift, bias, p->round_fast, p->out_offset, p->act_min, p->act_max, oa);
        }
    }
}

/* Weights as for ek_conv2d_s8_fast with patch = depth4; scratch: depth4 + 4 * out_depth bytes, word aligned. */
void ek_fc_s8_fast(const ek_fc_t *p, const int8_t *in, const int8_t *w, const ek_rq_t *rq,
                   const int32_t *mult, const int32_t *shift, const int32_t *bias, int8_t *out, int8_t *scratch) {
    const int32_t L = p->depth4, n = p->accum_depth, off = p->in_offset;
    int32_t *acc = (int32_t *)(void *)(scratch + L);
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = in + (size_t)b * n;
        if (L != n) {  /* pad the input row to whole words; weights are zero there */
            ek_copy_small(scratch, x, n);
            for (int32_t i = n; i < L; ++i) scratch[i] = 0;
            x = scratch;
        }
        int32_t oc = 0;
        for (; oc + 1 < p->out_depth; oc += 2) {
            int32_t a2[2] = {0, 0};
            ek_dot_1p(x, w + (size_t)oc * L, L, off, a2);
            acc[oc] = a2[0];
            acc[oc + 1] = a2[1];
        }
        if (oc < p->out_depth) acc[oc] = ek_dot_11(x, 1, w + (size_t)oc * L, L, off);
        ek_requant_row(acc, p->out_depth, rq, mult, shift, bias, p->round_fast, p->out_offset, p->act_min,
                       p->act_max, out + (size_t)b * p->out_depth);
    }
}

void ek_dwconv2d_s8(const ek_dwconv_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                    const int32_t *mult, const int32_t *shift, int8_t *out) {
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_h;
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_w;
            for (int32_t ic = 0; ic < p->in_c; ++ic) {
                for (int32_t m = 0; m < p->depth_mult; ++m) {
                    const int32_t oc = ic * p->depth_mult + m;
                    int32_t acc = 0;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = iy0 + ky * p->dil_h;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ix0 + kx * p->dil_w;
                            if (ix < 0 || ix >= p->in_w) continue;
                            acc += w[((size_t)ky * p->k_w + kx) * p->out_c + oc] *
                                   (in[((size_t)iy * p->in_w + ix) * p->in_c + ic] + p->in_offset);
                        }
                    }
                    if (bias) acc += bias[oc];
                    acc = ek_mbqm(acc, mult[oc], shift[oc]) + p->out_offset;
                    out[((size_t)oy * p->out_w + ox) * p->out_c + oc] = (int8_t)ek_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void ek_fc_s8(const ek_fc_t *p, const int8_t *in, const int8_t *w, const int32_t *bias,
              const int32_t *mult, const int32_t *shift, int8_t *out) {
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *pi = in + (size_t)b * p->accum_depth;
        for (int32_t oc = 0; oc < p->out_depth; ++oc) {
            const int8_t *pw = w + (size_t)oc * p->accum_depth;
            int32_t acc = 0;
            for (int32_t d = 0; d < p->accum_depth; ++d) acc += (pw[d] + p->w_offset) * (pi[d] + p->in_offset);
            if (bias) acc += bias[oc];
            const int32_t k = p->per_channel ? oc : 0;
            acc = ek_mbqm(acc, mult[k], shift[k]) + p->out_offset;
            out[(size_t)b * p->out_depth + oc] = (int8_t)ek_clamp(acc, p->act_min, p->act_max);
        }
    }
}

/* ---- pooling ----------------------------------------------------------------------------------------------------- */

void ek_avgpool_s8(const ek_pool_t *p, const int8_t *in, int8_t *out) {
    for (int32_t n = 0; n < p->batches; ++n) {
        const int8_t *pin = in + (size_t)n * p->in_h * p->in_w * p->c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fy1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t fx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
                const int32_t count = (fy1 - fy0) * (fx1 - fx0);
                for (int32_t ch = 0; ch < p->c; ++ch) {
                    int32_t acc = 0;
                    for (int32_t fy = fy0; fy < fy1; ++fy)
                        for (int32_t fx = fx0; fx < fx1; ++fx)
                            acc += pin[((size_t)(iy0 + fy) * p->in_w + (ix0 + fx)) * p->c + ch];
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    *out++ = (int8_t)ek_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void ek_maxpool_s8(const ek_pool_t *p, const int8_t *in, int8_t *out) {
    const int32_t c = p->c;
    for (int32_t n = 0; n < p->batches; ++n) {
        const int8_t *pin = in + (size_t)n * p->in_h * p->in_w * c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fy1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;
            for (int32_t ox = 0; ox < p->out_w; ++ox, out += c) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t fx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
                for (int32_t ch = 0; ch < c; ++ch) out[ch] = -128;
                for (int32_t fy = fy0; fy < fy1; ++fy)
                    for (int32_t fx = fx0; fx < fx1; ++fx) {
                        const int8_t *src = pin + ((size_t)(iy0 + fy) * p->in_w + (ix0 + fx)) * c;
                        for (int32_t ch = 0; ch < c; ++ch)
                            if (src[ch] > out[ch]) out[ch] = src[ch];
                    }
                for (int32_t ch = 0; ch < c; ++ch) out[ch] = (int8_t)ek_clamp(out[ch], p->act_min, p->act_max);
            }
        }
    }
}

/* ---- reductions -------------------------------------------------------------------------------------------------- */

/* Iterates the output elements; for each, folds the reduced input elements with BODY (acc, v). */
#define EK_REDUCE(P, IN, OUT, INIT, BODY, FINISH)                                                             \
    do {                                                                                                       \
        const ek_reduce_t *p_ = (P);                                                                           \
        int32_t oi_[EK_MAXD] = {0};                                                                            \
        int32_t obase_ = 0;                                                                                    \
        int8_t *po_ = (OUT);                                                                                   \
        for (;;) {                                                                                             \
            int32_t acc = (INIT);                                                                              \
            int32_t ri_[EK_MAXD] = {0};                                                                        \
            int32_t roff_ = 0;                                                                                 \
            const int nr_ = p_->n_red;                                                                         \
            const int32_t rin_ = p_->red_dims[nr_ - 1], rst_ = p_->red_st[nr_ - 1];                            \
            for (;;) {                                                                                         \
                const int8_t *pin_ = (IN) + obase_ + roff_;                                                    \
                for (int32_t k_ = 0; k_ < rin_; ++k_) {                                                        \
                    const int32_t v = pin_[k_ * rst_];                                                         \
                    BODY;                                                                                      \
                }                                                                                              \
                int d_ = nr_ - 2;                                                                              \
                for (; d_ >= 0; --d_) {                                                                        \
                    roff_ += p_->red_st[d_];                                                                   \
                    if (++ri_[d_] < p_->red_dims[d_]) break;                                                   \
                    roff_ -= p_->red_st[d_] * p_->red_dims[d_];                                                \
                    ri_[d_] = 0;                                                                               \
                }                                                                                              \
                if (d_ < 0) break;                                                                             \
            }                                                                                                  \
            *po_++ = (int8_t)(FINISH);                                                                         \
            int e_ = p_->n_out - 1;                                                                            \
            for (; e_ >= 0; --e_) {                                                                            \
                obase_ += p_->out_st[e_];                                                                      \
                if (++oi_[e_] < p_->out_dims[e_]) break;                                                       \
                obase_ -= p_->out_st[e_] * p_->out_dims[e_];                                                   \
                oi_[e_] = 0;                                                                                   \
            }                                                                                                  \
            if (e_ < 0) break;                                                                                 \
        }                                                                                                      \
    } while (0)

void ek_mean_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out) {
    EK_REDUCE(p, in, out, 0, acc += v,
              ek_clamp(ek_mbqm(acc - p->in_zp * p->count, p->mult, p->shift) + p->out_zp, -128, 127));
}

void ek_sum_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out) {
    EK_REDUCE(p, in, out, 0, acc += v,
              ek_clamp(ek_mbqm(acc - p->in_zp * p->count, p->mult, p->shift) + p->out_zp, -128, 127));
}

void ek_reduce_max_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out) {
    EK_REDUCE(p, in, out, -128, if (v > acc) acc = v, acc);
}

void ek_reduce_min_s8(const ek_reduce_t *p, const int8_t *in, int8_t *out) {
    EK_REDUCE(p, in, out, 127, if (v < acc) acc = v, acc);
}

/* ---- data movement ------------------------------------------------------------------------------------------------ */

void ek_pad_s8(const ek_pad_t *p, const int8_t *in, int8_t *out) {
    const int32_t *od = p->out_dims, *id = p->in_dims, *bf = p->before;
    memset(out, (int8_t)p->pad_value, (size_t)od[0] * od[1] * od[2] * od[3]);
    for (int32_t a = 0; a < id[0]; ++a)
        for (int32_t b = 0; b < id[1]; ++b)
            for (int32_t c = 0; c < id[2]; ++c) {
                const int8_t *src = in + (((size_t)a * id[1] + b) * id[2] + c) * id[3];
                int8_t *dst = out + (((size_t)(a + bf[0]) * od[1] + (b + bf[1])) * od[2] + (c + bf[2])) * od[3] + bf[3];
                memcpy(dst, src, (size_t)id[3]);
            }
}

void ek_transpose_s8(const ek_transpose_t *p, const int8_t *in, int8_t *out) {
    int32_t idx[EK_MAXD] = {0};
    const int nd = p->nd;
    const int32_t inner = p->dims[nd - 1], st = p->st[nd - 1];
    int32_t off = 0;
    for (;;) {
        const int8_t *src = in + off;
        for (int32_t i = 0; i < inner; ++i) *out++ = src[i * st];
        int d = nd - 2;
        for (; d >= 0; --d) {
            off += p->st[d];
            if (++idx[d] < p->dims[d]) break;
            off -= p->st[d] * p->dims[d];
            idx[d] = 0;
        }
        if (d < 0) break;
    }
}

void ek_resize_nearest_s8(const ek_resize_t *p, const int16_t *src_y, const int16_t *src_x,
                          const int8_t *in, int8_t *out) {
    const size_t row = (size_t)p->in_w * p->c;
    for (int32_t n = 0; n < p->batches; ++n) {
        const int8_t *pin = in + (size_t)n * p->in_h * row;
        for (int32_t y = 0; y < p->out_h; ++y) {
            const int8_t *py = pin + (size_t)src_y[y] * row;
            for (int32_t x = 0; x < p->out_w; ++x) {
                memcpy(out, py + (size_t)src_x[x] * p->c, (size_t)p->c);
                out += p->c;
            }
        }
    }
}

void ek_resize_nearest_pad_s8(const ek_resize_t *p, const int16_t *src_y, const int16_t *src_x, const ek_pad_t *pad,
                              const int8_t *in, int8_t *out) {
    const int32_t *od = pad->out_dims, *bf = pad->before;
    const size_t out_row = (size_t)od[2] * od[3], out_img = (size_t)od[1] * out_row, row = (size_t)p->in_w * p->c;
    memset(out, (int8_t)pad->pad_value, (size_t)od[0] * out_img);
    for (int32_t n = 0; n < p->batches; ++n) {
        const int8_t *pin = in + (size_t)n * p->in_h * row;
        int8_t *pout = out + (size_t)(n + bf[0]) * out_img + (size_t)bf[1] * out_row + (size_t)bf[2] * p->c;
        for (int32_t y = 0; y < p->out_h; ++y, pout += out_row) {
            const int8_t *py = pin + (size_t)src_y[y] * row;
            int8_t *o = pout;
            for (int32_t x = 0; x < p->out_w; ++x, o += p->c) memcpy(o, py + (size_t)src_x[x] * p->c, (size_t)p->c);
        }
    }
}

void ek_concat_part_s8(int32_t outer, int32_t chunk, int32_t out_row, int32_t offset, const int8_t *in, int8_t *out) {
    for (int32_t o = 0; o < outer; ++o) memcpy(out + (size_t)o * out_row + offset, in + (size_t)o * chunk, (size_t)chunk);
}

void ek_copy(size_t n, const void *in, void *out) {
    if (in != out) memmove(out, in, n);
}

/* ---- activations and (de)quantisation ----------------------------------------------------------------------------- */

void ek_relu_requant_s8(const ek_requant_t *p, const int8_t *in, int8_t *out) {
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t v = ek_mbqm(in[i] - p->in_zp, p->mult, p->shift) + p->out_zp;
        out[i] = (int8_t)ek_clamp(v, p->act_min, p->act_max);
    }
}

void ek_requant_tab_s8(const ek_requant_t *p, const int8_t *in, int8_t *out, int8_t *scratch) {
    for (int32_t v = -128; v < 128; ++v)
        scratch[(uint8_t)v] = (int8_t)ek_clamp(ek_mbqm_s(v - p->in_zp, p->mult, p->shift) + p->out_zp, p->act_min,
                                               p->act_max);
    for (int32_t i = 0; i < p->size; ++i) out[i] = scratch[(uint8_t)in[i]];
}

void ek_clamp_s8(int32_t size, int32_t lo, int32_t hi, const int8_t *in, int8_t *out) {
    for (int32_t i = 0; i < size; ++i) out[i] = (int8_t)ek_clamp(in[i], lo, hi);
}

void ek_requantize_s8(const ek_requant_t *p, const int8_t *in, int8_t *out) {
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t v = ek_mbqm(in[i] - p->in_zp, p->mult, p->shift) + p->out_zp;
        out[i] = (int8_t)ek_clamp(v, -128, 127);
    }
}

/* std::round for float: nearest integer, ties away from zero. */
static float ek_roundf(float v) {
    if (!(v < 8388608.0f && v > -8388608.0f)) return v; /* already an integer (or NaN) */
    const float t = (float)(int32_t)v;                   /* truncation */
    const float d = v - t;                               /* exact */
    if (d >= 0.5f) return t + 1.0f;
    if (d <= -0.5f) return t - 1.0f;
    return t;
}

void ek_quantize_f32_s8(int32_t size, float scale, int32_t zp, const float *in, int8_t *out) {
    for (int32_t i = 0; i < size; ++i) {
        const float r = ek_roundf(in[i] / scale);
        int32_t q = r >= 2147483520.0f ? INT32_MAX : (r <= -2147483648.0f ? INT32_MIN : (int32_t)r);
        q = q > INT32_MAX - 256 ? 127 : (q < INT32_MIN + 256 ? -128 : q + zp);
        out[i] = (int8_t)ek_clamp(q, -128, 127);
    }
}

void ek_dequantize_s8_f32(int32_t size, double scale, int32_t zp, const int8_t *in, float *out) {
    for (int32_t i = 0; i < size; ++i) out[i] = (float)(scale * (double)(in[i] - zp));
}

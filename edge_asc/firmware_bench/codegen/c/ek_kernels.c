/* edge-asc firmware kernels (see ek_kernels.h). Portable C99; the generated model calls them with const
 * parameter structs. Loop orders may differ from TFLite's reference kernels: every result is an exact int32 sum
 * (or a max/min/copy), so the order of accumulation does not change a single bit. */
#include "ek_kernels.h"

#include <string.h>

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
    const int32_t sa = ek_mbqm(a, p->in1_mult, p->in1_shift);
    const int32_t sb = ek_mbqm(b, p->in2_mult, p->in2_shift);
    const int32_t raw = ek_mbqm(sub ? sa - sb : sa + sb, p->out_mult, p->out_shift) + p->out_offset;
    return ek_clamp(raw, p->act_min, p->act_max);
}

void ek_add_s8(const ek_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(&p->b, a, b, out, ek_addsub_one(p, x, y, 0));
}

void ek_sub_s8(const ek_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(&p->b, a, b, out, ek_addsub_one(p, x, y, 1));
}

EK_INLINE int32_t ek_mul_one(const ek_mul_t *p, int32_t x, int32_t y) {
    const int32_t raw = ek_mbqm((x + p->in1_offset) * (y + p->in2_offset), p->out_mult, p->out_shift) + p->out_offset;
    return ek_clamp(raw, p->act_min, p->act_max);
}

void ek_mul_s8(const ek_mul_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(&p->b, a, b, out, ek_mul_one(p, x, y));
}

void ek_maximum_s8(const ek_bcast_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(p, a, b, out, x > y ? x : y);
}

void ek_minimum_s8(const ek_bcast_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    EK_BINARY(p, a, b, out, x < y ? x : y);
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
                for (int32_t ch = 0; ch < p->c; ++ch) {
                    int32_t m = -128;
                    for (int32_t fy = fy0; fy < fy1; ++fy)
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            const int32_t v = pin[((size_t)(iy0 + fy) * p->in_w + (ix0 + fx)) * p->c + ch];
                            if (v > m) m = v;
                        }
                    *out++ = (int8_t)ek_clamp(m, p->act_min, p->act_max);
                }
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

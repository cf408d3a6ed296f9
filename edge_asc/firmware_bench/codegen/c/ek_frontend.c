/* edge-asc firmware: streaming log-mel front end (see ek_frontend.h).
 *
 * Real FFT of n_fft points as a complex radix-2 FFT of n_fft / 2 points on the packed signal
 * z[k] = x[2k] + i x[2k+1] (loaded in bit-reversed order), then the split X[k] = E[k] + e^(-2 pi i k / n_fft) O[k]
 * with E = (Z[k] + conj Z[M-k]) / 2 and O = -i (Z[k] - conj Z[M-k]) / 2.
 *
 * The FFT is fixed point: int64 data, Q30 twiddles, products split into 32 x 32 -> 64-bit multiplies. The windowed
 * samples x * w are exact (window in Q(EK_FE_WQ), chosen so that no value can exceed 2^52, as |X[k]| <= sum |x w|),
 * and every stage keeps an absolute resolution of 2^-EK_FE_WQ int16 steps: enough for the mel bands 100 dB below a
 * full-scale tone to match edge_asc.frontend's float64 within 0.01 dB, which float32 and int32 FFTs are not
 * (docs/firmware-frontend.md). The power spectrum, mel sums, log and deltas are float32 (all-positive sums: relative
 * error ~1e-7). Window and twiddles come from Python, computed in double precision and rounded once. */
#include "ek_frontend.h"

#include <math.h>

#define EK_FE_M (EK_FE_N_FFT / 2)

static int16_t ek_fe_ring[EK_FE_RING];
static uint32_t ek_fe_wr;    /* samples ever written */
static uint32_t ek_fe_rd;    /* first sample of the next STFT frame */
static uint32_t ek_fe_overrun;
static int64_t ek_fe_z[2 * EK_FE_M];        /* complex FFT work buffer (fixed point) */
static float ek_fe_pow[EK_FE_M + 1];        /* power spectrum, [-1, 1] full scale as edge_asc.frontend */
static float ek_fe_feat[EK_FE_CHANNELS * EK_FE_N_MELS];
static int8_t ek_fe_cols[EK_FE_WINDOW_FRAMES][EK_FE_N_MELS * EK_FE_CHANNELS]; /* [frame % W][mel][channel] */
static uint32_t ek_fe_emitted;
static int ek_fe_pending;
#if EK_FE_DELTA_WIDTH
static float ek_fe_hist[EK_FE_DELTA_WIDTH][EK_FE_N_MELS]; /* last delta_width log-mel frames, ring */
static uint32_t ek_fe_stft;                                 /* STFT frames computed */
#endif

void ek_fe_reset(void) {
    ek_fe_wr = ek_fe_rd = ek_fe_overrun = ek_fe_emitted = 0;
    ek_fe_pending = 0;
#if EK_FE_DELTA_WIDTH
    ek_fe_stft = 0;
#endif
}

uint32_t ek_fe_write(const int16_t *x, uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) ek_fe_ring[(ek_fe_wr + i) & (EK_FE_RING - 1)] = x[i];
    ek_fe_wr += n;
    uint32_t lost = 0;
    if (ek_fe_wr - ek_fe_rd > EK_FE_RING) {
        lost = ek_fe_wr - ek_fe_rd - EK_FE_RING;
        ek_fe_rd = ek_fe_wr - EK_FE_RING;
        ek_fe_overrun += lost;
    }
    return lost;
}

int ek_fe_ready(void) { return ek_fe_wr - ek_fe_rd >= EK_FE_N_FFT; }

/* t = b * w >> 30 for a complex b (|b0|, |b1| < 2^55) and a Q30 twiddle w = wr + i wi, given as wr, wi and -wi:
 * each b splits into bh 2^24 + bl (0 <= bl < 2^24), so every product is one 32 x 32 -> 64-bit multiply(-accumulate);
 * each component is floored once (within 1 unit) */
static inline void ek_fe_cmul(int64_t b0, int64_t b1, int32_t wr, int32_t wi, int32_t nwi, int64_t *tr,
                              int64_t *ti) {
    const int32_t b0h = (int32_t)(b0 >> 24), b0l = (int32_t)(b0 & 0xFFFFFF);
    const int32_t b1h = (int32_t)(b1 >> 24), b1l = (int32_t)(b1 & 0xFFFFFF);
    const int64_t rl = (int64_t)b0l * wr + (int64_t)b1l * nwi, il = (int64_t)b0l * wi + (int64_t)b1l * wr;
    *tr = ((int64_t)b0h * wr + (int64_t)b1h * nwi + (rl >> 24)) >> 6;
    *ti = ((int64_t)b0h * wi + (int64_t)b1h * wr + (il >> 24)) >> 6;
}

/* int64 -> float through two 32-bit -> float conversions: the software int64 conversion is slower */
static inline float ek_fe_tofloat(int64_t v) {
    return (float)(int32_t)(v >> 32) * 4294967296.0f + (float)(uint32_t)v;
}

/* Power spectrum of the frame starting at ring position rd: ek_fe_pow[0..M] (M + 1 bins). */
static void ek_fe_power(uint32_t rd) {
    int64_t *z = ek_fe_z;
    /* windowed samples x * w exactly (window in Q(EK_FE_WQ)), packed as complex, in bit-reversed order */
    for (uint32_t k = 0; k < EK_FE_M; ++k) {
        const uint32_t j = 2u * ek_fe_bitrev[k];
        z[2 * k] = (int64_t)ek_fe_ring[(rd + j) & (EK_FE_RING - 1)] * ek_fe_analysis[j];
        z[2 * k + 1] = (int64_t)ek_fe_ring[(rd + j + 1) & (EK_FE_RING - 1)] * ek_fe_analysis[j + 1];
    }
    /* radix-2 decimation in time; the twiddle of stage length L, index j is e^(-2 pi i j / L) = table[j * N / L] */
    for (uint32_t len = 2, tstep = EK_FE_N_FFT / 2; len <= EK_FE_M; len <<= 1, tstep >>= 1) {
        const uint32_t half = len >> 1;
        for (uint32_t i = 0; i < EK_FE_M; i += len) { /* j = 0: twiddle 1 */
            int64_t *a = z + 2 * i, *b = z + 2 * (i + half);
            const int64_t tr = b[0], ti = b[1];
            b[0] = a[0] - tr;
            b[1] = a[1] - ti;
            a[0] += tr;
            a[1] += ti;
        }
        if (half > 1) {
            for (uint32_t i = half / 2; i < EK_FE_M; i += len) { /* j = half / 2: twiddle -i */
                int64_t *a = z + 2 * i, *b = z + 2 * (i + half);
                const int64_t tr = b[1], ti = -b[0];
                b[0] = a[0] - tr;
                b[1] = a[1] - ti;
                a[0] += tr;
                a[1] += ti;
            }
        }
        for (uint32_t j = 1; j < half; ++j) {
            if (2 * j == half) continue;
            const int32_t wr = ek_fe_twiddle[2 * j * tstep], wi = ek_fe_twiddle[2 * j * tstep + 1];
            for (uint32_t i = j; i < EK_FE_M; i += len) {
                int64_t *a = z + 2 * i, *b = z + 2 * (i + half), tr, ti;
                ek_fe_cmul(b[0], b[1], wr, wi, -wi, &tr, &ti);
                b[0] = a[0] - tr;
                b[1] = a[1] - ti;
                a[0] += tr;
                a[1] += ti;
            }
        }
    }
    /* split into the real signal's spectrum, bins k and c = M - k together */
    float *p = ek_fe_pow;
    for (uint32_t k = 1; k < EK_FE_M / 2; ++k) {
        const uint32_t c = EK_FE_M - k;
        const int64_t ar = z[2 * k], ai = z[2 * k + 1], br = z[2 * c], bi = z[2 * c + 1];
        /* E = (Z[k] + conj Z[c]) / 2, O = -i (Z[k] - conj Z[c]) / 2, X[k] = E + w O with w = e^(-2 pi i k / N);
         * bin c: E_c = conj E, O_c = conj O and e^(-2 pi i c / N) = -conj w, so X[c] = conj(E - w O).
         * Computed as 2 E and 2 O: the power carries a factor 4, folded into EK_FE_POW_SCALE4. */
        const int64_t er2 = ar + br, ei2 = ai - bi, or2 = ai + bi, oi2 = br - ar;
        const int32_t wr = ek_fe_twiddle[2 * k], wi = ek_fe_twiddle[2 * k + 1];
        int64_t wor, woi;
        ek_fe_cmul(or2, oi2, wr, wi, -wi, &wor, &woi);
        const float xkr = ek_fe_tofloat(er2 + wor), xki = ek_fe_tofloat(ei2 + woi);
        const float xcr = ek_fe_tofloat(er2 - wor), xci = ek_fe_tofloat(woi - ei2);
        p[k] = (xkr * xkr + xki * xki) * EK_FE_POW_SCALE4;
        p[c] = (xcr * xcr + xci * xci) * EK_FE_POW_SCALE4;
    }
    { /* the middle bin k = c = M / 2 (M is even): E = Re Z[k], O = Im Z[k], twiddle -i, |X|^2 = |Z[k]|^2 */
        const float ar = ek_fe_tofloat(z[EK_FE_M]), ai = ek_fe_tofloat(z[EK_FE_M + 1]);
        p[EK_FE_M / 2] = (ar * ar + ai * ai) * (4.0f * EK_FE_POW_SCALE4);
    }
    /* X[0] = Re Z0 + Im Z0 and X[M] = Re Z0 - Im Z0 (both real) */
    const float x0 = ek_fe_tofloat(z[0] + z[1]), xm = ek_fe_tofloat(z[0] - z[1]);
    p[0] = x0 * x0 * (4.0f * EK_FE_POW_SCALE4);
    p[EK_FE_M] = xm * xm * (4.0f * EK_FE_POW_SCALE4);
}

/* The power (or magnitude) of bin k after ek_fe_power. */
static inline float ek_fe_bin(uint32_t k) {
    const float p = ek_fe_pow[k];
#if EK_FE_POWER == 1
    return sqrtf(p);
#else
    return p;
#endif
}

static void ek_fe_logmel(float *out) {
    const float *w = ek_fe_mel_w;
    for (uint32_t m = 0; m < EK_FE_N_MELS; ++m) {
        float acc = 0.0f;
        const uint32_t lo = ek_fe_mel_start[m], n = ek_fe_mel_len[m];
        for (uint32_t k = 0; k < n; ++k) acc += ek_fe_bin(lo + k) * w[k];
        w += n;
        out[m] = 10.0f * log10f(acc > EK_FE_AMIN ? acc : EK_FE_AMIN);
    }
}

static void ek_fe_emit(void) {
    int8_t *col = ek_fe_cols[ek_fe_emitted % EK_FE_WINDOW_FRAMES];
    for (uint32_t c = 0; c < EK_FE_CHANNELS; ++c) {
        const float mean = ek_fe_norm_mean[c], std = ek_fe_norm_std[c];
        for (uint32_t m = 0; m < EK_FE_N_MELS; ++m) {
            /* as Classifier.input_tensor: (f - mean) / std, then rint(x / scale) + zero point, saturated */
            const float x = (ek_fe_feat[c * EK_FE_N_MELS + m] - mean) / std;
            float q = rintf(x / EK_FE_SCALE) + (float)EK_FE_ZERO_POINT;
            q = q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q;
            col[m * EK_FE_CHANNELS + c] = (int8_t)q;
        }
    }
    ++ek_fe_emitted;
    if (ek_fe_emitted >= EK_FE_WINDOW_FRAMES && (ek_fe_emitted - EK_FE_WINDOW_FRAMES) % EK_FE_HOP_FRAMES == 0)
        ek_fe_pending = 1;
}

int ek_fe_step(void) {
    ek_fe_power(ek_fe_rd);
    ek_fe_rd += EK_FE_HOP;
#if EK_FE_DELTA_WIDTH
    float *row = ek_fe_hist[ek_fe_stft % EK_FE_DELTA_WIDTH];
    ek_fe_logmel(row);
    ++ek_fe_stft;
    if (ek_fe_stft < EK_FE_DELTA_WIDTH) return 0;
    /* the centre frame of the last delta_width frames, and its first and second Savitzky-Golay derivatives */
    const uint32_t first = ek_fe_stft - EK_FE_DELTA_WIDTH;
    const float *centre = ek_fe_hist[(first + EK_FE_DELTA_WIDTH / 2) % EK_FE_DELTA_WIDTH];
    for (uint32_t m = 0; m < EK_FE_N_MELS; ++m) {
        float d1 = 0.0f, d2 = 0.0f;
        for (uint32_t k = 0; k < EK_FE_DELTA_WIDTH; ++k) {
            const float v = ek_fe_hist[(first + k) % EK_FE_DELTA_WIDTH][m];
            d1 += ek_fe_delta_taps[0][k] * v;
            d2 += ek_fe_delta_taps[1][k] * v;
        }
        ek_fe_feat[m] = centre[m];
        ek_fe_feat[EK_FE_N_MELS + m] = d1;
        ek_fe_feat[2 * EK_FE_N_MELS + m] = d2;
    }
#else
    ek_fe_logmel(ek_fe_feat);
#endif
    ek_fe_emit();
    return 1;
}

int ek_fe_window_ready(void) { return ek_fe_pending; }

void ek_fe_window(int8_t *input) {
    const uint32_t start = ek_fe_emitted - EK_FE_WINDOW_FRAMES;
    for (uint32_t t = 0; t < EK_FE_WINDOW_FRAMES; ++t) {
        const int8_t *col = ek_fe_cols[(start + t) % EK_FE_WINDOW_FRAMES];
        for (uint32_t m = 0; m < EK_FE_N_MELS; ++m) {
            for (uint32_t c = 0; c < EK_FE_CHANNELS; ++c) {
#if EK_FE_NCHW
                input[(c * EK_FE_N_MELS + m) * EK_FE_WINDOW_FRAMES + t] = col[m * EK_FE_CHANNELS + c];
#else
                input[(m * EK_FE_WINDOW_FRAMES + t) * EK_FE_CHANNELS + c] = col[m * EK_FE_CHANNELS + c];
#endif
            }
        }
    }
    ek_fe_pending = 0;
}

const float *ek_fe_features(void) { return ek_fe_feat; }
uint32_t ek_fe_frames_emitted(void) { return ek_fe_emitted; }
uint32_t ek_fe_overrun_samples(void) { return ek_fe_overrun; }

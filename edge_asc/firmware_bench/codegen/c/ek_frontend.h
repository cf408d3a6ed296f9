/* edge-asc firmware: the streaming log-mel front end of the model's FrontendSpec, on the device.
 *
 * Audio in: int16 samples written into a ring (ek_fe_write, e.g. from the microphone's DMA callback). Each call of
 * ek_fe_step() takes one STFT frame (n_fft samples, then advances by hop_length, center=False framing as
 * edge_asc.frontend), windows it, runs a real FFT (int64 fixed point, see ek_frontend.c), sums the mel filterbank (sparse: one run of FFT bins
 * per band), takes 10*log10(max(mel, amin)) dB, optionally the Savitzky-Golay deltas, normalises with the spec's
 * mean/std and quantises with the model input tensor's scale and zero point into one int8 feature column of a ring
 * of window_frames columns. Every hop_frames feature frames (after the first window_frames) a window is ready and
 * ek_fe_window() lays the last window_frames columns out as the model's input tensor (NHWC or NCHW).
 *
 * The tables (window, twiddles, mel weights, delta taps) and the sizes are generated from the spec in Python with
 * edge_asc.frontend's own functions (ek_frontend_tables.c, ek_frontend_config.h). */
#ifndef EK_FRONTEND_H
#define EK_FRONTEND_H

#include <stdint.h>

#include "ek_frontend_config.h"

/* Forget all samples, frames and delta history. */
void ek_fe_reset(void);
/* Producer: copy n samples into the ring; when the ring is full the oldest unread samples are overwritten (the
 * newest audio is kept). Returns the samples overwritten by this call. ek_app.c calls it and ek_fe_step from one
 * loop; a DMA interrupt calling it must not preempt ek_fe_step (mask it around the step, or hand over whole
 * blocks). */
uint32_t ek_fe_write(const int16_t *x, uint32_t n);
/* 1 when the ring holds a full STFT frame (ek_fe_step will compute one). */
int ek_fe_ready(void);
/* Compute one STFT frame (call only when ek_fe_ready()). Returns 1 when a feature frame was emitted (with deltas,
 * the first 2 * delta_pad STFT frames emit nothing), 0 otherwise. */
int ek_fe_step(void);
/* 1 when the last emitted feature frame completed a model window (window starts 0, hop_frames, 2 * hop_frames...). */
int ek_fe_window_ready(void);
/* Write the last window_frames feature frames as the model's int8 input tensor; clears the ready flag. */
void ek_fe_window(int8_t *input);
/* The last emitted feature frame, un-normalised dB: float[EK_FE_CHANNELS][EK_FE_N_MELS]. */
const float *ek_fe_features(void);
/* Feature frames emitted and samples overwritten since the reset. */
uint32_t ek_fe_frames_emitted(void);
uint32_t ek_fe_overrun_samples(void);

#endif /* EK_FRONTEND_H */

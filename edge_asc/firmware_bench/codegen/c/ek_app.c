/* edge-asc firmware, audio in -> label out: int16 audio is written into the front end's ring one hop at a time (as
 * a microphone's DMA callback would), every STFT frame is computed when it is complete, and every model window runs
 * the model. Each stage runs between two tick readings (the markers).
 *
 * Audio: the file ek_audio.bin (int16 little-endian samples) in the working directory; without it, EK_APP_SAMPLES
 * samples of seeded noise. Outputs (appended per model window to ek_app_out.bin): the model's int8 input tensor,
 * then its output tensors. With EK_APP_DUMP, every emitted feature frame's un-normalised dB features
 * (float[channels][n_mels]) are appended to ek_features.bin. Console lines, all starting with "EK ":
 *   EK calibrate <instructions> <ticks>      a loop of known instruction count (instructions per tick)
 *   EK hop <k> <ticks> <emitted>              ticks of STFT frame k (ek_fe_step), 1 when it emitted a feature frame
 *   EK window <k> <ticks>                     ticks of laying out model window k (ek_fe_window)
 *   EK inference <k> <ticks>                  ticks of the model on window k
 *   EK stack <bytes>                          stack high-water mark
 *   EK done <windows> <frames> <overrun>      model windows, feature frames, overwritten samples */
#include <stdint.h>

#include "ek_frontend.h"
#include "ek_model.h"
#include "ek_platform.h"

#ifndef EK_CAL_LOOPS
#define EK_CAL_LOOPS 1000000u
#endif
#ifndef EK_APP_SAMPLES
#define EK_APP_SAMPLES 16000u
#endif
#ifndef EK_APP_DUMP
#define EK_APP_DUMP 0
#endif

static void ek_line(const char *what, uint64_t k, uint64_t v) {
    ek_puts(what);
    ek_putu(k);
    ek_puts(" ");
    ek_putu(v);
}

int main(void) {
    ek_platform_init();
    const uint64_t cal = ek_calibrate(EK_CAL_LOOPS);
    ek_line("EK calibrate ", 2ull * EK_CAL_LOOPS, cal);
    ek_puts("\n");

    const int fin = ek_file_open("ek_audio.bin", 0);
    const long n_samples = fin >= 0 ? ek_file_size(fin) / 2 : (long)EK_APP_SAMPLES;
    const int fout = ek_file_open("ek_app_out.bin", 1);
#if EK_APP_DUMP
    const int fdump = ek_file_open("ek_features.bin", 1);
#endif
    ek_fe_reset();
    static int16_t block[EK_FE_HOP];
    uint32_t seed = 2463534242u;
    uint64_t hop = 0, win = 0;
    for (long pos = 0; pos < n_samples; pos += EK_FE_HOP) {
        const uint32_t n = (uint32_t)(n_samples - pos < EK_FE_HOP ? n_samples - pos : EK_FE_HOP);
        if (fin >= 0) {
            if (ek_file_read(fin, block, 2 * n) != 0) {
                ek_puts("EK error: short read of ek_audio.bin\n");
                ek_exit(2);
            }
        } else {
            for (uint32_t i = 0; i < n; ++i) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                block[i] = (int16_t)(seed >> 20); /* 0..4095: uniform noise on a DC offset of 2048 */
            }
        }
        ek_fe_write(block, n);
        while (ek_fe_ready()) {
            uint64_t t0 = ek_ticks();
            const int emitted = ek_fe_step();
            uint64_t t1 = ek_ticks();
            ek_line("EK hop ", hop++, t1 - t0);
            ek_puts(emitted ? " 1\n" : " 0\n");
#if EK_APP_DUMP
            if (emitted && fdump >= 0) ek_file_write(fdump, ek_fe_features(), 4u * EK_FE_CHANNELS * EK_FE_N_MELS);
#endif
            if (!ek_fe_window_ready()) continue;
            t0 = ek_ticks();
            ek_fe_window((int8_t *)ek_inputs[0]);
            t1 = ek_ticks();
            ek_line("EK window ", win, t1 - t0);
            ek_puts("\n");
            if (fout >= 0) ek_file_write(fout, ek_inputs[0], ek_input_bytes[0]);
            t0 = ek_ticks();
            ek_model_invoke();
            t1 = ek_ticks();
            ek_line("EK inference ", win++, t1 - t0);
            ek_puts("\n");
            for (int i = 0; i < EK_N_OUTPUTS; ++i)
                if (fout >= 0) ek_file_write(fout, ek_outputs[i], ek_output_bytes[i]);
        }
    }
    ek_file_close(fin);
    ek_file_close(fout);
#if EK_APP_DUMP
    ek_file_close(fdump);
#endif
    ek_puts("EK stack ");
    ek_putu(ek_stack_used());
    ek_line("\nEK done ", win, ek_fe_frames_emitted());
    ek_puts(" ");
    ek_putu(ek_fe_overrun_samples());
    ek_puts("\n");
    return 0;
}

/* edge-asc firmware main: runs the generated model on inputs and reports what it measured.
 *
 * Inputs: the file ek_in.bin in the working directory (one or more inputs, each the concatenated bytes of the
 * model's input tensors) -> outputs appended to ek_out.bin; without ek_in.bin, one input filled from a seeded
 * xorshift32 generator (EK_SEED) -> outputs printed. Every inference runs between two tick readings (the markers).
 * Report lines on the console, all starting with "EK ":
 *   EK calibrate <instructions> <ticks>      a loop of known instruction count (instructions per tick)
 *   EK inference <k> <ticks>                  ticks of inference k
 *   EK output <k> <v0> <v1> ...               (no input file) the output bytes as signed integers
 *   EK op <index> <ticks> <NAME>              (EK_PROFILE) ticks per op, summed over all inferences
 *   EK stack <bytes>                          stack high-water mark
 *   EK done <n>                               n inferences ran
 * With EK_DEBUG_DUMP, every op's output tensors are appended to ek_dump.bin as records
 * (int32 op, int32 tensor, int32 bytes, bytes...). */
#include <stdint.h>

#include "ek_model.h"
#include "ek_platform.h"

#ifndef EK_SEED
#define EK_SEED 1u
#endif
#ifndef EK_CAL_LOOPS
#define EK_CAL_LOOPS 1000000u
#endif

static void ek_puti(int32_t v) {
    if (v < 0) {
        ek_puts("-");
        ek_putu((uint64_t)(-(int64_t)v));
    } else {
        ek_putu((uint64_t)v);
    }
}

static void ek_fill_seeded(uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1u;
    for (int i = 0; i < EK_N_INPUTS; ++i) {
        uint8_t *p = (uint8_t *)ek_inputs[i];
        for (uint32_t j = 0; j < ek_input_bytes[i]; ++j) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            p[j] = (uint8_t)(s >> 24);
        }
    }
}

#if EK_DEBUG_DUMP
static int ek_dump_fd = -2;
void ek_dump(int op, int tensor, const void *data, uint32_t bytes) {
    if (ek_dump_fd == -2) ek_dump_fd = ek_file_open("ek_dump.bin", 1);
    if (ek_dump_fd < 0) return;
    int32_t head[3] = {op, tensor, (int32_t)bytes};
    ek_file_write(ek_dump_fd, head, sizeof head);
    ek_file_write(ek_dump_fd, data, bytes);
}
#endif

int main(void) {
    ek_platform_init();
    const uint64_t cal = ek_calibrate(EK_CAL_LOOPS);
    ek_puts("EK calibrate ");
    ek_putu(2ull * EK_CAL_LOOPS);
    ek_puts(" ");
    ek_putu(cal);
    ek_puts("\n");

    uint32_t in_bytes = 0;
    for (int i = 0; i < EK_N_INPUTS; ++i) in_bytes += ek_input_bytes[i];
    long n = 1;
    const int fin = ek_file_open("ek_in.bin", 0);
    int fout = -1;
    if (fin >= 0) {
        n = ek_file_size(fin) / (long)in_bytes;
        fout = ek_file_open("ek_out.bin", 1);
        if (n <= 0 || fout < 0) {
            ek_puts("EK error: ek_in.bin is shorter than one input, or ek_out.bin cannot be written\n");
            ek_exit(2);
        }
    }
    for (long k = 0; k < n; ++k) {
        if (fin >= 0) {
            for (int i = 0; i < EK_N_INPUTS; ++i) {
                if (ek_file_read(fin, ek_inputs[i], ek_input_bytes[i]) != 0) {
                    ek_puts("EK error: short read of ek_in.bin\n");
                    ek_exit(2);
                }
            }
        } else {
            ek_fill_seeded(EK_SEED);
        }
        const uint64_t t0 = ek_ticks();
        ek_model_invoke();
        const uint64_t t1 = ek_ticks();
        ek_puts("EK inference ");
        ek_putu((uint64_t)k);
        ek_puts(" ");
        ek_putu(t1 - t0);
        ek_puts("\n");
        for (int i = 0; i < EK_N_OUTPUTS; ++i) {
            if (fout >= 0) {
                ek_file_write(fout, ek_outputs[i], ek_output_bytes[i]);
            } else {
                ek_puts("EK output ");
                ek_putu((uint64_t)i);
                const int8_t *o = (const int8_t *)ek_outputs[i];
                for (uint32_t j = 0; j < ek_output_bytes[i]; ++j) {
                    ek_puts(" ");
                    ek_puti(o[j]);
                }
                ek_puts("\n");
            }
        }
    }
    ek_file_close(fin);
    ek_file_close(fout);
#if EK_PROFILE
    for (int k = 0; k < EK_N_OPS; ++k) {
        ek_puts("EK op ");
        ek_putu((uint64_t)k);
        ek_puts(" ");
        ek_putu(ek_op_ticks[k]);
        ek_puts(" ");
        ek_puts(ek_op_names[k]);
        ek_puts("\n");
    }
#endif
    ek_puts("EK stack ");
    ek_putu(ek_stack_used());
    ek_puts("\nEK done ");
    ek_putu((uint64_t)n);
    ek_puts("\n");
    return 0;
}

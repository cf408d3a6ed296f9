/* edge-asc firmware, bare-metal Cortex-M: vector table, reset (data copy, bss clear, stack painting), SysTick tick
 * counter and Arm semihosting (console and files in the emulator's working directory).
 *
 * Under QEMU with -icount shift=0 every instruction advances virtual time by 1 ns and SysTick counts the core clock
 * of the board (e.g. 25 MHz on mps2), so ticks are a deterministic count of instructions / (instructions per tick);
 * ek_calibrate() measures that ratio with a loop of known length. */
#include <stdint.h>
#include <string.h>

#include "ek_platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
int main(void);
void ek_reset(void);
static void ek_systick_isr(void);
static void ek_fault_isr(void);

#define EK_STACK_PAINT 0xA5A5A5A5u

__attribute__((section(".ek_vectors"), used)) void (*const ek_vectors[16])(void) = {
    (void (*)(void))(&_estack), ek_reset, ek_fault_isr, ek_fault_isr, ek_fault_isr, ek_fault_isr, ek_fault_isr,
    0, 0, 0, 0, ek_fault_isr, ek_fault_isr, 0, ek_fault_isr, ek_systick_isr,
};

__attribute__((noreturn, naked)) void ek_reset(void) {
    __asm__ volatile(
        "ldr r0, =_sidata\n ldr r1, =_sdata\n ldr r2, =_edata\n"
        "1: cmp r1, r2\n bhs 2f\n ldr r3, [r0], #4\n str r3, [r1], #4\n b 1b\n"
        "2: ldr r1, =_sbss\n ldr r2, =_ebss\n movs r3, #0\n"
        "3: cmp r1, r2\n bhs 4f\n str r3, [r1], #4\n b 3b\n"
        /* paint the stack from its bottom to 64 bytes below the current stack pointer */
        "4: ldr r1, =_sstack\n mov r2, sp\n subs r2, r2, #64\n ldr r3, =0xA5A5A5A5\n"
        "5: cmp r1, r2\n bhs 6f\n str r3, [r1], #4\n b 5b\n"
#if defined(__ARM_FP)
        /* enable the FPU (CPACR: CP10, CP11 full access) */
        "6: ldr r0, =0xE000ED88\n ldr r1, [r0]\n orr r1, r1, #(0xF << 20)\n str r1, [r0]\n dsb\n isb\n"
#else
        "6:\n"
#endif
        "bl main\n bl ek_exit\n");
}

/* ---- semihosting ---------------------------------------------------------------------------------------------- */

static int ek_semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void ek_puts(const char *s) { ek_semihost(0x04, (void *)s); }

void ek_putu(uint64_t v) {
    char b[24];
    int i = 23;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    ek_puts(b + i);
}

int ek_file_open(const char *name, int write) {
    uint32_t args[3] = {(uint32_t)name, write ? 5u : 1u, (uint32_t)strlen(name)}; /* "wb" / "rb" */
    return ek_semihost(0x01, args);
}

long ek_file_size(int fd) {
    uint32_t args[1] = {(uint32_t)fd};
    return ek_semihost(0x0C, args);
}

int ek_file_read(int fd, void *buf, size_t n) {
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)n};
    return ek_semihost(0x06, args) == 0 ? 0 : -1;
}

int ek_file_write(int fd, const void *buf, size_t n) {
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)n};
    return ek_semihost(0x05, args) == 0 ? 0 : -1;
}

void ek_file_close(int fd) {
    uint32_t args[1] = {(uint32_t)fd};
    if (fd >= 0) ek_semihost(0x02, args);
}

void ek_exit(int code) {
    /* ADP_Stopped_ApplicationExit (QEMU exits 0) or ADP_Stopped_RunTimeErrorUnknown (QEMU exits 1) */
    ek_semihost(0x18, (void *)(code == 0 ? 0x20026 : 0x20023));
    for (;;) {
    }
}

static void ek_fault_isr(void) {
    ek_puts("EK fault\n");
    ek_exit(3);
}

/* ---- SysTick ---------------------------------------------------------------------------------------------------- */

#define EK_SYST ((volatile uint32_t *)0xE000E010u)
static volatile uint32_t ek_systick_wraps;

static void ek_systick_isr(void) { ek_systick_wraps++; }

void ek_platform_init(void) {
    EK_SYST[1] = 0x00FFFFFFu; /* reload */
    EK_SYST[2] = 0;           /* current value */
    EK_SYST[0] = 7;           /* enable, interrupt, processor clock */
    while (EK_SYST[2] == 0) {
    }
}

uint64_t ek_ticks(void) {
    uint32_t w, v;
    do {
        w = ek_systick_wraps;
        v = EK_SYST[2];
    } while (w != ek_systick_wraps);
    return ((uint64_t)w << 24) + (0x00FFFFFFu - v);
}

uint64_t ek_calibrate(uint32_t n) {
    const uint64_t t0 = ek_ticks();
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b\n" : "+r"(n) : : "cc");
    return ek_ticks() - t0;
}

uint32_t ek_stack_used(void) {
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == EK_STACK_PAINT) ++p;
    return (uint32_t)((const char *)&_estack - (const char *)p);
}

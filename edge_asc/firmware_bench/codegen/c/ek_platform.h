/* edge-asc firmware: what main() needs from the platform (host stdio, or bare-metal Cortex-M with semihosting). */
#ifndef EK_PLATFORM_H
#define EK_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

void ek_platform_init(void);
/* Free-running tick counter (Cortex-M: SysTick, extended to 64 bits; host: 0). */
uint64_t ek_ticks(void);
/* Ticks of a loop of exactly 2 * n instructions (0 on the host): the instructions per tick under QEMU -icount. */
uint64_t ek_calibrate(uint32_t n);
/* Bytes of stack used so far (high-water mark of the painted stack; 0 on the host). */
uint32_t ek_stack_used(void);

void ek_puts(const char *s);
void ek_putu(uint64_t v);

/* Files in the working directory (QEMU semihosting or stdio). Return -1 on failure. */
int ek_file_open(const char *name, int write);
long ek_file_size(int fd);
int ek_file_read(int fd, void *buf, size_t n);   /* 0 when all n bytes were read */
int ek_file_write(int fd, const void *buf, size_t n);
void ek_file_close(int fd);

void ek_exit(int code);

#endif /* EK_PLATFORM_H */

/* edge-asc firmware, host build: stdio files, no tick counter. */
#include <stdio.h>
#include <stdlib.h>

#include "ek_platform.h"

#define EK_MAX_FILES 8
static FILE *ek_files[EK_MAX_FILES];

void ek_platform_init(void) {}
uint64_t ek_ticks(void) { return 0; }
uint64_t ek_calibrate(uint32_t n) { (void)n; return 0; }
uint32_t ek_stack_used(void) { return 0; }

void ek_puts(const char *s) { fputs(s, stdout); }
void ek_putu(uint64_t v) { printf("%llu", (unsigned long long)v); }

int ek_file_open(const char *name, int write) {
    for (int i = 0; i < EK_MAX_FILES; ++i) {
        if (!ek_files[i]) {
            ek_files[i] = fopen(name, write ? "wb" : "rb");
            return ek_files[i] ? i : -1;
        }
    }
    return -1;
}

long ek_file_size(int fd) {
    FILE *f = ek_files[fd];
    long pos = ftell(f), size;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, pos, SEEK_SET);
    return size;
}

int ek_file_read(int fd, void *buf, size_t n) { return fread(buf, 1, n, ek_files[fd]) == n ? 0 : -1; }
int ek_file_write(int fd, const void *buf, size_t n) { return fwrite(buf, 1, n, ek_files[fd]) == n ? 0 : -1; }

void ek_file_close(int fd) {
    if (fd >= 0 && ek_files[fd]) {
        fclose(ek_files[fd]);
        ek_files[fd] = NULL;
    }
}

void ek_exit(int code) {
    fflush(stdout);
    exit(code);
}

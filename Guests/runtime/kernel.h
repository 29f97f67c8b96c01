/* For kernel-mode-only guests (no runtime: everything at CPL 0): the entry stub that calls
 * kmain() and halts after it, and polled COM1 output. */
#ifndef SWIFTVMM_KERNEL_H
#define SWIFTVMM_KERNEL_H

#include "abi.h"

#include <stdint.h>

void _start(void);
void kmain(void);
__asm__(".section .text.start, \"ax\"\n"
        ".globl _start\n"
        "_start:\n"
        "    call kmain\n"
        "1:  hlt\n"
        "    jmp 1b\n"
        ".text\n");

static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }

static inline void puts_com1(const char *text) {
    while (*text) outb(SVMM_PORT_COM1, (uint8_t)*text++);
}

#endif

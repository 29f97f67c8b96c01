/* A tiny 32-bit runtime for the multiboot test kernels: port I/O, COM1 output, fw_cfg, the
 * debug-exit port at any width, command-line lookup. Everything runs at CPL 0, paging off. */
#ifndef MBRT_H
#define MBRT_H

#include <stdint.h>
#include <stddef.h>

#define MB_BOOTLOADER_MAGIC 0x2BADB002u

struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr, drives_length, drives_addr, config_table, boot_loader_name;
};

struct mb_module {
    uint32_t start, end, string, reserved;
};

struct mb_mmap_entry {
    uint32_t size;
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

void mb_putc(char c);
void mb_printf(const char *format, ...);
size_t mb_strlen(const char *s);
int mb_memcmp(const void *a, const void *b, size_t n);
/* Reads `length` bytes of fw_cfg item `key` into `buffer`. */
void fw_cfg_read(uint16_t key, void *buffer, size_t length);
/* The value of `name=` in the command line (copied to `out`, NUL-terminated), or 0 if absent. */
int mb_cmdline_value(const char *cmdline, const char *name, char *out, size_t size);
uint32_t mb_parse_u32(const char *text);
/* Writes V to the debug-exit port with a `width`-byte OUT: status (V << 1) | 1. */
void mb_exit(uint32_t value, int width) __attribute__((noreturn));

extern char _end[];

#endif

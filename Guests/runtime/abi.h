/* The swiftvmm guest ABI as guests see it. Keep in step with Sources/VMM/Layout.swift,
 * Sources/VMM/BootInfo.swift, Sources/VMM/Machine.swift (Ports) and docs/guest-abi.md. */
#ifndef SWIFTVMM_ABI_H
#define SWIFTVMM_ABI_H

#include <stdint.h>

#define SVMM_BOOTINFO_ADDR 0x50000u
#define SVMM_BOOTINFO_MAGIC 0x4D4D5653u /* "SVMM" */
#define SVMM_BOOTINFO_VERSION 1
#define SVMM_BOOTINFO_FLAG_LONG_MODE 1u
#define SVMM_LOAD_ADDR_LONG 0x100000u
#define SVMM_LOAD_ADDR_REAL 0x1000u
#define SVMM_MMIO_HOLE_START 0xC0000000ull
#define SVMM_MMIO_HOLE_END 0x100000000ull

#define SVMM_PORT_COM1 0x3f8
#define SVMM_PORT_DEBUG_EXIT 0xf4

#define SVMM_MEM_RAM 1
#define SVMM_MEM_RESERVED 2

struct svmm_memory_region {
    uint64_t base;
    uint64_t length;
    uint32_t type;
    uint32_t zero;
};

struct svmm_boot_info {
    uint32_t magic;
    uint16_t version;
    uint16_t size;
    uint64_t ram_size;
    uint32_t cpu_count;
    uint32_t flags;
    uint64_t cmdline_addr;
    uint32_t cmdline_len;
    uint32_t memory_map_count;
    uint64_t memory_map_addr;
    uint64_t image_start;
    uint64_t image_end;
};

_Static_assert(sizeof(struct svmm_boot_info) == 64, "boot info is 64 bytes");
_Static_assert(sizeof(struct svmm_memory_region) == 24, "memory map entries are 24 bytes");

#endif

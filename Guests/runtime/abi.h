/* The swiftvmm guest ABI as guests see it. Keep in step with Sources/VMM/Layout.swift,
 * Sources/VMM/BootInfo.swift, Sources/VMM/Machine.swift (Ports) and docs/guest-abi.md. */
#ifndef SWIFTVMM_ABI_H
#define SWIFTVMM_ABI_H

#include <stdint.h>

#define SVMM_BOOTINFO_ADDR 0x50000u
#define SVMM_BOOTINFO_MAGIC 0x4D4D5653u /* "SVMM" */
#define SVMM_BOOTINFO_VERSION 4
#define SVMM_BOOTINFO_FLAG_LONG_MODE 1u
#define SVMM_BOOTINFO_FLAG_IRQCHIP 2u /* PIC, IOAPIC, LAPICs present; APs wait for INIT/SIPI */
#define SVMM_LOAD_ADDR_LONG 0x100000u
#define SVMM_LOAD_ADDR_REAL 0x1000u
#define SVMM_MMIO_HOLE_START 0xC0000000ull
#define SVMM_MMIO_HOLE_END 0x100000000ull
#define SVMM_LOW_SCRATCH_START 0x51000u /* below 1 MiB, never written by the VMM */
#define SVMM_LOW_SCRATCH_END 0x60000u
#define SVMM_MP_TABLE_ADDR 0x9FC00u
#define SVMM_LAPIC_BASE 0xFEE00000ull
#define SVMM_IOAPIC_BASE 0xFEC00000ull
#define SVMM_MAX_CPUS 64

#define SVMM_PORT_COM1 0x3f8
#define SVMM_PORT_DEBUG_EXIT 0xf4
#define SVMM_PORT_PIT 0x40 /* channels 0-2 at 0x40-0x42, control word at 0x43 */
#define SVMM_PORT_SYSCTL_B 0x61 /* PIT channel 2 gate (bit 0) and output (bit 5) */
#define SVMM_PORT_CMOS 0x70 /* index at 0x70, data at 0x71 */
#define SVMM_PIT_HZ 1193182u

/* File hypercalls (--share, docs/guest-abi.md): doorbell port SVMM_SHARE_PORT + call (outl of the
 * block's address, CPL 0) or a 32/64-bit store of it at SVMM_SHARE_MMIO + 0x100 + 8 * call (CPL 3).
 * Port SVMM_SHARE_PORT and window offset 0 read SVMM_SHARE_MAGIC when the device is there. */
#define SVMM_SHARE_PORT 0x640
#define SVMM_SHARE_MMIO 0xC0010000ull
#define SVMM_SHARE_MAGIC 0x43485653u /* "SVHC" */
#define SVMM_SHARE_DOORBELLS 0x100
enum svmm_hypercall {
    SVMM_HC_OPEN = 1, SVMM_HC_CLOSE, SVMM_HC_READ, SVMM_HC_WRITE, SVMM_HC_PREAD, SVMM_HC_PWRITE, SVMM_HC_LSEEK,
    SVMM_HC_FSTAT, SVMM_HC_STAT, SVMM_HC_UNLINK, SVMM_HC_MKDIR, SVMM_HC_RMDIR, SVMM_HC_RENAME, SVMM_HC_GETCWD,
    SVMM_HC_CHDIR, SVMM_HC_GETDENTS, SVMM_HC_FSYNC, SVMM_HC_CLOCK_GETTIME,
};
/* Every call's parameter block: the VMM writes ret (a value or -errno). */
struct svmm_hc_block {
    int64_t ret;
    uint64_t arg[4];
};
struct svmm_stat {
    uint64_t ino, size, blocks;
    uint32_t mode, nlink, uid, gid;
    int64_t atime_ns, mtime_ns, ctime_ns;
};
_Static_assert(sizeof(struct svmm_hc_block) == 40, "parameter blocks are 40 bytes");
_Static_assert(sizeof(struct svmm_stat) == 64, "svmm_stat is 64 bytes");

#define SVMM_IRQ_PIT 0
#define SVMM_IRQ_COM1 4
#define SVMM_IRQ_RTC 8

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
    uint64_t mp_table;
    uint32_t lapic_base;
    uint32_t ioapic_base;
    uint8_t apic_ids[32];         /* vCPUs 0-31 */
    uint64_t virtio_mmio_base;   /* first virtio-mmio device, 0 when none */
    uint16_t virtio_mmio_count;
    uint8_t virtio_first_irq;    /* device 0's IRQ (virtio_irqs[0]) */
    uint8_t zero;
    uint32_t virtio_mmio_stride;
    uint8_t apic_ids_high[32];    /* vCPUs 32-63 (version 3) */
    uint8_t virtio_irqs[8];       /* IRQ of virtio-mmio device n (version 4) */
};

#define SVMM_BOOTINFO_SIZE 168
#define SVMM_VIRTIO_MAX 8
_Static_assert(sizeof(struct svmm_boot_info) == SVMM_BOOTINFO_SIZE, "boot info is 168 bytes");
_Static_assert(sizeof(struct svmm_memory_region) == 24, "memory map entries are 24 bytes");

#endif

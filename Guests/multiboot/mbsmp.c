/* mbsmp: starts every AP with INIT/SIPI through the local APIC, with the trampoline copied to
 * physical address 0 as multiboot kernels do (SIPI vector 0). Each AP increments a counter at
 * 0xF00 in real mode and halts. The vCPU count comes from fw_cfg. V = 0 when all came up. */
#include "mbrt.h"

extern char ap_trampoline[], ap_trampoline_end[];

#define LAPIC 0xFEE00000u

static void lapic_write(uint32_t offset, uint32_t value) { *(volatile uint32_t *)(LAPIC + offset) = value; }
static uint32_t lapic_read(uint32_t offset) { return *(volatile uint32_t *)(LAPIC + offset); }

static void wait_icr_idle(void) {
    for (int spin = 0; spin < 100000 && (lapic_read(0x300) & (1u << 12)); spin++) __asm__ volatile("pause");
}

void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0);
void mb_main(uint32_t magic, struct mb_info *info, uint32_t eflags, uint32_t cr0) {
    (void)info; (void)eflags; (void)cr0;
    uint16_t cpus = 0;
    fw_cfg_read(0x05, &cpus, 2);
    volatile uint8_t *low = (volatile uint8_t *)0;
    for (uint32_t i = 0; i < (uint32_t)(ap_trampoline_end - ap_trampoline); i++) low[i] = (uint8_t)ap_trampoline[i];
    volatile uint16_t *counter = (volatile uint16_t *)0xF00;
    *counter = 0;
    lapic_write(0xF0, lapic_read(0xF0) | 0x100); /* software-enable the LAPIC */
    lapic_write(0x310, 0);
    lapic_write(0x300, 0x000C4500); /* INIT, all excluding self */
    wait_icr_idle();
    for (int round = 0; round < 2; round++) {
        lapic_write(0x300, 0x000C4600); /* SIPI vector 0: start at 0x0000:0000 */
        wait_icr_idle();
    }
    uint32_t spin = 0;
    while (*counter < cpus - 1u && spin++ < 2000000) __asm__ volatile("pause");
    mb_printf("mbsmp: %u of %u vCPUs up (magic 0x%x)\n", *counter + 1u, cpus, magic);
    mb_exit(*counter + 1u == cpus && magic == MB_BOOTLOADER_MAGIC ? 0 : 1, 1);
}

/* File hypercalls: one parameter block on the caller's stack, its address rung at the call's
 * doorbell. Guest RAM is identity-mapped, so the block's address is its guest-physical one. */
#include "rt.h"
#include "share.h"

int rt_share_use_port;

static volatile uint32_t *share_register(unsigned offset) { return (volatile uint32_t *)(uintptr_t)(SVMM_SHARE_MMIO + offset); }

int rt_share_present(void) { return *share_register(0) == SVMM_SHARE_MAGIC; }

int rt_share_read_only(void) { return rt_share_present() && (*share_register(8) & 1); }

int64_t rt_hypercall(unsigned call, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) {
    volatile struct svmm_hc_block block = { RT_HC_UNANSWERED, { a0, a1, a2, a3 } };
    uint64_t address = (uint64_t)(uintptr_t)&block;
    __asm__ volatile("" ::: "memory");
    /* CPL 0 rings the port (9-14 us on PVM); CPL 3 the MMIO doorbell, since port I/O there is
     * completed by the #GP handler at CPL 0 on PVM hosts, several times slower. */
    if (rt_share_use_port || current_cpl() == 0) outl((uint16_t)(SVMM_SHARE_PORT + call), (uint32_t)address);
    else *(volatile uint64_t *)(uintptr_t)(SVMM_SHARE_MMIO + SVMM_SHARE_DOORBELLS + 8ull * call) = address;
    __asm__ volatile("" ::: "memory");
    return block.ret == RT_HC_UNANSWERED ? -38 /* ENOSYS: no device */ : block.ret;
}

/* badballoon: a hostile balloon driver. It sends out-of-range PFNs, a descriptor loop, a chain
 * longer than the queue, a buffer outside RAM, an available index that jumps, a wrong-length
 * statistics buffer, a statistics chain whose buffers each cover most of RAM, an inflate buffer
 * of millions of PFNs, and takes the stats queue down to size 0 while the device holds its buffer
 * (the statistics timer must not divide by it); after each queue error it expects
 * DEVICE_NEEDS_RESET and starts over, and at the end a valid inflate must still work. Exit V = 0
 * when the device behaved so, else 0x70 + n. */
#include "runtime/virtio.h"

static uint8_t rings[3][4096] __attribute__((aligned(4096)));
static uint32_t pfns[64];
static uint8_t odd_stats[15];
static uint8_t good_stats[10];
static struct rt_vq q[3];
static uint64_t base;

static void setup(void) {
    for (unsigned i = 0; i < 3; i++) rt_vq_init(&q[i], (uint16_t)i, rings[i]);
    if (!rt_virtio_setup(base, 5, BALLOON_F_MUST_TELL_HOST | BALLOON_F_STATS_VQ, q, 3)) {
        rt_puts("badballoon: setup failed\n");
        rt_exit(0x7F);
    }
    rt_mmio_write32(base + VIRTIO_REG_STATUS, rt_virtio_status(base) | VIRTIO_STATUS_DRIVER_OK);
}

static int needs_reset(void) { return (rt_virtio_status(base) & VIRTIO_STATUS_NEEDS_RESET) != 0; }

/* Expects the device to need a reset after `what`, then resets and sets it up again. */
static void expect_reset(const char *what) {
    rt_check(needs_reset(), what, "device status 0x%x", rt_virtio_status(base));
    setup();
}

int main(const struct svmm_boot_info *info) {
    rt_pages_init(info);
    base = info->virtio_mmio_base;
    if (!base) { rt_puts("badballoon: no balloon (run with --balloon)\n"); return 0x7E; }
    setup();

    uint64_t a = rt_page_alloc(), b = rt_page_alloc();
    pfns[0] = (uint32_t)(a >> 12);
    pfns[1] = 0xFFFFFFFFu;                        /* far outside RAM */
    pfns[2] = (uint32_t)(SVMM_MMIO_HOLE_START >> 12); /* the MMIO hole: not RAM */
    pfns[3] = (uint32_t)(b >> 12);
    q[0].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)pfns, 16, 0, 0 };
    rt_virtio_submit(&q[0], 0);
    rt_check(rt_virtio_wait_used(&q[0]) == 0 && !needs_reset(), "out-of-range-pfns",
             "buffer used, device still fine (status 0x%x)", rt_virtio_status(base));

    q[0].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)pfns, 4, VIRTQ_DESC_F_NEXT, 1 };
    q[0].desc[1] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)pfns, 4, VIRTQ_DESC_F_NEXT, 0 };
    rt_virtio_submit(&q[0], 0);
    expect_reset("descriptor-loop");

    for (uint16_t i = 0; i < RT_VQ_SIZE; i++) /* every descriptor chained, the last back to the first */
        q[0].desc[i] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)pfns, 4, VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % RT_VQ_SIZE) };
    rt_virtio_submit(&q[0], 0);
    expect_reset("chain-longer-than-queue");

    q[0].desc[0] = (struct rt_vring_desc){ 0x4000000000ull, 64, 0, 0 }; /* 256 GiB */
    rt_virtio_submit(&q[0], 0);
    expect_reset("buffer-outside-ram");

    q[1].avail->idx = (uint16_t)(q[1].avail->idx + 100);
    rt_mmio_write32(base + VIRTIO_REG_QUEUE_NOTIFY, 1);
    expect_reset("avail-index-jump");

    q[2].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)odd_stats, sizeof odd_stats, 0, 0 };
    rt_virtio_submit(&q[2], 0);
    rt_check(!needs_reset(), "wrong-length-stats", "ignored, device still fine (status 0x%x)", rt_virtio_status(base));

    /* 16 stats buffers, each most of RAM and a multiple of the 10-byte entry: copied whole, that
     * is 16 times the guest's RAM in the VMM. The device must refuse it unread. */
    uint64_t ram = info->ram_size < 0xC0000000ull ? info->ram_size : 0xC0000000ull;
    uint32_t huge = (uint32_t)((ram - 0x200000) / 10 * 10);
    for (uint16_t i = 0; i < 16; i++)
        q[2].desc[i] = (struct rt_vring_desc){ 0x100000, huge, (uint16_t)(i < 15 ? VIRTQ_DESC_F_NEXT : 0), (uint16_t)(i + 1) };
    rt_virtio_submit(&q[2], 0);
    rt_check(!needs_reset(), "ram-sized-stats-chain", "refused, device still fine (status 0x%x)", rt_virtio_status(base));

    /* One inflate buffer of a million PFNs (4 MiB of guest memory read as page numbers). */
    q[0].desc[0] = (struct rt_vring_desc){ 0x100000, 4u << 20, 0, 0 };
    rt_virtio_submit(&q[0], 0);
    rt_check(rt_virtio_wait_used(&q[0]) == 0 && !needs_reset(), "million-pfn-inflate",
             "refused and returned, device still fine (status 0x%x)", rt_virtio_status(base));

    /* Lend a valid stats buffer, then take the stats queue down and set its size to 0: the
     * device's statistics timer (every 0.1 s with --balloon-stats-interval 0.1) must not use it. */
    q[2].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)good_stats, sizeof good_stats, 0, 0 };
    rt_virtio_submit(&q[2], 0);
    rt_mmio_write32(base + VIRTIO_REG_QUEUE_SEL, 2);
    rt_mmio_write32(base + VIRTIO_REG_QUEUE_READY, 0);
    rt_mmio_write32(base + VIRTIO_REG_QUEUE_NUM, 0);
    uint64_t until = rdtsc() + rt_tsc_hz() / 2; /* half a second: several timer rounds */
    while (rdtsc() < until) cpu_relax();
    rt_check(!needs_reset(), "stats-queue-size-zero", "timer left the queue alone (status 0x%x)", rt_virtio_status(base));
    setup();

    for (unsigned i = 0; i < 16; i++) pfns[i] = (uint32_t)(rt_page_alloc() >> 12);
    q[0].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)pfns, 64, 0, 0 };
    rt_virtio_submit(&q[0], 0);
    rt_check(rt_virtio_wait_used(&q[0]) == 0 && !needs_reset(), "valid-inflate-after-abuse", "16 pages inflated");

    rt_printf("badballoon: %d failure(s)\n", rt_check_failures);
    return rt_check_failures ? 0x70 + rt_check_failures : 0;
}

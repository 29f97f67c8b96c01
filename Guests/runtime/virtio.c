/* Guest-side virtio-mmio and the virtio-balloon driver. Everything but the interrupt handler runs
 * at CPL 3: MMIO from CPL 3 goes straight to the VMM, and ring and page work runs natively. */
#include "virtio.h"

void rt_vq_init(struct rt_vq *queue, uint16_t index, void *page) {
    queue->index = index;
    queue->desc = page;
    queue->avail = (void *)((uint8_t *)page + 1024);
    queue->used = (void *)((uint8_t *)page + 2048);
}

uint64_t rt_virtio_setup(uint64_t base, uint32_t device_id, uint64_t wanted, struct rt_vq *queues, unsigned count) {
    if (rt_mmio_read32(base + VIRTIO_REG_MAGIC) != 0x74726976 || rt_mmio_read32(base + VIRTIO_REG_VERSION) != 2 ||
        rt_mmio_read32(base + VIRTIO_REG_DEVICE_ID) != device_id)
        return 0;
    rt_mmio_write32(base + VIRTIO_REG_STATUS, 0);
    rt_mmio_write32(base + VIRTIO_REG_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    rt_mmio_write32(base + VIRTIO_REG_DEVICE_FEATURES_SEL, 0);
    uint64_t offered = rt_mmio_read32(base + VIRTIO_REG_DEVICE_FEATURES);
    rt_mmio_write32(base + VIRTIO_REG_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)rt_mmio_read32(base + VIRTIO_REG_DEVICE_FEATURES) << 32;
    uint64_t features = (wanted | VIRTIO_F_VERSION_1) & offered;
    if (!(features & VIRTIO_F_VERSION_1)) return 0;
    rt_mmio_write32(base + VIRTIO_REG_DRIVER_FEATURES_SEL, 0);
    rt_mmio_write32(base + VIRTIO_REG_DRIVER_FEATURES, (uint32_t)features);
    rt_mmio_write32(base + VIRTIO_REG_DRIVER_FEATURES_SEL, 1);
    rt_mmio_write32(base + VIRTIO_REG_DRIVER_FEATURES, (uint32_t)(features >> 32));
    rt_mmio_write32(base + VIRTIO_REG_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(rt_mmio_read32(base + VIRTIO_REG_STATUS) & VIRTIO_STATUS_FEATURES_OK)) return 0;
    for (unsigned q = 0; q < count; q++) {
        struct rt_vq *queue = &queues[q];
        rt_mmio_write32(base + VIRTIO_REG_QUEUE_SEL, queue->index);
        uint32_t max = rt_mmio_read32(base + VIRTIO_REG_QUEUE_NUM_MAX);
        if (max < RT_VQ_SIZE) return 0;
        queue->base = base;
        queue->size = RT_VQ_SIZE;
        queue->last_used = 0;
        memset((void *)queue->desc, 0, 4096);
        rt_mmio_write32(base + VIRTIO_REG_QUEUE_NUM, RT_VQ_SIZE);
        uint64_t areas[3] = { (uint64_t)(uintptr_t)queue->desc, (uint64_t)(uintptr_t)queue->avail, (uint64_t)(uintptr_t)queue->used };
        for (unsigned a = 0; a < 3; a++) {
            rt_mmio_write32(base + VIRTIO_REG_QUEUE_DESC + 0x10 * a, (uint32_t)areas[a]);
            rt_mmio_write32(base + VIRTIO_REG_QUEUE_DESC + 0x10 * a + 4, (uint32_t)(areas[a] >> 32));
        }
        rt_mmio_write32(base + VIRTIO_REG_QUEUE_READY, 1);
        if (rt_mmio_read32(base + VIRTIO_REG_QUEUE_READY) != 1) return 0;
    }
    return features;
}

void rt_virtio_submit(struct rt_vq *queue, uint16_t head) {
    queue->avail->ring[queue->avail->idx % queue->size] = head;
    __atomic_thread_fence(__ATOMIC_RELEASE); /* the entry before the index that publishes it */
    queue->avail->idx = (uint16_t)(queue->avail->idx + 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    rt_mmio_write32(queue->base + VIRTIO_REG_QUEUE_NOTIFY, queue->index);
}

int rt_virtio_wait_used(struct rt_vq *queue) {
    for (uint64_t spins = 0; queue->used->idx == queue->last_used; spins++) {
        if (spins > (1ull << 32)) return -1;
        cpu_relax();
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    int id = (int)queue->used->ring[queue->last_used % queue->size].id;
    queue->last_used++;
    return id;
}

uint32_t rt_virtio_status(uint64_t base) { return rt_mmio_read32(base + VIRTIO_REG_STATUS); }

int rt_virtio_find(const struct svmm_boot_info *info, uint32_t device_id, unsigned nth, uint64_t *base, unsigned *irq) {
    if (!info->virtio_mmio_base) return -1;
    for (unsigned n = 0; n < info->virtio_mmio_count && n < SVMM_VIRTIO_MAX; n++) {
        uint64_t window = info->virtio_mmio_base + (uint64_t)n * info->virtio_mmio_stride;
        if (rt_mmio_read32(window + VIRTIO_REG_MAGIC) != 0x74726976 || rt_mmio_read32(window + VIRTIO_REG_DEVICE_ID) != device_id)
            continue;
        if (nth-- == 0) {
            *base = window;
            *irq = info->version >= 4 ? info->virtio_irqs[n] : info->virtio_first_irq + n;
            return 0;
        }
    }
    return -1;
}

/* --- balloon --- */

#define BATCH 256
struct balloon_stat { uint16_t tag; uint64_t value; } __attribute__((packed));

struct rt_balloon_info rt_balloon;

static uint8_t rings[3][4096] __attribute__((aligned(4096)));
static uint32_t pfn_buffer[BATCH] __attribute__((aligned(64)));
static struct balloon_stat stats[8];
static struct rt_vq queues[3];
static uint32_t *held; /* page numbers in the balloon (the pool's spare array) */
static uint64_t base;
static volatile uint32_t pending_interrupts;
static uint64_t target_after_oom = ~0ull; /* no re-inflation to this target after an OOM deflate */

static void balloon_irq(unsigned irq) {
    (void)irq;
    uint32_t status = rt_mmio_read32(base + VIRTIO_REG_INTERRUPT_STATUS);
    rt_mmio_write32(base + VIRTIO_REG_INTERRUPT_ACK, status);
    pending_interrupts |= status;
}

int rt_balloon_pending(void) { return pending_interrupts != 0; }

static void fill_stats(void) {
    uint64_t free_bytes = rt_pages_free() * 4096, total = rt_pages_total() * 4096;
    uint16_t tags[8] = { 0, 1, 2, 3, 4, 5, 6, 7 }; /* swap in/out, faults, free, total, available, caches */
    uint64_t values[8] = { 0, 0, 0, 0, free_bytes, total, free_bytes, 0 };
    for (int i = 0; i < 8; i++) { stats[i].tag = tags[i]; stats[i].value = values[i]; }
}

static void submit_stats(void) {
    fill_stats();
    queues[2].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)stats, sizeof stats, 0, 0 };
    rt_virtio_submit(&queues[2], 0);
    rt_balloon.stats_reports++;
}

static int start_device(void) {
    for (unsigned q = 0; q < 3; q++) rt_vq_init(&queues[q], (uint16_t)q, rings[q]);
    uint64_t wanted = BALLOON_F_MUST_TELL_HOST | BALLOON_F_STATS_VQ | BALLOON_F_DEFLATE_ON_OOM;
    /* The stats queue exists only when STATS_VQ is offered: set up two queues first, then ask. */
    rt_mmio_write32(base + VIRTIO_REG_DEVICE_FEATURES_SEL, 0);
    unsigned count = (rt_mmio_read32(base + VIRTIO_REG_DEVICE_FEATURES) & BALLOON_F_STATS_VQ) ? 3 : 2;
    uint64_t features = rt_virtio_setup(base, 5, wanted, queues, count);
    if (!features) return -1;
    rt_balloon.features = features;
    rt_mmio_write32(base + VIRTIO_REG_STATUS, rt_virtio_status(base) | VIRTIO_STATUS_DRIVER_OK);
    if (features & BALLOON_F_STATS_VQ) submit_stats();
    return 0;
}

int rt_balloon_init(const struct svmm_boot_info *info) {
    unsigned irq;
    held = rt_pages_spare(0);
    if (!held || rt_virtio_find(info, 5, 0, &base, &irq) != 0) { base = 0; return -1; }
    if (info->flags & SVMM_BOOTINFO_FLAG_IRQCHIP) rt_irq_enable(irq, balloon_irq);
    return start_device();
}

static void set_actual(void) {
    rt_mmio_write32(base + VIRTIO_REG_CONFIG + 4, (uint32_t)rt_balloon.pages);
}

/* Sends `count` page numbers from pfn_buffer on queue q (0 inflate, 1 deflate) and waits. */
static int send(unsigned q, uint64_t count) {
    queues[q].desc[0] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)pfn_buffer, (uint32_t)(count * 4), 0, 0 };
    rt_virtio_submit(&queues[q], 0);
    return rt_virtio_wait_used(&queues[q]) == 0 ? 0 : -1;
}

static uint64_t inflate(uint64_t want) {
    uint64_t count = 0;
    while (count < want && count < BATCH) {
        uint64_t page = rt_page_alloc();
        if (!page) break;
        pfn_buffer[count++] = (uint32_t)(page >> 12);
    }
    if (!count || send(0, count) != 0) {
        for (uint64_t i = 0; i < count; i++) rt_page_free((uint64_t)pfn_buffer[i] << 12);
        return 0;
    }
    for (uint64_t i = 0; i < count; i++) held[rt_balloon.pages++] = pfn_buffer[i];
    rt_balloon.inflated += count;
    set_actual();
    return count;
}

/* Takes up to `want` pages out of the balloon, tells the host (MUST_TELL_HOST) and returns them
 * to the pool after checking the host handed them back zeroed. */
static uint64_t deflate(uint64_t want) {
    uint64_t count = 0;
    while (count < want && count < BATCH && rt_balloon.pages) pfn_buffer[count++] = held[--rt_balloon.pages];
    if (!count) return 0;
    if (send(1, count) != 0) {
        for (uint64_t i = 0; i < count; i++) held[rt_balloon.pages++] = pfn_buffer[i];
        return 0;
    }
    for (uint64_t i = 0; i < count; i++) {
        const volatile uint64_t *page = (const volatile uint64_t *)(uintptr_t)((uint64_t)pfn_buffer[i] << 12);
        uint64_t bits = 0;
        for (int w = 0; w < 512; w++) bits |= page[w];
        if (bits) rt_balloon.nonzero_after_deflate++;
        rt_page_free((uint64_t)pfn_buffer[i] << 12);
    }
    rt_balloon.deflated += count;
    set_actual();
    return count;
}

uint64_t rt_balloon_poll(void) {
    if (!base) return 0;
    pending_interrupts = 0;
    if (rt_virtio_status(base) & VIRTIO_STATUS_NEEDS_RESET) { /* start over, as drivers do */
        rt_balloon.resets++;
        for (uint64_t i = 0; i < rt_balloon.pages; i++) rt_page_free((uint64_t)held[i] << 12);
        rt_balloon.pages = 0;
        if (start_device() != 0) { base = 0; return 0; }
    }
    rt_balloon.target = rt_mmio_read32(base + VIRTIO_REG_CONFIG);
    if (rt_balloon.target != target_after_oom) target_after_oom = ~0ull;
    uint64_t returned = 0;
    while (rt_balloon.pages < rt_balloon.target && target_after_oom == ~0ull) {
        if (!inflate(rt_balloon.target - rt_balloon.pages)) break;
    }
    while (rt_balloon.pages > rt_balloon.target) {
        uint64_t n = deflate(rt_balloon.pages - rt_balloon.target);
        if (!n) break;
        returned += n;
    }
    if ((rt_balloon.features & BALLOON_F_STATS_VQ) && queues[2].used->idx != queues[2].last_used) {
        queues[2].last_used = queues[2].used->idx;
        submit_stats(); /* the host asked for fresh numbers */
    }
    return returned;
}

uint64_t rt_balloon_page_alloc(void) {
    uint64_t page = rt_page_alloc();
    if (page || !(rt_balloon.features & BALLOON_F_DEFLATE_ON_OOM) || !rt_balloon.pages) return page;
    uint64_t n = deflate(BATCH); /* under memory pressure: take pages back, telling the host */
    rt_balloon.oom_deflated += n;
    target_after_oom = rt_balloon.target;
    return rt_page_alloc();
}

/* Guest-side virtio-mmio (version 2) helpers, the page pool and the balloon driver. */
#ifndef SWIFTVMM_VIRTIO_H
#define SWIFTVMM_VIRTIO_H

#include "rt.h"

/* --- page pool --- */
void rt_pages_init(const struct svmm_boot_info *info);
uint64_t rt_page_alloc(void); /* 0 when empty */
void rt_page_free(uint64_t address);
uint64_t rt_pages_free(void);
uint64_t rt_pages_total(void);
/* Arrays with room for one u32 per usable page: 0 is the balloon's, 1 the application's. */
uint32_t *rt_pages_spare(unsigned which);

/* --- virtio-mmio --- */
#define VIRTIO_REG_MAGIC 0x000
#define VIRTIO_REG_VERSION 0x004
#define VIRTIO_REG_DEVICE_ID 0x008
#define VIRTIO_REG_DEVICE_FEATURES 0x010
#define VIRTIO_REG_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_REG_DRIVER_FEATURES 0x020
#define VIRTIO_REG_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_REG_QUEUE_SEL 0x030
#define VIRTIO_REG_QUEUE_NUM_MAX 0x034
#define VIRTIO_REG_QUEUE_NUM 0x038
#define VIRTIO_REG_QUEUE_READY 0x044
#define VIRTIO_REG_QUEUE_NOTIFY 0x050
#define VIRTIO_REG_INTERRUPT_STATUS 0x060
#define VIRTIO_REG_INTERRUPT_ACK 0x064
#define VIRTIO_REG_STATUS 0x070
#define VIRTIO_REG_QUEUE_DESC 0x080
#define VIRTIO_REG_QUEUE_DRIVER 0x090
#define VIRTIO_REG_QUEUE_DEVICE 0x0A0
#define VIRTIO_REG_CONFIG 0x100

#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 0x40u
#define VIRTIO_F_VERSION_1 (1ull << 32)
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

#define RT_VQ_SIZE 64

struct rt_vring_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct rt_vring_avail { uint16_t flags; uint16_t idx; uint16_t ring[RT_VQ_SIZE]; uint16_t used_event; };
struct rt_vring_used_elem { uint32_t id; uint32_t len; };
struct rt_vring_used { uint16_t flags; uint16_t idx; struct rt_vring_used_elem ring[RT_VQ_SIZE]; uint16_t avail_event; };

/* One queue: its three areas live in one page of guest memory. */
struct rt_vq {
    uint64_t base;
    uint16_t index, size, last_used;
    volatile struct rt_vring_desc *desc;
    volatile struct rt_vring_avail *avail;
    volatile struct rt_vring_used *used;
};

static inline uint32_t rt_mmio_read32(uint64_t address) { return *(volatile uint32_t *)(uintptr_t)address; }
static inline void rt_mmio_write32(uint64_t address, uint32_t value) { *(volatile uint32_t *)(uintptr_t)address = value; }

/* Lays queue `index` out in one 4 KiB page: descriptors, then the available and used rings. */
void rt_vq_init(struct rt_vq *queue, uint16_t index, void *page);
/* Resets the device at `base`, checks it is a version 2 device of `device_id`, negotiates
 * `wanted` (plus VERSION_1) and sets up `count` queues in `rings` (one 4 KiB page each).
 * Returns the negotiated features, or 0 on failure. Does not set DRIVER_OK. */
uint64_t rt_virtio_setup(uint64_t base, uint32_t device_id, uint64_t wanted, struct rt_vq *queues, unsigned count);
/* Puts descriptor `head` (already filled) on the available ring and notifies the device. */
void rt_virtio_submit(struct rt_vq *queue, uint16_t head);
/* Waits until the device has used one more buffer; returns its id, or -1 after a long wait. */
int rt_virtio_wait_used(struct rt_vq *queue);
uint32_t rt_virtio_status(uint64_t base);
/* The `nth` (from 0) virtio-mmio device of `device_id` the boot info lists: its window's address
 * and its IRQ. Returns 0, or -1 when there is no such device. */
int rt_virtio_find(const struct svmm_boot_info *info, uint32_t device_id, unsigned nth, uint64_t *base, unsigned *irq);

/* --- balloon driver --- */
#define BALLOON_F_MUST_TELL_HOST (1ull << 0)
#define BALLOON_F_STATS_VQ (1ull << 1)
#define BALLOON_F_DEFLATE_ON_OOM (1ull << 2)

struct rt_balloon_info {
    uint64_t pages;         /* pages in the balloon */
    uint64_t target;        /* pages the host asked for */
    uint64_t inflated, deflated, oom_deflated, nonzero_after_deflate, stats_reports, resets;
    uint64_t features;
};
extern struct rt_balloon_info rt_balloon;

/* Finds and starts the balloon (features it offers of MUST_TELL_HOST, STATS_VQ and DEFLATE_ON_OOM);
 * returns 0, or -1 when there is none. Interrupts (IRQ from the boot info) only set flags. */
int rt_balloon_init(const struct svmm_boot_info *info);
/* Moves the balloon towards the host's target and answers statistics requests. Returns the number
 * of pages that came back from the balloon (deflated) in this call: they are the top `n` pages of
 * the pool, so the next `n` rt_page_alloc calls return exactly them. */
uint64_t rt_balloon_poll(void);
/* Allocates a page from the pool; when it is empty and DEFLATE_ON_OOM was negotiated, takes pages
 * back from the balloon first (telling the host). */
uint64_t rt_balloon_page_alloc(void);
/* True when the device has raised an interrupt not yet handled by rt_balloon_poll. */
int rt_balloon_pending(void);

#endif

/* Guest-side virtio-net: receive buffers of 2 KiB (header and a whole frame: no mergeable
 * buffers), a ring of transmit buffers reused once the device has used them. CPL 3 throughout;
 * each notification is one MMIO write. */
#include "net.h"

static uint8_t rings[2][4096] __attribute__((aligned(4096)));
static uint8_t rx_buffers[RT_VQ_SIZE][RT_NET_BUFFER] __attribute__((aligned(64)));
static uint8_t tx_buffers[RT_VQ_SIZE][RT_NET_BUFFER] __attribute__((aligned(64)));

static void post_rx(struct rt_net *net, uint16_t slot) {
    struct rt_vq *q = &net->rx;
    q->desc[slot] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)rx_buffers[slot], RT_NET_BUFFER, VIRTQ_DESC_F_WRITE, 0 };
    q->avail->ring[q->avail->idx % q->size] = slot;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    q->avail->idx = (uint16_t)(q->avail->idx + 1);
}

static void notify(struct rt_net *net, uint16_t queue) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    rt_mmio_write32(net->base + VIRTIO_REG_QUEUE_NOTIFY, queue);
    net->notifications++;
}

int rt_net_init(struct rt_net *net, const struct svmm_boot_info *info, unsigned nth) {
    memset(net, 0, sizeof *net);
    if (rt_virtio_find(info, 1, nth, &net->base, &net->irq) != 0) return -1;
    rt_vq_init(&net->rx, 0, rings[0]);
    rt_vq_init(&net->tx, 1, rings[1]);
    struct rt_vq queues[2];
    queues[0] = net->rx;
    queues[1] = net->tx;
    net->features = rt_virtio_setup(net->base, 1, VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS, queues, 2);
    if (!net->features) return -1;
    net->rx = queues[0];
    net->tx = queues[1];
    for (unsigned i = 0; i < 6; i++) net->mac[i] = (uint8_t)rt_mmio_read32(net->base + VIRTIO_REG_CONFIG + i);
    rt_mmio_write32(net->base + VIRTIO_REG_STATUS, rt_virtio_status(net->base) | VIRTIO_STATUS_DRIVER_OK);
    for (uint16_t slot = 0; slot < RT_VQ_SIZE; slot++) post_rx(net, slot);
    notify(net, 0);
    return 0;
}

int rt_net_link_up(struct rt_net *net) {
    if (!(net->features & VIRTIO_NET_F_STATUS)) return 1;
    return (rt_mmio_read32(net->base + VIRTIO_REG_CONFIG + 4) >> 16) & 1; /* status at offset 6 */
}

int rt_net_send(struct rt_net *net, const void *frame, uint32_t length) {
    struct rt_vq *q = &net->tx;
    if (length > RT_NET_BUFFER - RT_NET_HEADER) return -1;
    /* Every buffer in flight: wait for the device to use the oldest. */
    while ((uint16_t)(q->avail->idx - q->last_used) >= q->size) {
        if (rt_virtio_wait_used(q) < 0) return -1;
    }
    while (q->used->idx != q->last_used) q->last_used++; /* reclaim what was used */
    uint16_t slot = net->tx_next;
    net->tx_next = (uint16_t)((slot + 1) % q->size);
    memset(tx_buffers[slot], 0, RT_NET_HEADER);
    memcpy(tx_buffers[slot] + RT_NET_HEADER, frame, length);
    q->desc[slot] = (struct rt_vring_desc){ (uint64_t)(uintptr_t)tx_buffers[slot], RT_NET_HEADER + length, 0, 0 };
    q->avail->ring[q->avail->idx % q->size] = slot;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    q->avail->idx = (uint16_t)(q->avail->idx + 1);
    notify(net, 1);
    net->sent++;
    return 0;
}

uint32_t rt_net_receive(struct rt_net *net, void *frame, uint32_t capacity) {
    struct rt_vq *q = &net->rx;
    if (q->used->idx == q->last_used) return 0;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    struct rt_vring_used_elem used = q->used->ring[q->last_used % q->size];
    q->last_used++;
    uint16_t slot = (uint16_t)used.id;
    if (slot >= RT_VQ_SIZE) return 0;
    uint32_t length = used.len > RT_NET_HEADER ? used.len - RT_NET_HEADER : 0;
    if (length > capacity) length = capacity;
    memcpy(frame, rx_buffers[slot] + RT_NET_HEADER, length);
    post_rx(net, slot);
    notify(net, 0);
    net->received++;
    return length;
}

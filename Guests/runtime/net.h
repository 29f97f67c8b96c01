/* Guest-side virtio-net driver: one receive and one transmit queue, polled. */
#ifndef SWIFTVMM_NET_H
#define SWIFTVMM_NET_H

#include "virtio.h"

#define VIRTIO_NET_F_MAC (1ull << 5)
#define VIRTIO_NET_F_STATUS (1ull << 16)
#define RT_NET_HEADER 12
#define RT_NET_BUFFER 2048

struct rt_net {
    uint64_t base;
    unsigned irq;
    uint64_t features;
    uint8_t mac[6];
    struct rt_vq rx, tx;
    uint16_t tx_next;
    uint64_t sent, received, notifications;
};

/* Starts the `nth` virtio-net device (MAC and STATUS when offered), filling the receive queue
 * with buffers. Returns 0, or -1. */
int rt_net_init(struct rt_net *net, const struct svmm_boot_info *info, unsigned nth);
/* Sends one frame (header added); returns 0, or -1 when it is too long or the queue is stuck. */
int rt_net_send(struct rt_net *net, const void *frame, uint32_t length);
/* Copies the next received frame into `frame` (header removed) and gives its buffer back;
 * returns its length, 0 when none is waiting. */
uint32_t rt_net_receive(struct rt_net *net, void *frame, uint32_t capacity);
/* Link status from config space: 1 up, 0 down. */
int rt_net_link_up(struct rt_net *net);

#endif

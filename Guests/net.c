/* net: a host on the network through virtio-net: answers ARP requests and ICMP echo requests
 * for its address, and prints what it did.
 *
 *   ip=A.B.C.D      its IPv4 address (default 10.0.2.15)
 *   pings=N         end (V = 0) after answering N echo requests (default 3)
 *   linkdown=1      also end (V = 0) when the device reports its link down
 *   announce=1      send a gratuitous ARP for its address first
 *   bad=1           first send a frame of 10 bytes and one of 1600 (the VMM drops both)
 *   seconds=N       give up after N seconds (V = 2; default 120)
 *   quiet=1         no line per reply (each printed byte is an exit: the benchmark counts frames)
 */
#include "runtime/net.h"

static struct rt_net net;
static uint8_t frame[2048], reply[2048];
static uint8_t ip[4] = { 10, 0, 2, 15 };

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static uint16_t checksum(const uint8_t *data, uint32_t length) {
    uint32_t sum = 0;
    for (uint32_t i = 0; i + 1 < length; i += 2) sum += be16(data + i);
    if (length & 1) sum += (uint32_t)data[length - 1] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void parse_ip(void) {
    char text[32];
    if (rt_cmdline_get("ip", text, sizeof text) < 0) return;
    unsigned part = 0, value = 0;
    uint8_t parsed[4];
    for (const char *c = text;; c++) {
        if (*c >= '0' && *c <= '9') { value = value * 10 + (unsigned)(*c - '0'); continue; }
        if (part >= 4 || value > 255) return;
        parsed[part++] = (uint8_t)value;
        value = 0;
        if (*c != '.') break;
    }
    if (part == 4) memcpy(ip, parsed, 4);
}

static void send_arp(uint16_t op, const uint8_t *to_mac, const uint8_t *to_ip) {
    uint8_t *f = reply;
    memcpy(f, op == 2 ? to_mac : (const uint8_t *)"\xff\xff\xff\xff\xff\xff", 6);
    memcpy(f + 6, net.mac, 6);
    put16(f + 12, 0x0806);
    put16(f + 14, 1); put16(f + 16, 0x0800); f[18] = 6; f[19] = 4; put16(f + 20, op);
    memcpy(f + 22, net.mac, 6); memcpy(f + 28, ip, 4);
    memcpy(f + 32, op == 2 ? to_mac : (const uint8_t *)"\0\0\0\0\0\0", 6); memcpy(f + 38, to_ip, 4);
    memset(f + 42, 0, 18);
    rt_net_send(&net, f, 60);
}

int main(const struct svmm_boot_info *info) {
    parse_ip();
    if (rt_net_init(&net, info, 0) != 0) {
        rt_printf("net: no virtio-net device\n");
        return 1;
    }
    uint64_t pings = rt_cmdline_u64("pings", 3), answered = 0, hz = rt_tsc_hz();
    uint64_t deadline = rdtsc() + rt_cmdline_u64("seconds", 120) * hz;
    int linkdown = (int)rt_cmdline_u64("linkdown", 0), quiet = (int)rt_cmdline_u64("quiet", 0);
    rt_printf("net: mac %02x:%02x:%02x:%02x:%02x:%02x ip %u.%u.%u.%u link %d irq %u\n", net.mac[0], net.mac[1], net.mac[2], net.mac[3],
              net.mac[4], net.mac[5], ip[0], ip[1], ip[2], ip[3], rt_net_link_up(&net), net.irq);
    if (rt_cmdline_u64("bad", 0)) {
        memset(frame, 0xAB, sizeof frame);
        rt_net_send(&net, frame, 10);
        rt_net_send(&net, frame, 1600);
        rt_printf("net: sent a runt and an oversized frame\n");
    }
    if (rt_cmdline_u64("announce", 0)) send_arp(1, 0, ip);
    while (answered < pings) {
        if (rdtsc() > deadline) {
            rt_printf("net: gave up after answering %llu pings\n", (unsigned long long)answered);
            return 2;
        }
        if (linkdown && !rt_net_link_up(&net)) {
            rt_printf("net: link down\n");
            return 0;
        }
        uint32_t length = rt_net_receive(&net, frame, sizeof frame);
        if (!length) { cpu_relax(); continue; }
        if (length < 14) continue;
        uint16_t type = be16(frame + 12);
        if (type == 0x0806 && length >= 42 && be16(frame + 20) == 1 && memcmp(frame + 38, ip, 4) == 0) {
            send_arp(2, frame + 22, frame + 28);
            if (!quiet) rt_printf("net: arp reply to %u.%u.%u.%u\n", frame[28], frame[29], frame[30], frame[31]);
        } else if (type == 0x0800 && length >= 34 && (frame[14] >> 4) == 4 && frame[23] == 1 && memcmp(frame + 30, ip, 4) == 0) {
            uint32_t header = (uint32_t)(frame[14] & 0x0F) * 4, total = be16(frame + 16);
            if (total > length - 14 || header < 20 || total < header + 8 || frame[14 + header] != 8) continue;
            memcpy(reply, frame + 6, 6);
            memcpy(reply + 6, net.mac, 6);
            memcpy(reply + 12, frame + 12, 2 + total);
            memcpy(reply + 14 + 12, frame + 14 + 16, 4); /* source = their destination (us) */
            memcpy(reply + 14 + 16, frame + 14 + 12, 4); /* destination = their source */
            uint8_t *icmp = reply + 14 + header;
            icmp[0] = 0; /* echo reply */
            put16(icmp + 2, 0);
            put16(icmp + 2, checksum(icmp, total - header));
            put16(reply + 14 + 10, 0);
            put16(reply + 14 + 10, checksum(reply + 14, header));
            rt_net_send(&net, reply, 14 + total);
            answered++;
            if (!quiet) rt_printf("net: echo reply to %u.%u.%u.%u seq %u\n", frame[26], frame[27], frame[28], frame[29], be16(frame + 14 + header + 6));
        }
    }
    rt_printf("net: answered %llu pings, sent %llu frames, received %llu\n", (unsigned long long)answered,
              (unsigned long long)net.sent, (unsigned long long)net.received);
    return 0;
}

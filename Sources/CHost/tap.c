// Host tap devices for virtio-net: struct ifreq and the TUN/TAP and interface-flag requests,
// which the C library declares only in kernel headers Swift does not import cleanly.
#define _GNU_SOURCE
#include "chost.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

int chost_tap_open(const char *name) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(fd, TUNSETIFF, &request) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int chost_link_set_up(const char *name) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    int result = ioctl(sock, SIOCGIFFLAGS, &request);
    if (result == 0 && !(request.ifr_flags & IFF_UP)) {
        request.ifr_flags |= IFF_UP;
        result = ioctl(sock, SIOCSIFFLAGS, &request);
    }
    int saved = errno;
    close(sock);
    errno = saved;
    return result;
}

int chost_wake_event(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

/* rtc: reads the CMOS clock the way firmware does (wait while update-in-progress, read until two
 * reads agree), prints "rtc: YYYY-MM-DD HH:MM:SS" and the epoch seconds, and exits V = 0. */
#include "runtime/rt.h"

static uint8_t cmos(uint8_t index) {
    outb(SVMM_PORT_CMOS, index);
    return inb(SVMM_PORT_CMOS + 1);
}

static unsigned bcd(uint8_t v) { return (v >> 4) * 10 + (v & 15); }

struct when { unsigned year, month, day, hour, minute, second; };

static struct when read_clock(void) {
    struct when w;
    while (cmos(0x0A) & 0x80) cpu_relax();
    uint8_t b = cmos(0x0B);
    w.second = cmos(0x00); w.minute = cmos(0x02); w.hour = cmos(0x04);
    w.day = cmos(0x07); w.month = cmos(0x08); w.year = cmos(0x09);
    unsigned century = cmos(0x32);
    if (!(b & 0x04)) {
        w.second = bcd((uint8_t)w.second); w.minute = bcd((uint8_t)w.minute); w.hour = bcd((uint8_t)w.hour);
        w.day = bcd((uint8_t)w.day); w.month = bcd((uint8_t)w.month); w.year = bcd((uint8_t)w.year);
        century = bcd((uint8_t)century);
    }
    w.year += century * 100;
    return w;
}

/* Days from 1970-01-01 to the given civil date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int main(const struct svmm_boot_info *info) {
    (void)info;
    struct when a, b;
    do { a = read_clock(); b = read_clock(); } while (a.second != b.second || a.minute != b.minute);
    int64_t epoch = days_from_civil(b.year, b.month, b.day) * 86400 + b.hour * 3600 + b.minute * 60 + b.second;
    rt_printf("rtc: %04u-%02u-%02u %02u:%02u:%02u epoch %ld\n", b.year, b.month, b.day, b.hour, b.minute, b.second, epoch);
    return 0;
}

#include "mbrt.h"
#include "../runtime/abi.h"

#include <stdarg.h>

void mb_putc(char c) { outb(SVMM_PORT_COM1, (uint8_t)c); }

static void put_unsigned(uint32_t value, unsigned base, int width) {
    char digits[12];
    int length = 0;
    do {
        unsigned digit = value % base;
        digits[length++] = (char)(digit < 10 ? '0' + digit : 'a' + digit - 10);
        value /= base;
    } while (value != 0);
    while (length < width) digits[length++] = '0';
    while (length > 0) mb_putc(digits[--length]);
}

void mb_printf(const char *format, ...) {
    va_list args;
    va_start(args, format);
    for (const char *p = format; *p; p++) {
        if (*p != '%') { mb_putc(*p); continue; }
        switch (*++p) {
        case 's': for (const char *s = va_arg(args, const char *); *s; s++) mb_putc(*s); break;
        case 'u': put_unsigned(va_arg(args, uint32_t), 10, 0); break;
        case 'x': put_unsigned(va_arg(args, uint32_t), 16, 0); break;
        case 'c': mb_putc((char)va_arg(args, int)); break;
        default: mb_putc('%'); mb_putc(*p); break;
        }
    }
    va_end(args);
}

size_t mb_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int mb_memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] - y[i];
    }
    return 0;
}

void fw_cfg_read(uint16_t key, void *buffer, size_t length) {
    outw(0x510, key);
    for (size_t i = 0; i < length; i++) ((uint8_t *)buffer)[i] = inb(0x511);
}

int mb_cmdline_value(const char *cmdline, const char *name, char *out, size_t size) {
    size_t name_length = mb_strlen(name);
    for (const char *p = cmdline; *p; p++) {
        if ((p == cmdline || p[-1] == ' ') && mb_memcmp(p, name, name_length) == 0 && p[name_length] == '=') {
            const char *value = p + name_length + 1;
            size_t n = 0;
            while (value[n] && value[n] != ' ' && n + 1 < size) { out[n] = value[n]; n++; }
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

uint32_t mb_parse_u32(const char *text) {
    uint32_t value = 0, base = 10;
    if (text[0] == '0' && text[1] == 'x') { base = 16; text += 2; }
    for (; *text; text++) {
        char c = *text;
        uint32_t digit = c >= '0' && c <= '9' ? (uint32_t)(c - '0') : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10) : 99;
        if (digit >= base) break;
        value = value * base + digit;
    }
    return value;
}

void mb_exit(uint32_t value, int width) {
    if (width == 4) outl(SVMM_PORT_DEBUG_EXIT, value);
    else if (width == 2) outw(SVMM_PORT_DEBUG_EXIT, (uint16_t)value);
    else outb(SVMM_PORT_DEBUG_EXIT, (uint8_t)value);
    for (;;) __asm__ volatile("cli; hlt");
}

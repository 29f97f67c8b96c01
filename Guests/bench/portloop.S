/* portloop: the exit-throughput guest. The same 16-bit loop as shared/bench/exit_floor.c (N byte
 * writes of an incrementing value to port 0x10, then HLT), so both VMMs run identical guest code.
 * Built with --defsym N=count; run with --entry real. */
    .code16
    .text
    .globl _start
_start:
    mov $0x10, %dx
    mov $N, %ecx
    mov $0x41, %al
1:  out %al, %dx
    inc %al
    dec %ecx
    jnz 1b
    hlt

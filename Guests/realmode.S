/* realmode: 16-bit real-mode flat binary (swiftvmm run --entry real realmode.bin).
 * Entered with CS = DS = ES = SS = 0 and IP = the load address (0x1000 by default): prints a
 * line on COM1 and checks the boot-info magic at 0x5000:0000, then halts (status 0) or, when the
 * magic is wrong, exits through the debug-exit port with V = 0x33. */
    .code16
    .text
    .globl _start
_start:
    cld
    call 1f                      /* find where we were loaded: position-independent */
1:  pop %bx
    lea (message - 1b)(%bx), %si
    mov $0x3f8, %dx
next:
    lodsb
    test %al, %al
    jz printed
    out %al, %dx
    jmp next
printed:
    mov $0x5000, %ax             /* boot info at 0x50000 */
    mov %ax, %es
    cmpl $0x4D4D5653, %es:0
    jne bad
    hlt
bad:
    mov $0x33, %al
    out %al, $0xf4
    hlt
message:
    .asciz "Hello from real mode\n"

/* mbkludge: a multiboot kernel loaded through the header's address fields (flag 16, the
 * "a.out kludge"), linked as a flat binary. Checks that its bss (from bss_end_addr) is zero and
 * ends with a 2-byte debug-exit write: V = 0 (status 1) when it is, 1 otherwise. */
    .code32
    .text
    .globl _start
header:
    .long 0x1BADB002
    .long 0x00010000
    .long -(0x1BADB002 + 0x00010000)
    .long header                  /* header_addr */
    .long header                  /* load_addr: the file starts with the header */
    .long load_end                /* load_end_addr */
    .long bss_end                 /* bss_end_addr */
    .long _start                  /* entry_addr */
_start:
    movl $0x3f8, %edx
    movl $message, %esi
2:  lodsb
    testb %al, %al
    jz 3f
    outb %al, %dx
    jmp 2b
3:  xorl %eax, %eax
    movl $bss_start, %edi
4:  cmpl $bss_end, %edi
    je 5f
    orl (%edi), %eax
    addl $4, %edi
    jmp 4b
5:  testl %eax, %eax
    setnz %al
    movzbl %al, %eax
    movw $0xf4, %dx
    outw %ax, %dx
6:  cli
    hlt
    jmp 6b
message: .asciz "mbkludge: loaded through the address fields\n"
    .align 4
load_end:
    .bss
bss_start:
    .space 0x3000
bss_end:

    .section .note.GNU-stack, "", @progbits

/* mb64: a multiboot kernel in an ELF64 file whose entry is 32-bit code (as multiboot requires).
 * Checks EAX and the info flags, prints its command line, ends with a 4-byte debug-exit write:
 * V = 0 (status 1) when both checks pass, 1 otherwise. */
    .section .text.start, "ax"
    .code32
    .align 4
    .long 0x1BADB002
    .long 0x00000002
    .long -(0x1BADB002 + 0x00000002)
    .globl _start
_start:
    movl $stack_top, %esp         /* multiboot leaves ESP undefined */
    movl $1, %edi                 /* exit value until both checks pass */
    cmpl $0x2BADB002, %eax
    jne 9f
    movl (%ebx), %ecx             /* info->flags: cmdline and mmap present */
    andl $0x44, %ecx
    cmpl $0x44, %ecx
    jne 9f
    xorl %edi, %edi
9:  movl $prefix, %esi
    call puts
    movl 16(%ebx), %esi           /* info->cmdline */
    call puts
    movl $newline, %esi
    call puts
    movl %edi, %eax
    movw $0xf4, %dx
    outl %eax, %dx
1:  cli
    hlt
    jmp 1b

/* Prints the NUL-terminated string at ESI on COM1. */
puts:
    movw $0x3f8, %dx
2:  lodsb
    testb %al, %al
    jz 3f
    outb %al, %dx
    jmp 2b
3:  ret

    .section .rodata
prefix: .asciz "mb64: cmdline="
newline: .asciz "\n"

    .bss
    .align 16
    .space 4096
stack_top:

    .section .note.GNU-stack, "", @progbits

/* Entry of the 32-bit multiboot test kernels: the multiboot header (page-aligned modules, memory
 * information), then mb_main(magic, info, entry eflags, entry cr0) on a stack of our own. */
    .section .text.start, "ax"
    .code32
    .align 4
mb_header:
    .long 0x1BADB002
    .long 0x00000003
    .long -(0x1BADB002 + 0x00000003)

    .globl _start
_start:
    movl $stack_top, %esp         /* multiboot leaves ESP undefined: a stack first */
    pushfl
    popl %ecx
    movl %cr0, %edx
    pushl %edx
    pushl %ecx
    pushl %ebx
    pushl %eax
    call mb_main
1:  cli
    hlt
    jmp 1b

/* Interrupt stubs for pc-testdev IRQ lines: count, EOI, return. */
    .text
    .globl irq_stub_master, irq_stub_slave, irq_count_master, irq_count_slave
irq_stub_master:
    pushal
    incl irq_count_master
    movb $0x20, %al
    outb %al, $0x20
    popal
    jmp irq_return
irq_stub_slave:
    pushal
    incl irq_count_slave
    movb $0x20, %al
    outb %al, $0xA0
    outb %al, $0x20
    popal
    jmp irq_return

/* Returns from a same-privilege interrupt without IRET. PVM's instruction emulator, which runs
 * all guest kernel-mode code, fails on a 32-bit IRET (KVM_EXIT_INTERNAL_ERROR, emulation
 * failure); on VT-x/AMD-V an IRET would do. The frame is EIP, CS, EFLAGS: rearrange it into
 * EFLAGS, EIP, restore the flags (and with them IF) and return. */
irq_return:
    pushl %eax                    /* eax, eip, cs, eflags */
    movl 4(%esp), %eax
    xchgl 12(%esp), %eax          /* eax, eip, cs, eip; eax = eflags */
    movl %eax, 8(%esp)            /* eax, eip, eflags, eip */
    popl %eax
    addl $4, %esp
    popfl
    ret

/* The AP trampoline mbsmp copies to physical address 0: real mode, CS = 0 after SIPI vector 0.
 * Each AP counts itself at 0xF00 and halts. */
    .globl ap_trampoline, ap_trampoline_end
    .code16
ap_trampoline:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lock incw 0xF00
2:  hlt
    jmp 2b
ap_trampoline_end:
    .code32

    .data
    .align 4
irq_count_master: .long 0
irq_count_slave: .long 0

    .bss
    .align 16
    .space 16384
stack_top:

    .section .note.GNU-stack, "", @progbits

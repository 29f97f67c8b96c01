/* triplefault: loads an empty IDT and raises an exception at CPL 0: the CPU cannot deliver it,
 * which ends in a triple fault (KVM_EXIT_SHUTDOWN). */
    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    lidt empty_idt(%rip)
    ud2
1:  jmp 1b
    .section .rodata
empty_idt:
    .word 0
    .quad 0

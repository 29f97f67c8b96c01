/* Guest entry: the VMM starts vCPU 0 here in 64-bit mode at CPL 0 with RDI = boot-info address,
 * RSI = vCPU index, RSP = a small VMM-provided stack. Other vCPUs either start here too (no
 * interrupt controllers) or wait for INIT/SIPI, which sends them through rt_ap_trampoline. */
    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    cli
    mov %rdi, %r12
    mov %rsi, %r13
    jmp rt_cpu_start

    .text
/* Common start of every vCPU: R12 = boot info, R13 = vCPU index. */
rt_cpu_start:
    cmp $64, %r13                /* RT_MAX_CPUS: extra vCPUs park */
    jae park
    lea rt_kernel_stacks(%rip), %rsp
    lea 1(%r13), %rax
    shl $14, %rax                /* 16 KiB kernel stack per vCPU */
    add %rax, %rsp
    mov %r12, %rdi
    mov %r13, %rsi
    call rt_kernel_init          /* returns the CPL 3 stack top in RAX */
    pushq $0x1b                  /* SS: user data | RPL 3 */
    push %rax                    /* RSP */
    pushq $0x3202                /* RFLAGS: IOPL 3, interrupts on */
    pushq $0x23                  /* CS: user code | RPL 3 */
    lea rt_user_entry(%rip), %rax
    push %rax
    mov %r12, %rdi
    mov %r13, %rsi
    iretq
park:
    cli
    hlt
    jmp park

/* 64-bit entry of an AP, reached from the trampoline: the vCPU index is its APIC ID, which
 * CPUID leaf 1 reports in EBX[31:24]. */
    .globl rt_ap_entry
rt_ap_entry:
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov %rbx, %r13
    mov rt_boot_info(%rip), %r12
    jmp rt_cpu_start

/* Exception and IRQ entry stubs: push a fake error code where the CPU does not, then the vector. */
    .macro EXC vector, has_error
rt_exception_\vector:
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\vector
    jmp rt_exception_common
    .endm

    EXC 0,0; EXC 1,0; EXC 2,0; EXC 3,0; EXC 4,0; EXC 5,0; EXC 6,0; EXC 7,0
    EXC 8,1; EXC 9,0; EXC 10,1; EXC 11,1; EXC 12,1; EXC 13,1; EXC 14,1; EXC 15,0
    EXC 16,0; EXC 17,1; EXC 18,0; EXC 19,0; EXC 20,0; EXC 21,1; EXC 22,0; EXC 23,0
    EXC 24,0; EXC 25,0; EXC 26,0; EXC 27,0; EXC 28,0; EXC 29,1; EXC 30,1; EXC 31,0
    /* IRQ 0-15 of the remapped 8259 pair */
    EXC 32,0; EXC 33,0; EXC 34,0; EXC 35,0; EXC 36,0; EXC 37,0; EXC 38,0; EXC 39,0
    EXC 40,0; EXC 41,0; EXC 42,0; EXC 43,0; EXC 44,0; EXC 45,0; EXC 46,0; EXC 47,0

/* Saves every general register below the CPU's frame, so the C handler can read and change the
 * interrupted context (struct rt_frame), then returns to it with IRETQ if the handler returns. */
rt_exception_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx               /* callee-saved: the frame, across the call */
    and $-16, %rsp
    cld
    call rt_exception
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp                /* vector and error code */
    iretq

    .section .rodata
    .globl rt_exception_stubs
    .balign 8
rt_exception_stubs:
    .irp v,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .quad rt_exception_\v
    .endr

/* AP start-up trampoline. rt_start_aps copies it to RT_TRAMPOLINE (a page-aligned address below
 * 1 MiB) and fills in tramp_cr3 and tramp_entry; a SIPI starts the AP here in real mode with
 * CS = RT_TRAMPOLINE >> 4, IP = 0. It goes through 32-bit protected mode into long mode on the
 * boot page tables, then jumps to rt_ap_entry. */
#define RT_TRAMPOLINE 0x58000
/* Where `label` lands once the trampoline sits at RT_TRAMPOLINE. */
#define T(label) ((label) - rt_ap_trampoline + RT_TRAMPOLINE)
    .section .rodata
    .globl rt_ap_trampoline, rt_ap_trampoline_end, rt_ap_tramp_cr3, rt_ap_tramp_entry
    .balign 16
    .code16
rt_ap_trampoline:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl tramp_gdtr - rt_ap_trampoline
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $T(tramp32)
    .code32
tramp32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x620, %eax              /* PAE, OSFXSR, OSXMMEXCPT */
    mov %eax, %cr4
    mov T(rt_ap_tramp_cr3), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx        /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    ljmp $0x18, $T(tramp64)
    .code64
tramp64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %ss
    movabs T(rt_ap_tramp_entry), %rax
    jmp *%rax
    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF     /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF     /* 0x10: data */
    .quad 0x00AF9A000000FFFF     /* 0x18: 64-bit code */
tramp_gdtr:
    .word 31
    .long T(tramp_gdt)
    .balign 8
rt_ap_tramp_cr3:
    .quad 0
rt_ap_tramp_entry:
    .quad 0
rt_ap_trampoline_end:

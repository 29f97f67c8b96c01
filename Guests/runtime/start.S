/* Guest entry: the VMM starts every vCPU here in 64-bit mode at CPL 0 with
 * RDI = boot-info address, RSI = vCPU index, RSP = a small VMM-provided stack. */
    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    cli
    mov %rdi, %r12
    mov %rsi, %r13
    cmp $8, %r13                 /* RT_MAX_CPUS: extra vCPUs park */
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
    pushq $0x3002                /* RFLAGS: IOPL 3, interrupts off */
    pushq $0x23                  /* CS: user code | RPL 3 */
    lea rt_user_entry(%rip), %rax
    push %rax
    mov %r12, %rdi
    mov %r13, %rsi
    iretq
park:
    hlt
    jmp park

/* Exception entry stubs: push a fake error code where the CPU does not, then the vector. */
    .macro EXC vector, has_error
    .globl rt_exception_\vector
rt_exception_\vector:
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\vector
    jmp rt_exception_common
    .endm

    .text
    EXC 0,0; EXC 1,0; EXC 2,0; EXC 3,0; EXC 4,0; EXC 5,0; EXC 6,0; EXC 7,0
    EXC 8,1; EXC 9,0; EXC 10,1; EXC 11,1; EXC 12,1; EXC 13,1; EXC 14,1; EXC 15,0
    EXC 16,0; EXC 17,1; EXC 18,0; EXC 19,0; EXC 20,0; EXC 21,1; EXC 22,0; EXC 23,0
    EXC 24,0; EXC 25,0; EXC 26,0; EXC 27,0; EXC 28,0; EXC 29,1; EXC 30,1; EXC 31,0

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
    .irp v,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad rt_exception_\v
    .endr

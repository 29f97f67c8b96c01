/*
 * /init of the small Linux guest: stays in user mode and never makes a system call (on PVM a
 * syscall from user mode does not reach an unmodified guest kernel). It keeps PID 1 alive so the
 * kernel goes on serving interrupts and its balloon driver while the host works the balloon.
 * Spinning with pause, because without system calls it cannot sleep.
 */
	.text
	.globl	_start
_start:
1:	pause
	jmp	1b

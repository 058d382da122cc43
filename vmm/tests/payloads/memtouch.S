# Writes a counter into every page of the 16 MiB at 0x300000, round after
# round, and a '.' on the UART after each round: a workload that keeps
# 4096 pages dirty, for diff-snapshot figures.
	.code64
	.text
	.globl _start
_start:
	xor	%rcx, %rcx
1:	mov	$0x300000, %rdi
	mov	$4096, %r8d
	inc	%rcx
2:	mov	%rcx, (%rdi)
	add	$4096, %rdi
	dec	%r8d
	jnz	2b
	mov	$0x3f8, %dx
	mov	$'.', %al
	outb	%al, %dx
	jmp	1b

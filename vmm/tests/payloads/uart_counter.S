# Counts in memory at 0x200000 for ever and prints a '.' on the UART every
# 16384 steps.
	.code64
	.text
	.globl _start
_start:
	mov	0x200000, %rcx			# go on from what memory holds
1:	inc	%rcx
	mov	%rcx, 0x200000
	test	$0x3fff, %rcx
	jnz	1b
	mov	$0x3f8, %dx
	mov	$'.', %al
	outb	%al, %dx
	jmp	1b

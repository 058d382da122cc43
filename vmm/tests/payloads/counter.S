# Counts in memory at rsi for ever; every 4096 steps also reports the low
# byte of the count on port 0x503.
	.code64
	.text
	.globl _start
_start:
	xor	%rax, %rax
1:	inc	%rax
	mov	%rax, (%rsi)
	test	$0xfff, %rax
	jnz	1b
	mov	$0x503, %dx
	outb	%al, %dx
	jmp	1b

# Writes pseudo-random values to every device register crvmm has: the
# UART (0x3f8-0x3ff), the i8042 (0x60, 0x64; never a reset command), and the
# virtio-mmio window at 0xd0000000 (queue addresses, sizes, status,
# notifications), 20000 times, then exits with code 0x42. The VMM must
# survive all of it.
	.code64
	.text
	.globl _start
_start:
	mov	$0x2545f4914f6cdd1d, %r8	# xorshift state
	mov	$20000, %r9d
1:	# next random number in r8
	mov	%r8, %rax
	shl	$13, %rax
	xor	%rax, %r8
	mov	%r8, %rax
	shr	$7, %rax
	xor	%rax, %r8
	mov	%r8, %rax
	shl	$17, %rax
	xor	%rax, %r8
	# UART register (r8 & 7), value r8 >> 8
	mov	%r8, %rdx
	and	$7, %edx
	add	$0x3f8, %edx
	mov	%r8, %rax
	shr	$8, %rax
	outb	%al, %dx
	# i8042: data port, or command port unless the value is 0xfe
	mov	%r8, %rax
	shr	$16, %rax
	mov	$0x60, %edx
	outb	%al, %dx
	cmp	$0xd1, %al			# write output port: bit 0 resets
	je	2f
	cmp	$0xf0, %al			# 0xf0-0xff pulse the reset line
	jae	2f
	mov	$0x64, %edx
	outb	%al, %dx
2:	# virtio-mmio: a 32-bit write at a random aligned offset, and a read
	mov	%r8, %rdx
	shr	$24, %rdx
	and	$0xffc, %edx
	mov	$0xd0000000, %ecx		# zero-extended, unlike an imm32 add
	add	%rcx, %rdx
	mov	%r8, %rax
	shr	$32, %rax
	movl	%eax, (%rdx)
	movl	(%rdx), %eax
	dec	%r9d
	jnz	1b
	mov	$0xf4, %dx
	mov	$0x42, %al
	outb	%al, %dx
3:	jmp	3b

# Device and memory round trips. Entry: rdi = vCPU index, rsi = a buffer
# the host filled (u64 at +0); the result goes to +8.
	.code64
	.text
	.globl _start
_start:
	# 1. A line on the serial port.
	lea	msg(%rip), %rbx
	mov	$0x3f8, %dx
1:	movb	(%rbx), %al
	test	%al, %al
	jz	2f
	outb	%al, %dx
	inc	%rbx
	jmp	1b
2:	# 2. Port I/O: read 0x500, write it + 1 to 0x501.
	mov	$0x500, %dx
	inb	%dx, %al
	inc	%al
	mov	$0x501, %dx
	outb	%al, %dx
	# 3. MMIO: read a u32 at 0xd0000000, write its complement at +4.
	mov	$0xd0000000, %rax
	movl	(%rax), %ecx
	notl	%ecx
	movl	%ecx, 4(%rax)
	# 4. Memory: the host's value + 1, next to it.
	mov	(%rsi), %rax
	inc	%rax
	mov	%rax, 8(%rsi)
	# 5. Exit with code 0x11.
	mov	$0xf4, %dx
	mov	$0x11, %al
	outb	%al, %dx
3:	jmp	3b
msg:	.asciz "hello from the payload\n"

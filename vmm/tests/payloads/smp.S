# Every vCPU marks its own slot (rsi + 8 * index) with 0xc0de0000 | index
# and reports its index on port 0x502, then counts in its slot's upper
# half for ever.
	.code64
	.text
	.globl _start
_start:
	mov	$0xc0de0000, %eax
	or	%rdi, %rax
	mov	%rax, (%rsi,%rdi,8)
	mov	%edi, %eax
	mov	$0x502, %dx
	outb	%al, %dx
	mov	$1, %rcx
	shl	$32, %rcx
1:	add	%rcx, (%rsi,%rdi,8)
	jmp	1b

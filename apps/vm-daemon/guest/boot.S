/*
 * boot.S - Multiboot v1 entry point of the Bulkhead test guest.
 *
 * QEMU's -kernel loads this 32-bit ELF through its multiboot option ROM and
 * jumps to _start in flat 32-bit protected mode with EAX = 0x2BADB002 and
 * EBX = physical address of the multiboot information structure. We install
 * our own GDT (the loader's is not guaranteed to stay valid), zero .bss, set
 * up a stack and call kmain(magic, info). Exception/IRQ stubs live here too.
 */

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, want memory info */

    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .text
    .global _start
    .type _start, @function
_start:
    cli
    cld
    mov %eax, %esi              /* multiboot magic */
    mov %ebx, %edx              /* multiboot info pointer */

    lgdt gdt_desc
    ljmp $0x08, $1f
1:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss

    /* zero .bss (the stack lives there too: nothing is on it yet) */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $stack_top, %esp
    xor %ebp, %ebp
    push %edx                   /* info */
    push %esi                   /* magic */
    call kmain
2:  cli
    hlt
    jmp 2b
    .size _start, . - _start

/* ---- interrupt stubs: every vector pushes (err, vector) and joins isr_common */

.macro ISR_NOERR n
isr_\n:
    pushl $0
    pushl $\n
    jmp isr_common
.endm

.macro ISR_ERR n
isr_\n:
    pushl $\n
    jmp isr_common
.endm

    ISR_NOERR 0
    ISR_NOERR 1
    ISR_NOERR 2
    ISR_NOERR 3
    ISR_NOERR 4
    ISR_NOERR 5
    ISR_NOERR 6
    ISR_NOERR 7
    ISR_ERR   8
    ISR_NOERR 9
    ISR_ERR   10
    ISR_ERR   11
    ISR_ERR   12
    ISR_ERR   13
    ISR_ERR   14
    ISR_NOERR 15
    ISR_NOERR 16
    ISR_ERR   17
    ISR_NOERR 18
    ISR_NOERR 19
    ISR_NOERR 20
    ISR_ERR   21
    ISR_NOERR 22
    ISR_NOERR 23
    ISR_NOERR 24
    ISR_NOERR 25
    ISR_NOERR 26
    ISR_NOERR 27
    ISR_NOERR 28
    ISR_ERR   29
    ISR_ERR   30
    ISR_NOERR 31
    /* remapped 8259 PIC: IRQ0..15 -> vectors 32..47 */
    ISR_NOERR 32
    ISR_NOERR 33
    ISR_NOERR 34
    ISR_NOERR 35
    ISR_NOERR 36
    ISR_NOERR 37
    ISR_NOERR 38
    ISR_NOERR 39
    ISR_NOERR 40
    ISR_NOERR 41
    ISR_NOERR 42
    ISR_NOERR 43
    ISR_NOERR 44
    ISR_NOERR 45
    ISR_NOERR 46
    ISR_NOERR 47

isr_common:
    pusha
    cld
    push %esp                   /* struct isr_frame * */
    call isr_handler
    add $4, %esp
    popa
    add $8, %esp                /* vector + error code */
    iret

    .section .rodata
    .balign 4
    .global isr_table
isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .long isr_\n
    .endr

    .balign 8
gdt:
    .quad 0x0000000000000000    /* null */
    .quad 0x00CF9A000000FFFF    /* 0x08: code, base 0, limit 4 GiB, 32-bit */
    .quad 0x00CF92000000FFFF    /* 0x10: data, base 0, limit 4 GiB */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .section .bss
    .balign 16
stack_bottom:
    .skip 16384
stack_top:

    .section .note.GNU-stack, "", @progbits

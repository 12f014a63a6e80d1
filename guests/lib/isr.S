/*
 * Interrupt and exception entry stubs for all 256 vectors.
 *
 * Each stub makes the stack look the same whatever the vector: the CPU
 * pushes an error code only for vectors 8, 10-14, 17, 21, 29 and 30
 * (SDM Vol. 3A section 6.13 and table 6-1), so the other stubs push a zero
 * in its place. Every stub then pushes its vector and jumps to isr_common,
 * which saves the general registers and data segment registers and calls
 * isr_dispatch(struct frame *) in C. The C handler may change any field of
 * the frame; the changes take effect when isr_common restores the registers
 * and returns with IRET. Guests run at CPL 0, so the CPU pushes no SS:ESP
 * and the frame ends at EFLAGS (SDM Vol. 3A section 6.12.1, figure 6-4).
 */

    .text

    .macro STUB vec
    .align 16
isr_stub_\vec:
    .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    /* The CPU already pushed an error code for this vector. */
    .else
    pushl $0
    .endif
    pushl $\vec
    jmp isr_common
    .endm

    .altmacro
    .macro STUBS from, to
    STUB %(\from)
    .if \to-\from
    STUBS %(\from+1), \to
    .endif
    .endm

    /* Recursion depth of gas macros is limited, so build the 256 stubs
       in chunks of 32. */
    STUBS 0, 31
    STUBS 32, 63
    STUBS 64, 95
    STUBS 96, 127
    STUBS 128, 159
    STUBS 160, 191
    STUBS 192, 223
    STUBS 224, 255

    .align 16
isr_common:
    /* struct frame, from its lowest address: gs fs es ds, the PUSHAD block
       (edi esi ebp esp ebx edx ecx eax), vector, error code, eip, cs,
       eflags. Pushes go in the reverse order. */
    pushal
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    /* The interrupted code may have had any data segment loaded; the C
       handler needs the flat data segment of our GDT. */
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    /* The System V ABI requires DF clear on function entry. */
    cld
    pushl %esp
    call isr_dispatch
    addl $4, %esp
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    /* Drop the vector and error code; IRET needs EIP on top. */
    addl $8, %esp
    iretl

    /* isr_stub_table[v] is the entry address of vector v's stub. */
    .section .rodata
    .align 4
    .globl isr_stub_table
isr_stub_table:
    .macro ENTRY vec
    .long isr_stub_\vec
    .endm
    .macro ENTRIES from, to
    ENTRY %(\from)
    .if \to-\from
    ENTRIES %(\from+1), \to
    .endif
    .endm
    ENTRIES 0, 31
    ENTRIES 32, 63
    ENTRIES 64, 95
    ENTRIES 96, 127
    ENTRIES 128, 159
    ENTRIES 160, 191
    ENTRIES 192, 223
    ENTRIES 224, 255

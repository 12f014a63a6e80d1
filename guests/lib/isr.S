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
 * and returns with IRET. An interrupt taken at CPL 0 pushes no SS:ESP and
 * the frame ends at EFLAGS; one taken at CPL 3 switches to the ring-0
 * stack of the TSS and pushes the interrupted SS:ESP above EFLAGS (SDM
 * Vol. 3A section 6.12.1, figure 6-4). IRET pops them again when it
 * returns to CPL 3.
 *
 * isr_dispatch returns the frame to resume: normally the one it was given,
 * but a handler may pick another with frame_switch (a task switch done in
 * software), and isr_common then pops that one instead.
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
    /* EAX is the frame to resume; the argument slot is dropped with the
       rest of the old stack when it is another frame. */
    movl %eax, %esp
    .globl isr_return
isr_return:
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    /* Drop the vector and error code; IRET needs EIP on top. */
    addl $8, %esp
    iretl

    /*
     * uint32_t run_user_frame(void (*fn)(void), uint32_t user_esp,
     *                         uint32_t eflags)
     *
     * Builds two frames of the isr_common shape. The first describes our
     * own continuation at CPL 0 (label 1 below) on the current stack, the
     * way an interrupt at CPL 0 would have saved it; its address goes to
     * user_kernel_frame, so that SYS_EXIT can resume it with frame_switch.
     * The second sits at the top of the ring-0 stack named by TSS.ESP0 and
     * describes fn at CPL 3; popping it with isr_return ends in an IRET to
     * an outer privilege level, which loads CS, EIP, EFLAGS and then SS:ESP
     * from the stack (SDM Vol. 3A section 6.12.1 and Vol. 2A, IRET).
     */
    .text
    .globl run_user_frame
    .type run_user_frame, @function
run_user_frame:
    pushfl
    pushl %cs
    pushl $1f
    pushl $0                    /* error code */
    pushl $0                    /* vector */
    pushal
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    movl %esp, user_kernel_frame
    /* 17 words of frame and the return address lie above ESP now. */
    movl 72(%esp), %ecx         /* fn */
    movl 76(%esp), %ebx         /* user_esp */
    movl 80(%esp), %eax         /* eflags */
    movl user_tss+4, %esp           /* TSS.ESP0 */
    pushl $0x23                 /* SS = SEL_UDATA */
    pushl %ebx                  /* ESP */
    pushl %eax                  /* EFLAGS */
    pushl $0x1b                 /* CS = SEL_UCODE */
    pushl %ecx                  /* EIP */
    pushl $0
    pushl $0
    /* fn starts with every general register zero, so that nothing from
       the kernel leaks to user mode. */
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    pushal
    pushl $0x23                 /* DS */
    pushl $0x23                 /* ES */
    pushl $0x23                 /* FS */
    pushl $0x23                 /* GS */
    jmp isr_return
1:  /* SYS_EXIT resumed the first frame: EAX holds the exit status. */
    ret
    .size run_user_frame, . - run_user_frame

    /* void frame_resume(struct frame *f): pop f and IRET through it. */
    .globl frame_resume
    .type frame_resume, @function
frame_resume:
    movl 4(%esp), %esp
    jmp isr_return
    .size frame_resume, . - frame_resume

    /* Where fn returns to, at CPL 3: SYS_EXIT with status 0. */
    .globl user_exit_stub
    .type user_exit_stub, @function
user_exit_stub:
    movl $1, %eax               /* SYS_EXIT */
    xorl %ebx, %ebx
    int $0x80
    ud2
    .size user_exit_stub, . - user_exit_stub

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

    /* The library's ring-0 stack for interrupts taken at CPL 3, named by
       TSS.ESP0 (see user_init). */
    .section .bss
    .align 16
    .skip 8192
    .globl kernel_stack_top
kernel_stack_top:

/*
 * Multiboot header and entry point shared by every bt86 guest.
 *
 * The loader (QEMU's -kernel or bt86's Multiboot loader) enters _start in
 * 32-bit protected mode with paging off, EAX = 0x2BADB002 and EBX = the
 * physical address of the Multiboot information structure. The segment
 * registers hold flat segments of the loader's own GDT, and ESP is
 * undefined (Multiboot specification 0.6.96, section 3.2). We clear the
 * .bss, set up our own stack and call guest_entry(magic, info) in C, which
 * installs our GDT and IDT before the guest's kmain runs.
 */

#define MB_MAGIC 0x1BADB002
/* Flags: bit 0 asks for page-aligned modules, bit 1 for the memory map. */
#define MB_FLAGS 0x00000003

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .text.entry, "ax"
    .globl _start
    .type _start, @function
_start:
    /* No interrupts until our own IDT is installed. */
    cli
    /* Keep the Multiboot registers while rep stosb uses EAX, ECX and EDI. */
    movl %eax, %esi
    movl %ebx, %ebp
    /* Zero .bss, which also holds the stack. Loaders should already have
       done it (ELF p_memsz beyond p_filesz), but a guest must not depend on
       that to produce identical output everywhere. */
    cld
    movl $__bss_start, %edi
    movl $_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    /* Our stack grows down from the top of boot_stack. */
    movl $boot_stack_top, %esp
    /* Start from known EFLAGS: only the always-one bit 1 set (SDM Vol. 1
       section 3.4.3), so IF, DF, TF, NT and IOPL are all clear. */
    pushl $0x2
    popfl
    /* guest_entry(magic, info) never returns. */
    pushl %ebp
    pushl %esi
    call guest_entry
1:  cli
    hlt
    jmp 1b
    .size _start, . - _start

    .section .bss
    .align 16
boot_stack:
    .skip 16384
    .globl boot_stack_top
boot_stack_top:

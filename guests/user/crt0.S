/*
 * The start of every user program of the paging guest: a header that
 * tells the kernel's loader where the program's parts are, and the entry
 * point that calls main and passes its result to SYS_EXIT.
 *
 * The kernel enters _start at CPL 3 with ESP at the top of the program's
 * stack and every general register zero. The header must stay the first
 * bytes of the binary (user/link.ld puts .text.header first).
 */
    .section .text.header, "a"
    .long 0x52455355            /* magic: "USER" */
    .long _start                /* entry point */
    .long __data_start          /* the first writable byte: pages below are read-only */
    .long _end                  /* end of .bss: the break starts at the next page */

    .section .text.entry, "ax"
    .globl _start
    .type _start, @function
_start:
    call main
    movl %eax, %ebx             /* the status */
    movl $1, %eax               /* SYS_EXIT */
    int $0x80
    ud2                         /* SYS_EXIT does not return */
    .size _start, . - _start

/*
 * stepper: a short, deterministic stretch of code to single-step.
 *
 * tests/step_qemu.rs sets a hardware breakpoint at step_begin, then
 * single-steps with gdb until step_end, once against QEMU's gdb stub and
 * once against bt86's, and compares the two sequences of EIPs. The stretch
 * is written in assembly so that it holds exactly the kinds of instruction
 * the comparison is about, whatever the compiler does:
 *
 * - IDENT code: moves, arithmetic, cmov, setcc, xchg;
 * - control transfers: direct and indirect calls, returns, a jump table,
 *   conditional branches both taken and not taken, loop and jecxz, a
 *   recursive function, far call, far return and far jump;
 * - callouts: cli, pushf/popf, mov from and to CR0, sgdt/lgdt,
 *   sidt/lidt, sldt/lldt, mov to DS and SS, cpuid, GS overrides (GS is
 *   the monitor's under bt86);
 * - an access to the first page of memory, which the host cannot map and
 *   bt86 emulates;
 * - a software interrupt and a #UD fault, each through the IDT into a C
 *   handler and back with iret.
 *
 * The stretch must take the same path, in the same number of steps, on
 * every machine. So it has interrupts disabled, does no port I/O, never
 * branches on a value that differs between machines (CPUID leaves, what
 * the first page holds), and has no `rep` string instruction. A repeated
 * string instruction can stop between iterations and resume (SDM Vol. 2B,
 * REP/REPE/REPZ/REPNE/REPNZ); hardware single-stepping with TF and QEMU's
 * gdb stub stop after every iteration, while bt86 runs the whole
 * instruction as one step, so the number of steps would differ by design.
 * After step_end, kmain prints what the stretch computed, so that the
 * output after stepping can be compared with QEMU's too.
 */
#include "guest.h"

/* Written by the stretch: a checksum of what it computed. */
uint32_t step_sum;
/* How many times each handler ran. */
static volatile uint32_t soft_ints, invalid_opcodes;

/* The operand of sgdt/lgdt and sidt/lidt: a 16-bit limit and a 32-bit
 * base (SDM Vol. 3A section 3.5.1, figure 3-11). */
uint8_t step_dtr[8];
/* The source and the destination of the stretch's repeated string
 * instructions. */
char step_src[8] = "abcdefg";
char step_dst[8];

__asm__(
    "    .text\n"
    "    .globl step_begin, step_end, step_path\n"
    "    .type step_path, @function\n"
    /* void step_path(void): runs the stretch once and returns. */
    "step_path:\n"
    "    pushl %ebx\n"
    "    pushl %esi\n"
    "    pushl %edi\n"
    "    pushl %ebp\n"
    "step_begin:\n"
    /* Privileged and sensitive instructions, each a callout under bt86. */
    "    cli\n"
    "    pushfl\n"
    "    popfl\n"
    "    movl %cr0, %eax\n"
    "    movl %eax, %cr0\n"
    "    sgdt step_dtr\n"
    "    lgdt step_dtr\n"
    "    sidt step_dtr\n"
    "    lidt step_dtr\n"
    "    sldt %ax\n"
    "    lldt %ax\n"
    "    movw %ds, %ax\n"
    "    movw %ax, %ds\n"
    "    movw %ss, %ax\n"
    "    movw %ax, %ss\n"
    "    xorl %eax, %eax\n"
    "    cpuid\n"
    /* Repeated string instructions: single-stepping stops after every
       iteration, with EIP still at the instruction (SDM Vol. 3A section
       17.3.1.4). */
    "    cld\n"
    "    movl $step_src, %esi\n"
    "    movl $step_dst, %edi\n"
    "    movl $3, %ecx\n"
    "    rep movsb\n"
    "    movl $step_src, %edi\n"
    "    movb $'c', %al\n"
    "    movl $8, %ecx\n"
    "    repne scasb\n"
    /* A far jump and a far call to the same code segment. */
    "    ljmp $0x08, $1f\n"
    "1:  lcall $0x08, $step_far\n"
    /* The first page of memory: the host keeps it unmapped, so under bt86
       this load faults natively and is emulated. */
    "    movl 0x400, %eax\n"
    /* GS overrides and a push/pop of GS: the guest's GS is virtual. */
    "    movl $step_sum, %ebx\n"
    "    movl $0, %gs:(%ebx)\n"
    "    pushl %gs\n"
    "    popl %gs\n"
    /* The main loop, six times: EDI counts down, EBP sums. */
    "    movl $6, %edi\n"
    "    xorl %ebp, %ebp\n"
    "2:  movl %edi, %eax\n"
    "    call step_square\n"
    "    addl %eax, %ebp\n"
    /* Odd and even rounds take different branches. */
    "    testl $1, %edi\n"
    "    jz 3f\n"
    "    leal step_double, %edx\n"
    "    call *%edx\n"
    "    jmp 4f\n"
    "3:  movl %edi, %eax\n"
    "    call *step_calls\n"
    "4:  addl %eax, %ebp\n"
    /* A jump table indexed by EDI mod 3. */
    "    movl %edi, %eax\n"
    "    xorl %edx, %edx\n"
    "    movl $3, %ecx\n"
    "    divl %ecx\n"
    "    jmp *step_table(,%edx,4)\n"
    "5:  addl $100, %ebp\n"
    "    jmp 8f\n"
    "6:  addl $200, %ebp\n"
    "    jmp 8f\n"
    "7:  addl $300, %ebp\n"
    "8:  decl %edi\n"
    "    jnz 2b\n"
    /* loop and jecxz: LOOP branches while ECX is not zero after its
       decrement, JECXZ when ECX is zero. */
    "    movl $3, %ecx\n"
    "9:  incl %ebp\n"
    "    loop 9b\n"
    "    jecxz 10f\n"
    "    addl $1000, %ebp\n"
    "10: movl $5, %eax\n"
    "    call step_fib\n"
    "    addl %eax, %ebp\n"
    /* cmov, setcc and xchg are IDENT. */
    "    cmpl $1000, %ebp\n"
    "    movl $1, %eax\n"
    "    cmovbl %ebp, %eax\n"
    "    setae %cl\n"
    "    movzbl %cl, %ecx\n"
    "    xchgl %eax, %ecx\n"
    "    addl %ecx, %ebp\n"
    /* A software interrupt and an invalid opcode, both through the IDT. */
    "    int $0x40\n"
    "    ud2\n"
    "    movl %ebp, step_sum\n"
    "step_end:\n"
    "    popl %ebp\n"
    "    popl %edi\n"
    "    popl %esi\n"
    "    popl %ebx\n"
    "    ret\n"
    "    .size step_path, . - step_path\n"
    "\n"
    /* EAX = EAX * EAX. */
    "step_square:\n"
    "    imull %eax, %eax\n"
    "    ret\n"
    /* EAX = EDI * 2. */
    "step_double:\n"
    "    leal (%edi,%edi), %eax\n"
    "    ret\n"
    /* EAX = EAX + 7. */
    "step_plus7:\n"
    "    addl $7, %eax\n"
    "    ret\n"
    /* EAX = fib(EAX), recursively: calls and returns nested five deep. */
    "step_fib:\n"
    "    cmpl $2, %eax\n"
    "    jb 1f\n"
    "    pushl %eax\n"
    "    decl %eax\n"
    "    call step_fib\n"
    "    xchgl %eax, (%esp)\n"
    "    subl $2, %eax\n"
    "    call step_fib\n"
    "    popl %ecx\n"
    "    addl %ecx, %eax\n"
    "1:  ret\n"
    /* Reached by a far call: returns with a far return. */
    "step_far:\n"
    "    movl %cs, %eax\n"
    "    lret\n"
    "\n"
    "    .section .rodata\n"
    "    .align 4\n"
    "step_table:\n"
    "    .long 5b, 6b, 7b\n"
    "step_calls:\n"
    "    .long step_plus7\n"
    "    .text\n");

void step_path(void);

/* Vector 0x40: counts, and returns to the instruction after `int`. */
static void on_soft_int(struct frame *f)
{
    (void)f;
    soft_ints++;
}

/* #UD: skips the two bytes of the ud2 that raised it (a fault, so the
 * saved EIP points at the faulting instruction; SDM Vol. 3A section 6.5). */
static void on_invalid_opcode(struct frame *f)
{
    invalid_opcodes++;
    f->eip += 2;
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    set_handler(0x40, on_soft_int);
    set_handler(6, on_invalid_opcode);
    step_path();
    printf("stepper: sum %u, software interrupts %u, invalid opcodes %u\n", step_sum, soft_ints,
           invalid_opcodes);
    return EXIT_PASS;
}

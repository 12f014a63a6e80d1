/*
 * multitask: a small preemptive kernel with three tasks at ring 3.
 *
 * The kernel runs at CPL 0 with interrupts off. Each task has a ring-0
 * stack and a ring-3 stack. A task enters the kernel through an interrupt
 * (the timer, int 0x80 or an exception), whose frame the CPU and isr_common
 * leave on the task's ring-0 stack; switching tasks means resuming another
 * task's saved frame and pointing TSS.ESP0 at that task's ring-0 stack,
 * with no hardware task switch (SDM Vol. 3A section 8.2.1: the TSS only
 * supplies SS0:ESP0 here). IRQ 0 at 100 Hz preempts whichever task runs,
 * round-robin. System calls come through int 0x80 (write, yield, exit, and
 * the print token below) and through sysenter (write and the token; a
 * sysenter call never switches tasks, because it leaves no frame to
 * resume). Task C executes cli at CPL 3; the #GP(0) kills it and the others
 * go on.
 *
 * The output must be the same under QEMU and bt86, although how often the
 * timer preempts a task depends on the speed of the machine. So the tasks
 * print only while they hold a print token that the kernel passes from task
 * to task in a fixed order, each line says only what the task computed, and
 * the tick and preemption counts are reduced to "> 0: yes" at the end.
 * The amount of work per step is `work=N` on the command line (default 1).
 */
#include "guest.h"

#define NTASKS 3
#define STEPS 4
#define VEC_IRQ0 0x20
#define SYS_TURN 300 /* 1 if the caller holds the print token */
#define SYS_PASS 301 /* hand the print token to the next live task */

struct task {
    const char *name;
    void (*entry)(void);
    int alive;
    struct frame *frame; /* where the task resumes, while it is not running */
    uint8_t kstack[4096] __attribute__((aligned(16)));
    uint8_t ustack[8192] __attribute__((aligned(16)));
};

static struct task tasks[NTASKS];
static uint32_t current;    /* the running task */
static uint32_t token;      /* the task allowed to print */
volatile uint32_t ticks;    /* read by the tasks too: paging is off */
static uint32_t preemptions, int80_writes, sysenter_writes;
static uint32_t work = 1;
static uint8_t sysenter_stack[1024] __attribute__((aligned(16)));

/* ---------------------------------------------------------------------
 * The kernel.
 * ------------------------------------------------------------------- */
static uint32_t kstack_top(const struct task *t) { return (uint32_t)(t->kstack + sizeof(t->kstack)); }

/* The first live task after `from` in round-robin order, `from` itself
 * last; -1 when none is alive. */
static int next_alive(uint32_t from)
{
    for (uint32_t i = 1; i <= NTASKS; i++) {
        uint32_t j = (from + i) % NTASKS;
        if (tasks[j].alive)
            return (int)j;
    }
    return -1;
}

static void NORETURN finish(void)
{
    printf("kernel: every task has ended; writes through int 0x80: %u, through sysenter: %u\n", int80_writes,
           sysenter_writes);
    printf("kernel: timer ticks > 0: %s, preemptions > 0: %s\n", ticks ? "yes" : "no", preemptions ? "yes" : "no");
    printf("multitask: done\n");
    exit(EXIT_PASS);
}

/* Leaves the current task (saving its frame, unless it has died) and
 * resumes the next live one when the handler returns. */
static void schedule(struct frame *f)
{
    if (f)
        tasks[current].frame = f;
    int next = next_alive(current);
    if (next < 0)
        finish();
    current = (uint32_t)next;
    /* The next interrupt from ring 3 must push its frame on this task's
     * own ring-0 stack (SDM Vol. 3A section 6.12.1). */
    user_tss.esp0 = kstack_top(&tasks[current]);
    frame_switch(tasks[current].frame);
}

static void pass_token(void)
{
    int next = next_alive(token);
    if (next >= 0)
        token = (uint32_t)next;
}

static void end_task(void)
{
    tasks[current].alive = 0;
    if (token == current)
        pass_token();
    schedule(NULL);
}

static void on_timer(struct frame *f)
{
    ticks++;
    pic_eoi(0);
    /* The kernel itself is never preempted: its handlers run with IF
     * clear, so a tick that falls due meanwhile is taken right after the
     * IRET to ring 3. A frame with RPL 0 in CS can therefore only come
     * from the few instructions between sti and sysexit below. */
    if ((f->cs & 3) != 3)
        return;
    int next = next_alive(current);
    if (next >= 0 && (uint32_t)next != current) {
        preemptions++;
        schedule(f);
    }
}

static void on_syscall(struct frame *f)
{
    switch (f->eax) {
    case SYS_WRITE:
        int80_writes++;
        sys_write(f);
        break;
    case SYS_YIELD:
        f->eax = 0;
        schedule(f);
        break;
    case SYS_EXIT:
        end_task();
        break;
    case SYS_TURN:
        f->eax = token == current;
        break;
    case SYS_PASS:
        pass_token();
        f->eax = 0;
        break;
    default:
        f->eax = (uint32_t)-1;
        break;
    }
}

static void on_exception(struct frame *f)
{
    if ((f->cs & 3) == 0) {
        puts("kernel: exception in the kernel: ");
        print_exception(f->vector, f->error);
        printf(" eip=%p\n", (void *)f->eip);
        exit(EXIT_FAIL);
    }
    /* The task holds the token when it faults (it faults on purpose right
     * after printing), so this line is in order too. */
    printf("task %s killed: ", tasks[current].name);
    print_exception(f->vector, f->error);
    printf(" at entry+%u\n", f->eip - (uint32_t)tasks[current].entry);
    end_task();
}

/* sysenter arrives here on the sysenter stack at CPL 0 with IF clear (SDM
 * Vol. 2B, SYSENTER): EAX is the call number, EBX and ESI its arguments,
 * ECX and EDX the ESP and EIP sysexit returns to. */
void sysenter_entry(void);
uint32_t sysenter_call(uint32_t n, uint32_t a, uint32_t b);
__asm__(".text\n"
        ".globl sysenter_entry\n"
        "sysenter_entry:\n\t"
        "pushl %ecx\n\t"
        "pushl %edx\n\t"
        "pushl %esi\n\t"
        "pushl %ebx\n\t"
        "pushl %eax\n\t"
        "call sysenter_call\n\t"
        "addl $4, %esp\n\t"
        "popl %ebx\n\t"
        "popl %esi\n\t"
        "popl %edx\n\t"
        "popl %ecx\n\t"
        /* Tasks run with IF set. An interrupt is recognised only after
         * the instruction that follows sti (SDM Vol. 2B, STI), so no tick
         * can arrive on the sysenter stack before sysexit leaves it. */
        "sti\n\t"
        "sysexit\n");

uint32_t sysenter_call(uint32_t n, uint32_t a, uint32_t b)
{
    switch (n) {
    case SYS_WRITE:
        sysenter_writes++;
        console_write((const char *)a, b > SYS_WRITE_MAX ? SYS_WRITE_MAX : b);
        return b;
    case SYS_TURN:
        return token == current;
    case SYS_PASS:
        pass_token();
        return 0;
    default:
        return (uint32_t)-1;
    }
}

/* ---------------------------------------------------------------------
 * The tasks, at CPL 3.
 * ------------------------------------------------------------------- */
static uint32_t int80(uint32_t n, uint32_t b)
{
    __asm__ volatile("int $0x80" : "+a"(n) : "b"(b) : "memory");
    return n;
}

static uint32_t fast_call(uint32_t n, uint32_t a, uint32_t b)
{
    __asm__ volatile("movl %%esp, %%ecx\n\t"
                     "movl $1f, %%edx\n\t"
                     "sysenter\n"
                     "1:"
                     : "+a"(n)
                     : "b"(a), "S"(b)
                     : "ecx", "edx", "memory");
    return n;
}

/* Waits for the print token, yielding the processor meanwhile. */
static void await_token(int use_sysenter)
{
    while (!(use_sysenter ? fast_call(SYS_TURN, 0, 0) : int80(SYS_TURN, 0)))
        int80(SYS_YIELD, 0);
}

/* Spins until the timer has ticked twice, so that at least one tick is
 * taken while a task runs at ring 3 and preempts it. */
static void await_ticks(uint32_t n)
{
    uint32_t start = ticks;
    while (ticks - start < n)
        ;
}

static uint32_t crc32_step(uint32_t crc, uint32_t seed)
{
    for (uint32_t i = 0; i < 4096 * work; i++) {
        crc ^= (seed * 2654435761u + i) & 0xFF;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
    }
    return crc;
}

static void task_a(void)
{
    uint32_t crc = 0xFFFFFFFF;
    await_ticks(2);
    for (uint32_t step = 1; step <= STEPS; step++) {
        crc = crc32_step(crc, step);
        await_token(0);
        printf("task A step %u: crc32 0x%08x (int 0x80)\n", step, ~crc);
        int80(SYS_PASS, 0);
    }
    await_token(0);
    printf("task A: done\n");
    int80(SYS_EXIT, 0);
}

static uint32_t primes_below(uint32_t n)
{
    uint32_t count = 0;
    for (uint32_t i = 2; i < n; i++) {
        uint32_t d = 2;
        while (d * d <= i && i % d)
            d++;
        count += d * d > i;
    }
    return count;
}

static void task_b(void)
{
    char line[64];
    for (uint32_t step = 1; step <= STEPS; step++) {
        uint32_t n = 2000 * step * work;
        uint32_t primes = primes_below(n);
        await_token(1);
        size_t len = snprintf(line, sizeof(line), "task B step %u: %u primes below %u (sysenter)\n", step, primes, n);
        fast_call(SYS_WRITE, (uint32_t)line, len);
        fast_call(SYS_PASS, 0, 0);
    }
    await_token(1);
    static const char done[] = "task B: done\n";
    fast_call(SYS_WRITE, (uint32_t)done, sizeof(done) - 1);
    /* Returning ends up in user_exit_stub: SYS_EXIT through int 0x80. */
}

static void task_c(void)
{
    uint32_t a = 0, b = 1;
    for (uint32_t step = 1;; step++) {
        for (uint32_t i = 0; i < 10000 * work; i++) {
            uint32_t t = a + b;
            a = b;
            b = t;
        }
        await_token(0);
        if (step == 3) {
            printf("task C step 3: executing cli at CPL 3\n");
            cli();
        }
        printf("task C step %u: fibonacci mod 2^32 0x%08x (int 0x80)\n", step, a);
        int80(SYS_PASS, 0);
    }
}

static void task_init(struct task *t, const char *name, void (*entry)(void))
{
    t->name = name;
    t->entry = entry;
    t->alive = 1;
    uint32_t *usp = (uint32_t *)(t->ustack + sizeof(t->ustack));
    *--usp = (uint32_t)user_exit_stub;
    /* The first frame of a task, as if an interrupt had stopped it at its
     * first instruction: IRET will enter ring 3 with IF set. */
    struct frame *f = (struct frame *)(kstack_top(t) - sizeof(struct frame));
    memset(f, 0, sizeof(*f));
    f->ds = f->es = f->fs = f->gs = SEL_UDATA;
    f->eip = (uint32_t)entry;
    f->cs = SEL_UCODE;
    f->eflags = EFLAGS_IF | 0x2;
    f->esp = (uint32_t)usp;
    f->ss = SEL_UDATA;
    t->frame = f;
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    const char *cmdline = (info->flags & MBI_CMDLINE) ? (const char *)info->cmdline : NULL;
    work = cmdline_number(cmdline, "work", 1);
    if (work == 0)
        work = 1;

    task_init(&tasks[0], "A", task_a);
    task_init(&tasks[1], "B", task_b);
    task_init(&tasks[2], "C", task_c);

    user_init(kstack_top(&tasks[0]));
    /* An interrupt gate, so that the kernel runs with IF clear whichever
     * way it was entered. */
    idt_set_access(0x80, ACC_INT_GATE | ACC_DPL3);
    set_handler(0x80, on_syscall);
    for (int v = 0; v < 32; v++)
        set_handler((uint8_t)v, on_exception);
    wrmsr(MSR_SYSENTER_CS, SEL_CODE);
    wrmsr(MSR_SYSENTER_ESP, (uint32_t)(sysenter_stack + sizeof(sysenter_stack)));
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry);

    pic_remap(VEC_IRQ0, 0x28);
    set_handler(VEC_IRQ0, on_timer);
    pit_set_rate(100);
    pic_set_mask((uint16_t)~1u);

    printf("multitask: %u tasks at ring 3, preempted by IRQ 0 at 100 Hz, %u steps each, work=%u\n", NTASKS, STEPS,
           work);
    current = 0;
    token = 0;
    frame_resume(tasks[0].frame);
}

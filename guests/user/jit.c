/*
 * jit: a tiny just-in-time compiler, run by the paging guest at CPL 3.
 *
 * It takes a page from its heap (the kernel maps it on the first write,
 * through a page fault), writes x86 machine code for a polynomial into it
 * and calls it; then writes code for another polynomial over the first
 * and calls that; then code for a loop, whose multiplier it patches in
 * place between calls. Every call must run the code that is in the page
 * at that moment: a monitor that caches translations of guest code has to
 * notice each of these writes (self-modifying code).
 *
 * It prints each result; the test recomputes them.
 */
#include "ulib.h"

typedef uint32_t (*jit_fn)(uint32_t);

struct emitter {
    uint8_t *p;
};

static void emit8(struct emitter *e, uint8_t b) { *e->p++ = b; }

static void emit32(struct emitter *e, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        emit8(e, (uint8_t)(v >> (8 * i)));
}

/* Compiles p(x) = c[0] x^(n-1) + ... + c[n-1] by Horner's rule into a
 * cdecl function of x:
 *     mov ecx, [esp+4]        8B 4C 24 04
 *     mov eax, c[0]           B8 imm32
 *     imul eax, ecx           0F AF C1      (for each further c[i])
 *     add eax, c[i]           05 imm32
 *     ret                     C3
 */
static void compile_polynomial(uint8_t *code, const int32_t *c, int n)
{
    struct emitter e = { code };
    emit8(&e, 0x8B), emit8(&e, 0x4C), emit8(&e, 0x24), emit8(&e, 0x04);
    emit8(&e, 0xB8), emit32(&e, (uint32_t)c[0]);
    for (int i = 1; i < n; i++) {
        emit8(&e, 0x0F), emit8(&e, 0xAF), emit8(&e, 0xC1);
        emit8(&e, 0x05), emit32(&e, (uint32_t)c[i]);
    }
    emit8(&e, 0xC3);
}

/* Compiles sum(k * i for i = 1..n) as a loop with k built in, and returns
 * the offset of k's immediate so that it can be patched:
 *     xor eax, eax            31 C0
 *     mov ecx, [esp+4]        8B 4C 24 04
 *     test ecx, ecx           85 C9
 *     jz done                 74 0A
 * top:
 *     imul edx, ecx, k        69 D1 imm32
 *     add eax, edx            01 D0
 *     loop top                E2 F6
 * done:
 *     ret                     C3
 */
static uint32_t compile_sum_loop(uint8_t *code, uint32_t k)
{
    struct emitter e = { code };
    emit8(&e, 0x31), emit8(&e, 0xC0);
    emit8(&e, 0x8B), emit8(&e, 0x4C), emit8(&e, 0x24), emit8(&e, 0x04);
    emit8(&e, 0x85), emit8(&e, 0xC9);
    emit8(&e, 0x74), emit8(&e, 0x0A);
    emit8(&e, 0x69), emit8(&e, 0xD1);
    uint32_t imm = (uint32_t)(e.p - code);
    emit32(&e, k);
    emit8(&e, 0x01), emit8(&e, 0xD0);
    emit8(&e, 0xE2), emit8(&e, 0xF6);
    emit8(&e, 0xC3);
    return imm;
}

static void show_polynomial(const char *name, uint8_t *code)
{
    jit_fn f = (jit_fn)code;
    printf("jit: %s at x = 0..5:", name);
    for (uint32_t x = 0; x <= 5; x++)
        printf(" %d", (int32_t)f(x));
    printf("\n");
}

static void show_loop(uint32_t k, uint8_t *code)
{
    jit_fn f = (jit_fn)code;
    printf("jit: sum of %u*i for i = 1..n at n = 0..5:", k);
    for (uint32_t n = 0; n <= 5; n++)
        printf(" %u", f(n));
    printf("\n");
}

int main(void)
{
    uint8_t *code = sbrk(PAGE_SIZE);
    if (code == (uint8_t *)-1) {
        printf("jit: no memory\n");
        return 1;
    }
    static const int32_t p1[] = { 3, 2, 1 };
    compile_polynomial(code, p1, 3);
    show_polynomial("3x^2 + 2x + 1", code);
    yield();

    static const int32_t p2[] = { 1, 0, -4, 7 };
    compile_polynomial(code, p2, 4);
    show_polynomial("x^3 - 4x + 7 (compiled over the first)", code);
    yield();

    uint32_t imm = compile_sum_loop(code, 7);
    show_loop(7, code);
    for (uint32_t k = 11; k <= 13; k++) {
        /* Patch only the immediate of the imul and run the loop again. */
        for (int i = 0; i < 4; i++)
            code[imm + i] = (uint8_t)(k >> (8 * i));
        show_loop(k, code);
    }
    printf("jit: done\n");
    return 0;
}

/*
 * Two-level 32-bit paging for the guests that turn CR0.PG on: the bits of
 * page-directory and page-table entries, the instructions that manage the
 * TLB, and a small allocator of 4 KiB physical frames.
 *
 * Everything here follows SDM Vol. 3A chapter 4 ("Paging"), section 4.3
 * ("32-bit paging"): CR3 holds the physical address of a page directory of
 * 1024 entries; a PDE either maps a 4 MiB page (PS = 1, with CR4.PSE set)
 * or points to a page table of 1024 PTEs that map 4 KiB pages. The header
 * owns no memory and no state of its own: each guest decides where its
 * page tables and frames live, and must identity-map its frame pool so
 * that the allocator can reach the frames it hands out.
 */
#ifndef BT86_PAGING_H
#define BT86_PAGING_H

#include "guest.h"

#define PAGE_SIZE 4096u
#define PAGE_MASK 0xFFFFF000u
#define LARGE_PAGE_SIZE 0x00400000u /* a 4 MiB page of a PDE with PS = 1 */
#define LARGE_PAGE_MASK 0xFFC00000u

/* Flags of PDEs and PTEs (SDM Vol. 3A section 4.3, tables 4-4 to 4-6). */
#define PG_P 0x001u   /* present */
#define PG_RW 0x002u  /* writable */
#define PG_US 0x004u  /* user-mode accesses allowed */
#define PG_PWT 0x008u /* page-level write-through */
#define PG_PCD 0x010u /* page-level cache disable */
#define PG_A 0x020u   /* accessed: set by the processor on any access */
#define PG_D 0x040u   /* dirty: set by the processor on a write (pages only) */
#define PG_PS 0x080u  /* in a PDE: this entry maps a 4 MiB page */
#define PG_G 0x100u   /* global (with CR4.PGE) */
#define PG_FLAGS 0xFFFu

/* The error code of a page fault (SDM Vol. 3A section 4.7, figure 4-12):
 * P = 0 for a not-present page, 1 for a protection violation; W/R = 1 for
 * a write; U/S = 1 when the access came from CPL 3. */
#define PF_P 0x1u
#define PF_W 0x2u
#define PF_U 0x4u

#define CR4_PGE (1u << 7)

typedef uint32_t pde_t;
typedef uint32_t pte_t;

static inline uint32_t pde_index(uint32_t linear) { return linear >> 22; }
static inline uint32_t pte_index(uint32_t linear) { return (linear >> 12) & 0x3FFu; }

/* Invalidates the TLB entries (and paging-structure caches) for the page
 * that holds `linear` (SDM Vol. 2A, INVLPG; Vol. 3A section 4.10.4.1). */
static inline void invlpg(uint32_t linear) { __asm__ volatile("invlpg (%0)" ::"r"(linear) : "memory"); }

/* Writing CR3 invalidates every TLB entry that is not global (SDM Vol. 3A
 * section 4.10.4.1). */
static inline void flush_tlb(void) { write_cr3(read_cr3()); }

/* Turns on paging with the page directory at physical address `pd`:
 * CR4.PSE first so that 4 MiB PDEs are valid from the first translation,
 * then CR3, then CR0.PG (SDM Vol. 3A section 4.1.2). The code that runs
 * this must be identity-mapped, because the next instruction is fetched
 * through the new translation. */
static inline void paging_enable(uint32_t pd)
{
    write_cr4(read_cr4() | CR4_PSE);
    write_cr3(pd);
    write_cr0(read_cr0() | CR0_PG);
}

/* ---------------------------------------------------------------------
 * A frame allocator: a bump pointer over [next, end) and a free list
 * threaded through the free frames themselves (the first word of a free
 * frame holds the address of the next one). Frames are handed out zeroed.
 * The pool must be identity-mapped (linear = physical) while paging is
 * on, because the allocator writes into the frames.
 * ------------------------------------------------------------------- */
struct frame_pool {
    uint32_t next;  /* the first frame never handed out */
    uint32_t end;   /* the end of the pool */
    uint32_t free;  /* the most recently freed frame, or 0 */
    uint32_t inuse; /* frames handed out and not freed */
};

static inline void frame_pool_init(struct frame_pool *p, uint32_t start, uint32_t end)
{
    p->next = start;
    p->end = end;
    p->free = 0;
    p->inuse = 0;
}

/* Returns a zeroed frame, or 0 when the pool is exhausted. */
static inline uint32_t frame_alloc(struct frame_pool *p)
{
    uint32_t f;
    if (p->free) {
        f = p->free;
        p->free = *(volatile uint32_t *)f;
    } else if (p->next < p->end) {
        f = p->next;
        p->next += PAGE_SIZE;
    } else {
        return 0;
    }
    p->inuse++;
    memset((void *)f, 0, PAGE_SIZE);
    return f;
}

static inline void frame_free(struct frame_pool *p, uint32_t f)
{
    *(volatile uint32_t *)f = p->free;
    p->free = f;
    p->inuse--;
}

#endif

//! The virtual CPU model that `cpuid` reports.
//!
//! bt86 presents a processor of its own, not the host's: the guest must see
//! only features the virtual CPU really provides, whatever the host has
//! (a guest that found AVX or PAE advertised would use them, and bt86
//! neither saves AVX state nor walks PAE page tables). The model is a
//! family-6, Pentium III-class 32-bit CPU: FPU, PSE, TSC, MSR, CX8, SEP,
//! CMOV, MMX, FXSR, SSE and SSE2, and nothing else (no PAE, VME, PGE or
//! APIC until they are emulated). Leaf layouts follow Intel SDM Vol. 2A,
//! CPUID. This module owns those values and nothing else; it reads no CPU
//! state, so the answer never depends on the host.

/// The four registers `cpuid` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The vendor string of leaf 0: 12 bytes, obviously not a real vendor's.
pub const VENDOR: &[u8; 12] = b"bt86 virtual";

/// The hypervisor signature of leaf 0x4000_0000, as KVM and VMware
/// publish theirs, so a guest can tell it runs on bt86.
pub const HYPERVISOR_SIGNATURE: &[u8; 12] = b"bt86bt86bt86";

/// The brand string of leaves 0x8000_0002-0x8000_0004 (at most 47 bytes;
/// the rest is NUL-padded).
pub const BRAND: &str = "bt86 virtual CPU (binary translation) family 6";

/// The highest basic leaf. Leaf 2 and above (cache descriptors, topology)
/// are not modelled.
pub const MAX_BASIC_LEAF: u32 = 1;
/// The highest extended leaf: the brand string.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0004;
/// The hypervisor leaves.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;

/// Leaf 1 EAX: stepping 1, model 0xF, family 6, type 0 (SDM Vol. 2A
/// Figure 3-6). Family 6 is what a stock i686 kernel expects.
pub const SIGNATURE: u32 = (6 << 8) | (0xF << 4) | 1;

/// Leaf 1 EDX feature bits (SDM Vol. 2A Table 3-11).
pub mod edx {
    pub const FPU: u32 = 1 << 0;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const CX8: u32 = 1 << 8;
    pub const SEP: u32 = 1 << 11;
    pub const CMOV: u32 = 1 << 15;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
    /// Everything the virtual CPU provides.
    pub const ALL: u32 = FPU | PSE | TSC | MSR | CX8 | SEP | CMOV | MMX | FXSR | SSE | SSE2;
}

/// Leaf 1 ECX bit 31: "a hypervisor is present", reserved for that use
/// by Intel and AMD.
pub const ECX_HYPERVISOR: u32 = 1 << 31;

/// Packs 12 ASCII bytes into three registers, low byte first.
fn pack12(s: &[u8; 12]) -> [u32; 3] {
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    [word(0), word(4), word(8)]
}

/// Sixteen bytes of the NUL-padded brand string, as EAX..EDX.
fn brand_part(part: usize) -> CpuidResult {
    let mut bytes = [0u8; 48];
    let brand = BRAND.as_bytes();
    let n = brand.len().min(47);
    bytes[..n].copy_from_slice(&brand[..n]);
    let chunk = &bytes[part * 16..part * 16 + 16];
    let word = |i: usize| u32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
    CpuidResult { eax: word(0), ebx: word(4), ecx: word(8), edx: word(12) }
}

/// What `cpuid` returns for `leaf` (EAX) and `subleaf` (ECX). No leaf of
/// this model has subleaves, so `subleaf` is ignored.
///
/// A leaf beyond the maximum returns the highest basic leaf's values, as
/// Intel processors do (SDM Vol. 2A CPUID: "If a value entered for
/// CPUID.EAX is higher than the maximum input value for basic or extended
/// function ... the data for the highest basic information leaf is
/// returned").
pub fn cpuid(leaf: u32, _subleaf: u32) -> CpuidResult {
    match leaf {
        0 => {
            // The vendor string is in EBX, EDX, ECX order.
            let [b, d, c] = pack12(VENDOR);
            CpuidResult { eax: MAX_BASIC_LEAF, ebx: b, ecx: c, edx: d }
        }
        1 => CpuidResult {
            eax: SIGNATURE,
            // Brand index 0, no CLFLUSH line size (no CLFSH), one logical
            // processor, initial APIC ID 0.
            ebx: 1 << 16,
            ecx: ECX_HYPERVISOR,
            edx: edx::ALL,
        },
        HYPERVISOR_LEAF => {
            let [b, c, d] = pack12(HYPERVISOR_SIGNATURE);
            CpuidResult { eax: HYPERVISOR_LEAF, ebx: b, ecx: c, edx: d }
        }
        0x4000_0001..=0x4000_00FF => CpuidResult::default(),
        0x8000_0000 => CpuidResult { eax: MAX_EXTENDED_LEAF, ..CpuidResult::default() },
        // No extended features: no NX, no long mode, no SYSCALL.
        0x8000_0001 => CpuidResult::default(),
        0x8000_0002..=0x8000_0004 => brand_part((leaf - 0x8000_0002) as usize),
        _ => cpuid(MAX_BASIC_LEAF, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_of(words: &[u32]) -> String {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string()
    }

    #[test]
    fn vendor_and_hypervisor_signatures() {
        let r = cpuid(0, 0);
        assert_eq!(string_of(&[r.ebx, r.edx, r.ecx]), "bt86 virtual");
        assert_eq!(r.eax, MAX_BASIC_LEAF);
        let h = cpuid(0x4000_0000, 0);
        assert_eq!(string_of(&[h.ebx, h.ecx, h.edx]), "bt86bt86bt86");
    }

    #[test]
    fn features_are_exactly_the_model() {
        let r = cpuid(1, 0);
        assert_eq!((r.eax >> 8) & 0xF, 6, "family 6");
        // (bit, name, present?)
        let cases = [
            (0, "FPU", true), (1, "VME", false), (3, "PSE", true), (4, "TSC", true),
            (5, "MSR", true), (6, "PAE", false), (8, "CX8", true), (9, "APIC", false),
            (11, "SEP", true), (13, "PGE", false), (15, "CMOV", true), (19, "CLFSH", false),
            (23, "MMX", true), (24, "FXSR", true), (25, "SSE", true), (26, "SSE2", true),
            (28, "HTT", false),
        ];
        for (bit, name, present) in cases {
            assert_eq!(r.edx & (1 << bit) != 0, present, "EDX.{name}");
        }
        assert_eq!(r.ecx, ECX_HYPERVISOR, "only the hypervisor bit in ECX");
    }

    #[test]
    fn brand_string() {
        let parts: Vec<u32> = (0x8000_0002..=0x8000_0004u32)
            .flat_map(|l| {
                let r = cpuid(l, 0);
                [r.eax, r.ebx, r.ecx, r.edx]
            })
            .collect();
        assert_eq!(string_of(&parts), BRAND);
        assert!(string_of(&parts).starts_with("bt86 virtual CPU"));
        assert_eq!(cpuid(0x8000_0000, 0).eax, 0x8000_0004);
    }

    #[test]
    fn out_of_range_leaves_return_the_highest_basic_leaf() {
        for leaf in [2, 7, 0x0D, 0x1F, 0x8000_0005, 0x8000_0008, 0xFFFF_FFFF] {
            assert_eq!(cpuid(leaf, 0), cpuid(MAX_BASIC_LEAF, 0), "leaf {leaf:#x}");
        }
    }
}

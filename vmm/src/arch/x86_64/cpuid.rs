//! The CPUID each vCPU sees.
//!
//! Policy: start from what KVM says it supports (`KVM_GET_SUPPORTED_CPUID`),
//! then
//! - give each vCPU its own APIC id (leaves 0x1, 0xb, 0x1f) and the vCPU
//!   count (leaf 0x1 logical count, HTT flag);
//! - set the hypervisor-present bit (leaf 0x1 ECX bit 31);
//! - on a nested PVM host, hide the features its instruction emulator cannot
//!   execute while the guest kernel runs with interrupts off: POPCNT, XSAVE
//!   and everything built on it (AVX, AVX2, AVX-512, FMA, F16C, leaf 0xd),
//!   SMEP/SMAP (CLAC/STAC), BMI1/BMI2, LZCNT. A guest told these are absent
//!   never executes them.
//!
//! The result is a pure function of KVM's list, the vCPU index and count, and
//! the host kind, so it is reproducible and unit-tested.

use kvm_bindings::kvm_cpuid_entry2;

/// Which host quirks to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// Hide what the nested PVM hypervisor's emulator lacks.
    pub nested_pvm: bool,
}

const LEAF1_ECX_FMA: u32 = 1 << 12;
const LEAF1_ECX_POPCNT: u32 = 1 << 23;
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_AVX: u32 = 1 << 28;
const LEAF1_ECX_F16C: u32 = 1 << 29;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEAF7_EBX_BMI1: u32 = 1 << 3;
const LEAF7_EBX_AVX2: u32 = 1 << 5;
const LEAF7_EBX_SMEP: u32 = 1 << 7;
const LEAF7_EBX_BMI2: u32 = 1 << 8;
const LEAF7_EBX_SMAP: u32 = 1 << 20;
/// AVX512F, DQ, IFMA, PF, ER, CD, BW, VL.
const LEAF7_EBX_AVX512: u32 =
    (1 << 16) | (1 << 17) | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31);
/// AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ; also VAES and VPCLMULQDQ.
const LEAF7_ECX_AVX_FAMILY: u32 =
    (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
const EXT1_ECX_LZCNT: u32 = 1 << 5;

/// Adjusts KVM's supported entries for vCPU `index` of `count`.
pub fn apply(entries: &mut [kvm_cpuid_entry2], index: u8, count: u8, policy: CpuidPolicy) {
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(count) << 16) | (u32::from(index) << 24);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                }
                if policy.nested_pvm {
                    e.ecx &= !(LEAF1_ECX_POPCNT
                        | LEAF1_ECX_XSAVE
                        | LEAF1_ECX_OSXSAVE
                        | LEAF1_ECX_AVX
                        | LEAF1_ECX_FMA
                        | LEAF1_ECX_F16C);
                }
            }
            0x7 if e.index == 0 && policy.nested_pvm => {
                e.ebx &= !(LEAF7_EBX_BMI1
                    | LEAF7_EBX_AVX2
                    | LEAF7_EBX_SMEP
                    | LEAF7_EBX_BMI2
                    | LEAF7_EBX_SMAP
                    | LEAF7_EBX_AVX512);
                e.ecx &= !LEAF7_ECX_AVX_FAMILY;
            }
            0xb | 0x1f => e.edx = u32::from(index),
            0xd if policy.nested_pvm => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0x8000_0001 if policy.nested_pvm => e.ecx &= !EXT1_ECX_LZCNT,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn sample() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0x1, 0, [0x806f8, 0x0001_0800, 0xfffa_3203, 0x178b_fbff]),
            entry(0x7, 0, [0, 0xffff_ffff, 0xffff_ffff, 0]),
            entry(0xb, 0, [1, 1, 0x100, 7]),
            entry(0xd, 0, [7, 0x340, 0x340, 0]),
            entry(0x8000_0001, 0, [0, 0, 0xffff, 0]),
        ]
    }

    #[test]
    fn apic_ids_and_counts() {
        let mut e = sample();
        apply(&mut e, 2, 4, CpuidPolicy::default());
        assert_eq!(e[0].ebx >> 24, 2);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!(e[2].edx, 2);
    }

    #[test]
    fn plain_hosts_keep_features() {
        let mut e = sample();
        apply(&mut e, 0, 1, CpuidPolicy::default());
        assert_ne!(e[0].ecx & LEAF1_ECX_XSAVE, 0);
        assert_ne!(e[1].ebx & LEAF7_EBX_SMAP, 0);
        assert_eq!(e[3].eax, 7);
    }

    #[test]
    fn nested_pvm_hides_what_its_emulator_lacks() {
        let mut e = sample();
        apply(&mut e, 0, 1, CpuidPolicy { nested_pvm: true });
        for bit in [
            LEAF1_ECX_POPCNT,
            LEAF1_ECX_XSAVE,
            LEAF1_ECX_AVX,
            LEAF1_ECX_OSXSAVE,
        ] {
            assert_eq!(e[0].ecx & bit, 0);
        }
        for bit in [
            LEAF7_EBX_SMEP,
            LEAF7_EBX_SMAP,
            LEAF7_EBX_AVX2,
            LEAF7_EBX_AVX512,
        ] {
            assert_eq!(e[1].ebx & bit, 0);
        }
        assert_eq!((e[3].eax, e[3].ebx), (0, 0));
        assert_eq!(e[4].ecx & EXT1_ECX_LZCNT, 0);
    }
}

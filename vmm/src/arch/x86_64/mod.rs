//! x86-64: memory layout, boot structures and vCPU start state. Pure data:
//! nothing here calls KVM.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

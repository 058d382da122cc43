//! Every KVM ioctl of crvmm lives under this module: the VM and its
//! in-kernel devices ([`vm`]), guest memory ([`memory`]), vCPUs ([`vcpu`]).

pub mod memory;
pub mod vcpu;
pub mod vm;

//! crvmm's own virtual machine monitor on KVM.
//!
//! This crate will hold every KVM ioctl of the project (VM, vCPU and memory
//! state). Today it holds [`host`], which tells whether this host's KVM can
//! run a Linux guest's user space at all: on a nested PVM hypervisor it
//! cannot, and crvmm says so instead of hanging.

pub mod host;

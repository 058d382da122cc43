//! crvmm's own virtual machine monitor on KVM.
//!
//! - [`arch`]: the x86-64 layout and boot structures (pure data);
//! - [`vstate`]: every KVM ioctl of the project: the VM, its memory, vCPUs;
//! - [`loader`]: kernel, initramfs and command line into guest memory;
//! - [`host`]: whether this host's KVM can run a Linux user space.

pub mod api;
pub mod arch;
pub mod builder;
pub mod debug_port;
pub mod host;
pub mod irq;
pub mod loader;
pub mod runtime;
pub mod testing;
pub mod vcpus;
pub mod vstate;

/// An error and its causes, as one line: "outer: inner: root".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

//! The kernel command line crvmm gives a Linux guest.

use crate::arch::x86_64::layout::{VIRTIO_IRQ_START, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};

/// Serial console; reboot through the i8042 reset line, which the VMM turns
/// into an exit (a triple fault would need INT3, which some emulators lack);
/// no AUX port or multiplexer probing on our minimal i8042; no boot-time
/// check that timer interrupts arrive in time (a busy host can delay them).
const BASE: &str = "console=ttyS0 reboot=k panic=-1 no_timer_check \
                    i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// What a nested PVM host needs besides the CPUID mask: features hidden
/// from the kernel's own feature checks too, and no INT3 self-test (crvmm's
/// guest kernel patch 0002 adds the switch).
const NESTED_PVM: &str = "noint3selftest clearcpuid=xsave,smap,smep,popcnt";

/// Builds the command line: base, host quirks, the vsock device, `extra`.
pub fn kernel_cmdline(nested_pvm: bool, vsock: bool, extra: &str) -> String {
    let mut line = String::from(BASE);
    if nested_pvm {
        line.push(' ');
        line.push_str(NESTED_PVM);
    }
    if vsock {
        line.push_str(&format!(
            " virtio_mmio.device={}K@{:#x}:{}",
            VIRTIO_MMIO_SIZE >> 10,
            VIRTIO_MMIO_START,
            VIRTIO_IRQ_START
        ));
    }
    if !extra.trim().is_empty() {
        line.push(' ');
        line.push_str(extra.trim());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_host_with_vsock() {
        let line = kernel_cmdline(false, true, "");
        assert!(line.starts_with("console=ttyS0 reboot=k"));
        assert!(line.ends_with("virtio_mmio.device=4K@0xd0000000:5"));
        assert!(!line.contains("clearcpuid"));
    }

    #[test]
    fn nested_pvm_adds_its_quirks_and_extra_goes_last() {
        let line = kernel_cmdline(true, false, " quiet ");
        assert!(line.contains("noint3selftest clearcpuid="));
        assert!(!line.contains("virtio_mmio"));
        assert!(line.ends_with(" quiet"));
    }
}

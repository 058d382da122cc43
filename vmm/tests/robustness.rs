//! Bad input to crvmm's VMM gets a clear error, and a misbehaving guest is
//! contained: a missing, truncated or non-kernel file, an initramfs that
//! cannot fit, and a guest writing garbage to every device register.

use std::time::Duration;

use crvmm_vmm::builder::BuildError;
use crvmm_vmm::loader::LoaderError;
use crvmm_vmm::runtime::{Vmm, VmmConfig, VmmError};
use crvmm_vmm::vcpus::ExitReason;

mod common;
use common::{assemble, guest_file, temp_dir};

fn config(dir: &std::path::Path) -> VmmConfig {
    VmmConfig {
        mem_mib: 64,
        ..VmmConfig::new(guest_file("vmlinux"), dir)
    }
}

fn loader_error(config: &VmmConfig) -> LoaderError {
    match Vmm::new(config) {
        Err(VmmError::Build(BuildError::Loader(e))) => e,
        Err(e) => panic!("expected a loader error, got {e:?}"),
        Ok(_) => panic!("a bad guest image was accepted"),
    }
}

#[test]
fn missing_kernel_names_the_file() {
    let dir = temp_dir("robust");
    let mut c = config(&dir);
    c.kernel = dir.join("no-such-vmlinux");
    let e = loader_error(&c);
    assert!(
        matches!(e, LoaderError::Open(ref p, _) if p.ends_with("no-such-vmlinux")),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_or_foreign_kernels_are_refused() {
    let dir = temp_dir("robust");
    let full = std::fs::read(guest_file("vmlinux")).unwrap();
    for (name, bytes) in [
        ("cut-1m", &full[..1 << 20]),
        ("cut-header", &full[..40]),
        ("text", &b"#!/bin/sh\necho not a kernel\n"[..]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut c = config(&dir);
        c.kernel = path;
        let e = loader_error(&c);
        assert!(matches!(e, LoaderError::Kernel(..)), "{name}: {e}");
        assert!(
            crvmm_vmm::error_chain(&e).contains(name),
            "{name}: the error names the file"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn initramfs_larger_than_guest_memory_is_refused() {
    let dir = temp_dir("robust");
    let big = dir.join("huge.cpio");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(100 << 20).unwrap(); // sparse: 100 MiB for a 64 MiB guest
    let mut c = config(&dir);
    c.initrd = Some(big);
    let e = loader_error(&c);
    assert!(
        matches!(e, LoaderError::InitrdTooLarge { size, .. } if size == 100 << 20),
        "{e}"
    );
    assert!(e.to_string().contains("does not fit"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn garbage_in_every_device_register_is_contained() {
    let dir = temp_dir("robust");
    let mut c = config(&dir);
    c.payload = Some(assemble("garbage"));
    let mut vmm = Vmm::new(&c).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reason = std::thread::scope(|s| {
        s.spawn(move || {
            let r = vmm.run();
            let code = vmm.debug_exit_code();
            let _ = tx.send(());
            (r, code)
        })
        .join()
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(1)).unwrap();
    let (result, code) = reason;
    assert_eq!(result.unwrap(), ExitReason::GuestShutdown);
    assert_eq!(code, Some(0x42), "the payload ran to its end");
    std::fs::remove_dir_all(dir).unwrap();
}

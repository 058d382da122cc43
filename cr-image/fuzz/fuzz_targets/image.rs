//! Fuzzes `crvmm_cr_image::verify` and `inspect`: whatever the bytes, they
//! return a verdict without panicking, agree with each other, and `inspect`
//! writes well-formed JSON (see `check` in `src/lib.rs`). Memory stays
//! bounded by construction: nothing is allocated from a length field before
//! it is checked against its record type's bound, and payload buffers grow
//! only with the bytes that actually arrive.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    crvmm_cr_image_fuzz::check(data);
});

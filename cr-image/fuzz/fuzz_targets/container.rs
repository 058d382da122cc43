//! Fuzzes the container image reader (`crvmm_cr_image::container`):
//! whatever the bytes, reading them ends in an event stream or an error,
//! never a panic, and a stream that verifies also reads event by event to
//! the same end. Memory stays bounded: record lengths are checked against
//! their type's limit (at most 1 MiB) before any buffer grows.

#![no_main]

use crvmm_cr_image::container::{ContainerReader, Event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verified = ContainerReader::new(data).verify();
    let mut reader = ContainerReader::new(data);
    let mut end = None;
    loop {
        match reader.next_event() {
            Ok(Some(Event::End { bytes, digest })) => end = Some((bytes, digest)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    match verified {
        Ok((_, bytes, digest)) => {
            assert_eq!(end, Some((bytes, digest)));
            assert_eq!(bytes, data.len() as u64);
        }
        Err(_) => assert!(end.is_none()),
    }
});

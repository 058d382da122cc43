//! A hostile driver: malformed headers and chains are dropped one by one,
//! nothing panics or reads out of bounds, and the device keeps working.

use super::*;
use crate::testing::Buf;
use crate::virtio::vsock::packet::MAX_PAYLOAD;

/// Sends `bufs` as one tx chain; checks it was consumed and answered with
/// nothing, then that a valid REQUEST still gets its RESPONSE.
fn dropped(h: &mut Harness, bufs: &[Buf]) {
    h.drv.send_chain(bufs).expect("tx room");
    h.pump();
    assert!(h.recv().is_empty(), "a dropped packet gets no answer");
    assert_eq!(h.drv.tx.in_flight(), 0, "the chain was returned");
    still_works(h);
}

fn still_works(h: &mut Harness) {
    h.dev.backend_mut().listen(52);
    let port = 50000 + h.dev.connection_count() as u32;
    h.send_op(op::REQUEST, port, 52);
    assert_eq!(ops(&h.recv()), [op::RESPONSE]);
}

fn header_bytes(h: &Harness, len: u32) -> Vec<u8> {
    let mut hdr = h.drv.header(op::REQUEST, 40000, 52);
    hdr.len = len;
    hdr.to_bytes().to_vec()
}

#[test]
fn short_header() {
    let mut h = harness();
    h.post_rx(8);
    let hdr = header_bytes(&h, 0);
    let short = h.drv.stage(&hdr[..20]);
    dropped(&mut h, &[short]);
}

#[test]
fn header_split_over_descriptors_is_fine() {
    let mut h = harness();
    h.post_rx(8);
    h.dev.backend_mut().listen(52);
    let hdr = header_bytes(&h, 0);
    let a = h.drv.stage(&hdr[..10]);
    let b = h.drv.stage(&hdr[10..]);
    h.drv.send_chain(&[a, b]).unwrap();
    h.pump();
    assert_eq!(ops(&h.recv()), [op::RESPONSE]);
}

#[test]
fn len_beyond_the_buffer() {
    let mut h = harness();
    h.post_rx(8);
    let hdr = header_bytes(&h, 100);
    let a = h.drv.stage(&hdr);
    let b = h.drv.stage(&[0u8; 10]);
    dropped(&mut h, &[a, b]);
}

#[test]
fn len_beyond_the_largest_packet() {
    let mut h = harness();
    h.post_rx(8);
    let hdr = header_bytes(&h, MAX_PAYLOAD as u32 + 1);
    let a = h.drv.stage(&hdr);
    let b = h.drv.stage(&vec![0u8; MAX_PAYLOAD + 1]);
    dropped(&mut h, &[a, b]);
}

#[test]
fn write_only_tx_descriptor() {
    let mut h = harness();
    h.post_rx(8);
    let hdr = header_bytes(&h, 0);
    let mut a = h.drv.stage(&hdr);
    a.writable = true;
    dropped(&mut h, &[a]);
    let hdr = header_bytes(&h, 4);
    let a = h.drv.stage(&hdr);
    let mut b = h.drv.stage(b"data");
    b.writable = true;
    dropped(&mut h, &[a, b]);
}

#[test]
fn descriptor_outside_guest_memory() {
    let mut h = harness();
    h.post_rx(8);
    let end = MEM_SIZE as u64;
    dropped(
        &mut h,
        &[Buf {
            addr: end - 20,
            len: 44,
            writable: false,
        }],
    );
    dropped(
        &mut h,
        &[Buf {
            addr: u64::MAX - 10,
            len: 44,
            writable: false,
        }],
    );
    let hdr = header_bytes(&h, 8);
    let a = h.drv.stage(&hdr);
    dropped(
        &mut h,
        &[
            a,
            Buf {
                addr: end,
                len: 8,
                writable: false,
            },
        ],
    );
}

#[test]
fn descriptor_loops_and_bad_indices() {
    let mut h = harness();
    h.post_rx(8);
    let hdr = header_bytes(&h, 1000);
    let a = h.drv.stage(&hdr);
    let head = h.drv.send_chain(&[a]).unwrap();
    // The descriptor points at itself: a loop the queue's TTL cuts short
    // (what the device makes of the bytes does not matter, only that it
    // stays within guest memory and returns the chain).
    h.drv.tx.write_desc(head, a.addr, 44, 1, head);
    h.pump();
    h.recv();
    assert_eq!(h.drv.tx.in_flight(), 0);
    let a = h.drv.stage(&hdr);
    let head = h.drv.send_chain(&[a]).unwrap();
    h.drv.tx.write_desc(head, a.addr, 44, 1, 9999);
    h.pump();
    assert!(h.recv().is_empty());
    still_works(&mut h);
}

#[test]
fn bad_rx_buffers_are_skipped() {
    let mut h = harness();
    h.dev.backend_mut().listen(52);
    let end = MEM_SIZE as u64;
    // Too small, read-only, outside memory; then a good one.
    h.drv
        .rx
        .add(&[Buf {
            addr: 0x20_0000,
            len: 20,
            writable: true,
        }])
        .unwrap();
    h.drv
        .rx
        .add(&[Buf {
            addr: 0x20_0000,
            len: 4096,
            writable: false,
        }])
        .unwrap();
    h.drv
        .rx
        .add(&[Buf {
            addr: end - 8,
            len: 4096,
            writable: true,
        }])
        .unwrap();
    h.send_op(op::REQUEST, 40000, 52);
    assert_eq!(h.drv.rx.pop_used(), Some((0, 0)));
    assert_eq!(h.drv.rx.pop_used(), Some((1, 0)));
    assert_eq!(h.drv.rx.pop_used(), Some((2, 0)));
    assert_eq!(
        h.drv.rx.pop_used(),
        None,
        "the RESPONSE waits for a good buffer"
    );
    h.post_rx(1);
    assert_eq!(ops(&h.recv()), [op::RESPONSE]);
}

#[test]
fn head_index_past_the_descriptor_table() {
    let mut h = harness();
    h.drv.rx.push_raw_head(u16::MAX);
    h.post_rx(8);
    h.drv.tx.push_raw_head(9999);
    h.pump();
    assert!(h.recv().is_empty());
    still_works(&mut h);
}

#[test]
fn garbage_avail_index_stops_the_queue_without_harm() {
    let mut h = harness();
    h.post_rx(8);
    h.drv.tx.write_avail_idx(1000);
    h.pump();
    assert!(h.recv().is_empty());
    h.drv.tx.write_avail_idx(0);
    still_works(&mut h);
}

#[test]
fn a_flood_of_strangers_is_throttled_not_buffered() {
    let mut h = harness();
    // No rx buffers: every RST the device owes waits, up to a cap.
    for i in 0..200 {
        let hdr = h.drv.header(op::RW, 10000 + i, 9);
        h.drv.send(&hdr, &[]);
    }
    h.pump();
    assert_eq!(h.drv.tx.in_flight(), 0);
    for i in 0..200 {
        let hdr = h.drv.header(op::RW, 20000 + i, 9);
        h.drv.send(&hdr, &[]);
    }
    h.pump();
    assert!(h.drv.tx.in_flight() > 0, "the device stopped reading tx");
    h.post_rx(250);
    let mut rsts = h.recv().len();
    h.post_rx(250);
    rsts += h.recv().len();
    assert_eq!(rsts, 400);
    assert_eq!(h.drv.tx.in_flight(), 0);
}

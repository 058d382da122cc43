//! Credit flow control, both ways, and rx-buffer starvation.

use std::io::Write;

use super::*;
use crate::virtio::vsock::BUF_ALLOC;

/// A guest connection to host port 52 whose guest side advertises
/// `buf_alloc`; returns the host end.
fn guest_connection(h: &mut Harness, buf_alloc: u32) -> UnixStream {
    h.dev.backend_mut().listen(52);
    let mut req = h.drv.header(op::REQUEST, 40000, 52);
    req.buf_alloc = buf_alloc;
    h.send(&req, &[]);
    assert_eq!(ops(&h.recv()), [op::RESPONSE]);
    h.dev.backend_mut().accept(52).expect("host end")
}

#[test]
fn host_data_waits_for_guest_credit_then_flows_after_credit_update() {
    let mut h = harness();
    h.post_rx(64);
    let mut host = guest_connection(&mut h, 8192);
    let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    host.write_all(&data).unwrap();
    h.pump();
    let pkts = h.recv();
    let got = data_for(&pkts, 40000);
    assert_eq!(got.len(), 8192, "never more than the credit");
    assert_eq!(ops(&pkts).last(), Some(&op::CREDIT_REQUEST));
    h.pump();
    assert!(h.recv().is_empty(), "nothing while out of credit");

    // The guest consumed it all.
    let mut update = h.drv.header(op::CREDIT_UPDATE, 40000, 52);
    update.buf_alloc = 8192;
    update.fwd_cnt = 8192;
    h.send(&update, &[]);
    let mut got2 = data_for(&h.recv(), 40000);
    assert_eq!(got2.len(), 8192);
    update.fwd_cnt = 16384;
    h.send(&update, &[]);
    got2.extend(data_for(&h.recv(), 40000));
    let mut all = got;
    all.extend(got2);
    assert_eq!(all, data);
}

#[test]
fn device_sends_credit_updates_as_the_host_consumes() {
    let mut h = harness();
    h.post_rx(16);
    let mut host = guest_connection(&mut h, 65536);
    let chunk = vec![0x5a; 40_000];
    let mut rw = h.drv.header(op::RW, 40000, 52);
    rw.len = chunk.len() as u32;
    h.send(&rw, &chunk);
    assert!(h.recv().is_empty(), "40 KB is below the update threshold");
    h.send(&rw, &chunk);
    let pkts = h.recv();
    assert_eq!(ops(&pkts), [op::CREDIT_UPDATE]);
    assert_eq!(pkts[0].0.fwd_cnt, 80_000);
    assert_eq!(pkts[0].0.buf_alloc, BUF_ALLOC);
    assert_eq!(drain(&mut host).len(), 80_000);

    // Asked for, the device answers right away.
    h.send_op(op::CREDIT_REQUEST, 40000, 52);
    let pkts = h.recv();
    assert_eq!(ops(&pkts), [op::CREDIT_UPDATE]);
    assert_eq!(pkts[0].0.fwd_cnt, 80_000);
}

#[test]
fn guest_data_waits_in_the_device_while_the_host_does_not_read() {
    let mut h = harness();
    h.post_rx(16);
    let mut host = guest_connection(&mut h, 65536);
    let chunk = vec![7u8; 64 * 1024];
    let mut rw = h.drv.header(op::RW, 40000, 52);
    rw.len = chunk.len() as u32;
    // Exactly the advertised credit, none of it read by the host yet.
    for _ in 0..BUF_ALLOC as usize / chunk.len() {
        h.send(&rw, &chunk);
    }
    assert_eq!(h.dev.connection_count(), 1);
    let mut got = 0;
    for _ in 0..100 {
        got += drain(&mut host).len();
        h.pump();
    }
    assert_eq!(got, BUF_ALLOC as usize);
    let fwd = h.recv().iter().map(|(p, _)| p.fwd_cnt).max();
    assert_eq!(
        fwd,
        Some(BUF_ALLOC),
        "the guest learns everything was consumed"
    );
}

#[test]
fn guest_exceeding_its_credit_is_reset() {
    let mut h = harness();
    h.post_rx(16);
    let _host = guest_connection(&mut h, 65536);
    let chunk = vec![7u8; 64 * 1024];
    let mut rw = h.drv.header(op::RW, 40000, 52);
    rw.len = chunk.len() as u32;
    // The host never reads: its socket buffer and then ours fill up.
    for _ in 0..64 {
        h.send(&rw, &chunk);
        if h.dev.connection_count() == 0 {
            break;
        }
    }
    assert_eq!(h.dev.connection_count(), 0);
    assert!(ops(&h.recv()).contains(&op::RST));
}

#[test]
fn host_data_waits_for_rx_buffers() {
    let mut h = harness();
    h.post_rx(1);
    let mut host = guest_connection(&mut h, 1 << 20);
    host.write_all(&[1u8; 10_000]).unwrap();
    h.pump();
    assert!(h.recv().is_empty(), "no rx buffer, nothing read");
    h.post_rx(8);
    let got = data_for(&h.recv(), 40000);
    assert_eq!(got.len(), 10_000);
}

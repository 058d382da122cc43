//! Connection life cycles: host- and guest-initiated, data, shutdown,
//! resets, abandoned requests, many connections at once.

use std::io::Write;

use super::*;
use crate::virtio::vsock::packet::{SHUTDOWN_RCV, SHUTDOWN_SEND};
use crate::virtio::vsock::HOST_CID;

#[test]
fn host_connect_ok_and_data_both_ways() {
    let mut h = harness();
    h.post_rx(8);
    let (mut client, host_port) = host_connection(&mut h, 1024);
    assert!(host_port >= 1 << 30);

    client.write_all(b"ping from host").unwrap();
    h.pump();
    let pkts = h.recv();
    assert_eq!(data_for(&pkts, 1024), b"ping from host");
    let (hdr, _) = &pkts[0];
    assert_eq!(
        (hdr.src_cid, hdr.dst_cid, hdr.type_),
        (HOST_CID, GUEST_CID, 1)
    );
    assert!(h.irq.count() > 0, "used buffers raise the interrupt");

    let mut rw = h.drv.header(op::RW, 1024, host_port);
    rw.len = 5;
    h.send(&rw, b"pong!");
    assert_eq!(drain(&mut client), b"pong!");
    assert_eq!(h.dev.connection_count(), 1);
}

#[test]
fn guest_connect_and_data_both_ways() {
    let mut h = harness();
    h.post_rx(8);
    h.dev.backend_mut().listen(52);
    h.send_op(op::REQUEST, 40000, 52);
    let pkts = h.recv();
    assert_eq!(ops(&pkts), [op::RESPONSE]);
    assert!(crate::testing::vsock::is(
        &pkts[0].0,
        op::RESPONSE,
        52,
        40000
    ));
    let mut host = h.dev.backend_mut().accept(52).expect("host end");

    let mut rw = h.drv.header(op::RW, 40000, 52);
    rw.len = 3;
    h.send(&rw, b"abc");
    assert_eq!(drain(&mut host), b"abc");
    host.write_all(b"xyz").unwrap();
    h.pump();
    assert_eq!(data_for(&h.recv(), 40000), b"xyz");
}

#[test]
fn rst_for_unknown_connections_and_ports_nobody_listens_on() {
    let mut h = harness();
    h.post_rx(8);
    h.send_op(op::REQUEST, 40000, 77);
    h.send_op(op::RW, 40001, 52);
    h.send_op(op::SHUTDOWN, 40002, 52);
    h.send_op(op::RST, 40003, 52);
    let pkts = h.recv();
    assert_eq!(
        ops(&pkts),
        [op::RST, op::RST, op::RST],
        "no RST answers an RST"
    );
    assert!(crate::testing::vsock::is(&pkts[0].0, op::RST, 77, 40000));
    // Another destination CID or socket type: RST too.
    let mut seqpacket = h.drv.header(op::REQUEST, 40004, 52);
    seqpacket.type_ = 2;
    h.send(&seqpacket, &[]);
    let mut elsewhere = h.drv.header(op::REQUEST, 40005, 52);
    elsewhere.dst_cid = 7;
    h.send(&elsewhere, &[]);
    assert_eq!(ops(&h.recv()), [op::RST, op::RST]);
    // A guest that lies about its CID is ignored.
    let mut liar = h.drv.header(op::REQUEST, 40006, 52);
    liar.src_cid = 9;
    h.send(&liar, &[]);
    assert!(h.recv().is_empty());
}

#[test]
fn guest_refusing_a_host_connect_closes_the_host_socket() {
    let mut h = harness();
    h.post_rx(8);
    let mut client = h.dev.backend_mut().host_connect(1024);
    h.pump();
    let host_port = h.recv()[0].0.src_port;
    h.send_op(op::RST, 1024, host_port);
    assert!(at_eof(&mut client));
    assert_eq!(h.dev.connection_count(), 0);
}

#[test]
fn abandoned_connect_is_reset_and_later_connections_work() {
    let mut h = harness();
    h.post_rx(8);
    let client = h.dev.backend_mut().host_connect(1024);
    h.pump();
    let host_port = h.recv()[0].0.src_port;
    // The host client gives up while the guest is still accepting.
    drop(client);
    h.pump();
    h.send_op(op::RESPONSE, 1024, host_port);
    let pkts = h.recv();
    assert_eq!(ops(&pkts), [op::RST]);
    assert!(crate::testing::vsock::is(
        &pkts[0].0,
        op::RST,
        host_port,
        1024
    ));
    assert_eq!(h.dev.connection_count(), 0);

    // The same guest port still works.
    let (mut client, port) = host_connection(&mut h, 1024);
    assert_ne!(port, host_port);
    client.write_all(b"still alive").unwrap();
    h.pump();
    assert_eq!(data_for(&h.recv(), 1024), b"still alive");
}

#[test]
fn host_client_leaving_before_its_request_is_sent_vanishes() {
    let mut h = harness();
    let client = h.dev.backend_mut().host_connect(1024);
    h.pump();
    assert_eq!(
        h.dev.connection_count(),
        1,
        "REQUEST waits for an rx buffer"
    );
    drop(client);
    h.pump();
    assert_eq!(h.dev.connection_count(), 0);
    h.post_rx(4);
    assert!(h.recv().is_empty(), "the guest never hears of it");
}

#[test]
fn host_close_shuts_down_then_guest_close_resets() {
    let mut h = harness();
    h.post_rx(8);
    let (mut client, host_port) = host_connection(&mut h, 1024);
    client.write_all(b"last words").unwrap();
    drop(client);
    h.pump();
    let pkts = h.recv();
    assert_eq!(data_for(&pkts, 1024), b"last words");
    let (shut, _) = pkts.last().unwrap();
    assert_eq!(shut.op, op::SHUTDOWN);
    assert_eq!(shut.flags, SHUTDOWN_SEND | SHUTDOWN_RCV);
    // The guest closes too: the device resets and forgets the connection.
    let mut bye = h.drv.header(op::SHUTDOWN, 1024, host_port);
    bye.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    h.send(&bye, &[]);
    assert_eq!(ops(&h.recv()), [op::RST]);
    assert_eq!(h.dev.connection_count(), 0);
}

#[test]
fn guest_half_close_reaches_the_host_which_can_still_answer() {
    let mut h = harness();
    h.post_rx(8);
    let (mut client, host_port) = host_connection(&mut h, 1024);
    let mut rw = h.drv.header(op::RW, 1024, host_port);
    rw.len = 7;
    h.send(&rw, b"request");
    let mut shut = h.drv.header(op::SHUTDOWN, 1024, host_port);
    shut.flags = SHUTDOWN_SEND;
    h.send(&shut, &[]);
    assert_eq!(drain(&mut client), b"request", "data, then EOF");
    assert!(at_eof(&mut client));
    // The host answers and closes; the guest gets the answer, then RST.
    client.write_all(b"response").unwrap();
    drop(client);
    h.pump();
    let pkts = h.recv();
    assert_eq!(data_for(&pkts, 1024), b"response");
    assert_eq!(ops(&pkts).last(), Some(&op::RST));
    assert_eq!(h.dev.connection_count(), 0);
}

#[test]
fn sixty_four_concurrent_connections() {
    let mut h = harness();
    h.post_rx(200);
    h.dev.backend_mut().listen(52);
    let mut clients = Vec::new();
    for i in 0..32u32 {
        let (c, port) = host_connection(&mut h, 2000 + i);
        clients.push((c, port, 2000 + i));
    }
    for i in 0..32u32 {
        h.send_op(op::REQUEST, 3000 + i, 52);
        let host = h.dev.backend_mut().accept(52).expect("accepted");
        clients.push((host, 52, 3000 + i));
    }
    assert_eq!(h.dev.connection_count(), 64);
    h.recv();
    // Every host end talks at once, then every guest end answers.
    for (c, _, guest_port) in &mut clients {
        c.write_all(format!("host to {guest_port}").as_bytes())
            .unwrap();
    }
    h.pump();
    let pkts = h.recv();
    for (c, host_port, guest_port) in &mut clients {
        assert_eq!(
            data_for(&pkts, *guest_port),
            format!("host to {guest_port}").as_bytes()
        );
        let msg = format!("guest {guest_port} to {host_port}");
        let mut rw = h.drv.header(op::RW, *guest_port, *host_port);
        rw.len = msg.len() as u32;
        h.drv.send(&rw, msg.as_bytes());
        let _ = c;
    }
    h.pump();
    for (c, host_port, guest_port) in &mut clients {
        assert_eq!(
            drain(c),
            format!("guest {guest_port} to {host_port}").as_bytes()
        );
    }
}

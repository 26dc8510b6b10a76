//! What ZeroMQ does with PUSH/PULL when a receiver leaves: why a handler that disconnects from
//! Mongrel2 directly can lose requests, and why the device's leave handshake is needed.
//!
//! Mongrel2 sends requests from a PUSH socket, round-robin over the connected handlers. PUSH
//! has no acknowledgement: a message is gone from the sender once it is queued toward one
//! receiver. When that receiver disconnects (`zmq_disconnect`, or its process exits), what was
//! queued toward it (in its receive queue, in the network, in the sender's pipe) is discarded
//! with the pipe: it is not handed to another receiver. This test shows it with libzmq alone.
#![cfg(feature = "runtime")]

use std::time::{Duration, Instant};

fn recv_all(sock: &zmq::Socket, quiet: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while sock
        .poll(zmq::POLLIN, quiet.as_millis() as i64)
        .unwrap_or(0)
        > 0
    {
        while let Ok(m) = sock.recv_bytes(zmq::DONTWAIT) {
            got.push(m);
        }
    }
    got
}

#[test]
fn a_disconnecting_pull_socket_takes_what_was_pushed_toward_it_with_it() {
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(0).unwrap();
    push.bind("tcp://127.0.0.1:*").unwrap();
    let ep = push.get_last_endpoint().unwrap().unwrap();
    let connect = |ctx: &zmq::Context| {
        let s = ctx.socket(zmq::PULL).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&ep).unwrap();
        s
    };
    // Two receivers, both connected before anything is sent (a message to each proves it).
    let (a, b) = (connect(&ctx), connect(&ctx));
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut seen_a, mut seen_b) = (false, false);
    while !(seen_a && seen_b) {
        assert!(Instant::now() < deadline, "receivers did not connect");
        push.send("hello", 0).unwrap();
        seen_a |= !recv_all(&a, Duration::from_millis(20)).is_empty();
        seen_b |= !recv_all(&b, Duration::from_millis(20)).is_empty();
    }

    // 200 messages, round-robin: about half are queued toward each receiver.
    const N: usize = 200;
    for i in 0..N {
        push.send(format!("m{i}").as_bytes(), 0).unwrap();
    }
    // a reads one, then leaves with the rest of its share unread.
    assert!(a.poll(zmq::POLLIN, 5000).unwrap() > 0);
    let read_by_a = a.recv_bytes(0).unwrap();
    a.disconnect(&ep).unwrap();
    drop(a);

    let got_b = recv_all(&b, Duration::from_millis(300));
    let received = 1 + got_b.len();
    eprintln!(
        "PUSH sent {N}; a read 1 ({:?}) and disconnected; b received {}; lost {}",
        String::from_utf8_lossy(&read_by_a),
        got_b.len(),
        N - received
    );
    // Nothing of a's share went to b: b holds only every other message.
    assert!(got_b.len() <= N / 2 + 1, "b got {}", got_b.len());
    assert!(received < N, "nothing was lost: {received} of {N}");
}

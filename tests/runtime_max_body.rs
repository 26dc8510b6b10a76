//! `Server::max_body` against the fake Mongrel2 of `m2wsgi::testing`: a request body above the
//! limit is answered `413` on every path Mongrel2 delivers bodies by (inline, async upload,
//! streamed upload with and without a length), the handler never sees it (or, for a chunked
//! streamed body, its read fails), and an async upload's temp file is deleted.
#![cfg(feature = "runtime")]

mod support;

use http::{HeaderMap, StatusCode};
use m2wsgi::Connection;
use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use support::runtime::InProcess;
use support::testing::{upload_slice, FakeMongrel2, RequestBuilder};

const T: Duration = Duration::from_secs(10);
const LIMIT: u64 = 100;

fn connect(m2: &FakeMongrel2, uploads: Option<&Path>) -> Connection {
    let mut b = Connection::builder(m2.send_spec())
        .recv_spec(m2.recv_spec())
        .send_ident(m2.sender());
    if let Some(dir) = uploads {
        b = b.upload_dir(dir);
    }
    b.connect().expect("connect to the fake Mongrel2")
}

/// A server with the limit whose handler reads the whole body and answers its length; counts
/// the requests it sees.
fn serve(conn: Connection, calls: &Arc<AtomicUsize>) -> InProcess {
    let seen = Arc::clone(calls);
    InProcess::start_with(
        conn,
        1,
        |s| s.max_body(LIMIT),
        move |req| {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut body = Vec::new();
            let read = req
                .body_reader()
                .and_then(|mut b| Ok(b.read_to_end(&mut body)?));
            let text = match read {
                Ok(n) => format!("read {n}"),
                Err(e) => format!("error {e}"),
            };
            let _ = req.reply_http(StatusCode::OK, &HeaderMap::new(), text.as_bytes());
        },
    )
}

/// Waits for a `413` on `id`, with the connection closed after it.
fn expect_413(m2: &FakeMongrel2, id: u64) {
    let r = m2.read_response(id, T).expect("a response");
    assert_eq!(r.status, 413, "{}", r.head_str());
    assert_eq!(r.header_str("connection").as_deref(), Some("close"));
    assert!(
        m2.wait_client(id, T, |c| c.closed).is_some(),
        "the connection is closed after the 413"
    );
}

#[test]
fn inline_body_above_the_limit_gets_413() {
    let m2 = FakeMongrel2::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let _server = serve(connect(&m2, None), &calls);
    m2.send(
        RequestBuilder::post("/big", vec![b'x'; 101])
            .conn_id(3)
            .build(),
    );
    expect_413(&m2, 3);
    // At the limit exactly, it is taken.
    m2.send(
        RequestBuilder::post("/ok", vec![b'x'; 100])
            .conn_id(4)
            .build(),
    );
    let r = m2.read_response(4, T).expect("a response");
    assert_eq!((r.status, r.text().as_str()), (200, "read 100"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler saw only the second"
    );
}

#[test]
fn async_upload_above_the_limit_gets_413_at_its_start_and_its_file_is_deleted() {
    let m2 = FakeMongrel2::new();
    let uploads = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let _server = serve(connect(&m2, Some(uploads.path())), &calls);

    // Mongrel2 creates the temp file, then sends the start message; the body is still coming.
    let file = uploads.path().join("upload.Big123");
    std::fs::write(&file, b"the first part").unwrap();
    let path = file.to_str().unwrap();
    let req = RequestBuilder::new("POST", "/up")
        .header("content-length", "5000")
        .conn_id(5);
    m2.send(req.clone().upload_start(path).build());
    expect_413(&m2, 5);
    assert!(!file.exists(), "the temp file is deleted at the start");
    // The done message that may still come is swallowed: no second answer, no handler call.
    std::fs::write(&file, vec![b'x'; 5000]).unwrap();
    m2.send(req.upload_done(path).build());
    // A request behind it on another connection shows the done message was routed.
    m2.send(RequestBuilder::post("/after", "x").conn_id(6).build());
    assert_eq!(m2.read_response(6, T).expect("a response").status, 200);
    assert!(
        !file.exists(),
        "the temp file is deleted when the done comes"
    );
    let first = m2.read_response(5, T).unwrap();
    assert_eq!(
        m2.client(5).data.len(),
        first.head.len() + first.body.len(),
        "nothing after the 413"
    );

    // A chunked upload has no length: it is measured when it is complete.
    let file = uploads.path().join("upload.Chunk1");
    std::fs::write(&file, b"").unwrap();
    let path = file.to_str().unwrap();
    let req = RequestBuilder::new("POST", "/up")
        .header("transfer-encoding", "chunked")
        .conn_id(7);
    m2.send(req.clone().upload_start(path).build());
    std::fs::write(&file, vec![b'x'; 101]).unwrap();
    m2.send(req.upload_done(path).build());
    expect_413(&m2, 7);
    assert!(!file.exists(), "the temp file is deleted");

    // Below the limit, an upload goes through.
    let file = uploads.path().join("upload.Small1");
    std::fs::write(&file, vec![b'y'; 100]).unwrap();
    let path = file.to_str().unwrap();
    let req = RequestBuilder::new("POST", "/up")
        .header("content-length", "100")
        .conn_id(8);
    m2.send(req.clone().upload_start(path).build());
    m2.send(req.upload_done(path).build());
    let r = m2.read_response(8, T).expect("a response");
    assert_eq!((r.status, r.text().as_str()), (200, "read 100"));
    assert!(!file.exists(), "deleted once the request is done");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "/after and the small upload"
    );
}

#[test]
fn streamed_upload_with_a_length_above_the_limit_gets_413_at_its_first_message() {
    let m2 = FakeMongrel2::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let _server = serve(connect(&m2, None), &calls);
    m2.send(
        RequestBuilder::new("POST", "/stream")
            .header("content-length", "1000")
            .upload_stream(vec![b'a'; 10], false)
            .conn_id(9)
            .build(),
    );
    expect_413(&m2, 9);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never sees it");
    assert!(
        m2.client(9).ctl.is_empty(),
        "no upload credit granted: {:?}",
        m2.client(9).ctl
    );
}

#[test]
fn chunked_streamed_upload_is_stopped_when_it_passes_the_limit() {
    let m2 = FakeMongrel2::new();
    let (tx, rx) = mpsc::channel();
    let _server = InProcess::start_with(
        connect(&m2, None),
        1,
        |s| s.max_body(LIMIT),
        move |req| {
            let mut body = Vec::new();
            let read = req
                .body_reader()
                .and_then(|mut b| Ok(b.read_to_end(&mut body)?));
            let reply = req.reply_http(StatusCode::OK, &HeaderMap::new(), b"late");
            tx.send((read.map_err(|e| e.to_string()), body.len(), reply.is_ok()))
                .unwrap();
        },
    );
    let path = "/stream";
    m2.send(
        RequestBuilder::new("POST", path)
            .header("transfer-encoding", "chunked")
            .upload_stream(vec![b'a'; 10], false)
            .conn_id(10)
            .build(),
    );
    m2.send(upload_slice(m2.sender(), 10, path, 10, &[b'b'; 50], false));
    m2.send(upload_slice(m2.sender(), 10, path, 60, &[b'c'; 50], false));
    expect_413(&m2, 10);
    let (read, got, replied) = rx.recv_timeout(T).expect("the handler returned");
    let err = read.expect_err("reading a body past the limit fails");
    assert!(err.contains("413"), "{err}");
    assert!(
        got <= 60,
        "the handler got {got} bytes, none past the limit"
    );
    assert!(!replied, "its late answer is refused");
    let first = m2.read_response(10, T).unwrap();
    assert_eq!(
        m2.client(10).data.len(),
        first.head.len() + first.body.len(),
        "nothing after the 413"
    );
}

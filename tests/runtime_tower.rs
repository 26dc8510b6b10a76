//! The async runtime (`m2wsgi::serve`) against the fake Mongrel2 of `m2wsgi::testing`: no
//! Mongrel2 needed. Each test runs the server on its own tokio runtime and stops it.
#![cfg(feature = "tower")]

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use m2wsgi::service::{ClientGone, ClientInfo, RequestBody};
use m2wsgi::{Connection, HeaderProtocol, ShutdownHandle};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use support::process::wait_until;
use support::testing::{
    credits, disconnect, upload_slice, FakeMongrel2, HttpResponse, RequestBuilder,
};

const T: Duration = Duration::from_secs(10);

/// `serve(conn, service)` on a runtime of its own thread; stopped (and joined) on drop.
struct Running {
    stop: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<m2wsgi::Result<()>>>,
}

impl Running {
    fn start<S, B>(conn: Connection, service: S, limit: usize) -> Running
    where
        S: tower::Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let serve = m2wsgi::serve(conn, service)
            .concurrency_limit(limit)
            .shutdown_timeout(Duration::from_secs(2));
        let stop = serve.shutdown_handle();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve.into_future())
        });
        Running {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !std::thread::panicking() {
                r.expect("the server thread")
                    .expect("serve returned an error");
            }
        }
    }
}

use std::future::IntoFuture as _;
use support::runtime::connect_fake as connect;

/// Answers with what it saw of the request.
async fn echo(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let info = req.extensions().get::<ClientInfo>().cloned().unwrap();
    assert!(req.extensions().get::<ClientGone>().is_some());
    let line = format!(
        "{} {} {:?} host={} conn={} pattern={} addr={:?} hint={:?}",
        req.method(),
        req.uri(),
        req.version(),
        req.headers()["host"].to_str().unwrap(),
        info.conn_id(),
        String::from_utf8_lossy(info.pattern().unwrap_or_default()),
        info.remote_addr(),
        http_body::Body::size_hint(req.body()).exact(),
    );
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut out = line.into_bytes();
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&body);
    Ok(Response::builder()
        .header("x-test", "1")
        .body(Full::new(Bytes::from(out)))
        .unwrap())
}

#[test]
fn requests_reach_the_service_as_http_requests() {
    let m2 = FakeMongrel2::new();
    let _s = Running::start(connect(&m2), tower::service_fn(echo), 8);
    m2.send(
        RequestBuilder::post("/items?x=1", "hello")
            .conn_id(4)
            .pattern("/items")
            .remote_addr("10.1.2.3")
            .build(),
    );
    let r = m2.read_response(4, T).expect("a response");
    assert_eq!(r.status, 200, "{}", r.head_str());
    assert_eq!(r.header_str("x-test").as_deref(), Some("1"));
    assert_eq!(
        r.header_str("content-length").as_deref(),
        Some(&*r.body.len().to_string())
    );
    assert_eq!(
        r.text(),
        "POST /items?x=1 HTTP/1.1 host=localhost conn=4 pattern=/items addr=Some(10.1.2.3) \
         hint=Some(5)\nhello"
    );
    // The legacy JSON header protocol too.
    m2.send(RequestBuilder::get("/j").json().conn_id(5).build());
    let r = m2.read_response(5, T).expect("a response");
    assert!(r.text().starts_with("GET /j HTTP/1.1 "), "{}", r.text());
}

#[test]
fn a_streamed_upload_is_read_as_it_arrives_with_credits_granted() {
    let m2 = FakeMongrel2::new();
    let _s = Running::start(connect(&m2), tower::service_fn(echo), 8);
    let first = vec![b'a'; 1000];
    m2.send(
        RequestBuilder::post("/up", Vec::new())
            .header("content-length", "3000")
            .upload_stream(first, false)
            .conn_id(9)
            .build(),
    );
    // The handler asks for more before the rest is sent.
    let c = m2
        .wait_client(9, T, |c| {
            c.ctl.iter().any(|x| x.windows(7).any(|w| w == b"credits"))
        })
        .expect("an upload credit grant");
    assert!(c.data.is_empty());
    m2.send(upload_slice(
        m2.sender(),
        9,
        "/up",
        1000,
        &[b'b'; 1000],
        false,
    ));
    m2.send(upload_slice(
        m2.sender(),
        9,
        "/up",
        2000,
        &[b'c'; 1000],
        true,
    ));
    let r = m2.read_response(9, T).expect("a response");
    let text = r.text();
    let (line, body) = text.split_once('\n').unwrap();
    assert!(line.ends_with("hint=Some(3000)"), "{line}");
    assert_eq!(
        body,
        "a".repeat(1000) + &"b".repeat(1000) + &"c".repeat(1000)
    );
}

/// A body of `pieces` frames of 10 KiB, then (when `hang`) one that never comes. Counts the
/// frames taken and flags when it is dropped.
struct Counted {
    pieces: usize,
    hang: bool,
    taken: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.taken.load(Ordering::SeqCst) == this.pieces {
            return if this.hang {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        }
        this.taken.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'x';
            10 * 1024
        ])))))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Probe {
    taken: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Probe {
    fn body(&self, pieces: usize, hang: bool) -> Counted {
        Counted {
            pieces,
            hang,
            taken: Arc::clone(&self.taken),
            dropped: Arc::clone(&self.dropped),
        }
    }
}

#[test]
fn flow_control_keeps_a_response_inside_mongrel2s_window() {
    let m2 = FakeMongrel2::new();
    let probe = Probe::default();
    let p = probe.clone();
    let svc = tower::service_fn(move |_req: Request<RequestBody>| {
        let body = p.body(30, false); // 300 KiB, length unknown: chunked
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let _s = Running::start(connect(&m2), svc, 8);
    m2.send(
        RequestBuilder::get("/big")
            .download_credits(102_400)
            .conn_id(2)
            .build(),
    );
    let mut granted = 102_400;
    loop {
        // What went out never exceeds the credit Mongrel2 gave.
        let c = m2
            .wait_client(2, T, |c| {
                c.data.len() + 16 * 1024 > granted
                    || HttpResponse::parse(&c.data, false, c.closed).is_ok_and(|r| r.is_some())
            })
            .unwrap_or_else(|| {
                panic!(
                    "the response up to the window: {} bytes",
                    m2.client(2).data.len()
                )
            });
        assert!(
            c.data.len() <= granted,
            "{} bytes sent with {granted} granted",
            c.data.len()
        );
        if let Some(r) = HttpResponse::parse(&c.data, false, c.closed).unwrap() {
            assert_eq!(r.body.len(), 300 * 1024);
            break;
        }
        m2.send(credits(m2.sender(), 2, 102_400, HeaderProtocol::Tnetstring));
        granted += 102_400;
        assert!(granted < 1 << 20, "the response never ended");
    }
}

#[test]
fn a_client_that_leaves_drops_its_streaming_response() {
    let m2 = FakeMongrel2::new();
    let probe = Probe::default();
    let p = probe.clone();
    let svc = tower::service_fn(move |_req: Request<RequestBody>| {
        let body = p.body(1, true); // one piece, then nothing, for ever
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let _s = Running::start(connect(&m2), svc, 8);
    m2.send(RequestBuilder::get("/forever").conn_id(3).build());
    m2.wait_client(3, T, |c| c.data.len() > 10 * 1024)
        .expect("the first piece");
    assert!(!probe.dropped.load(Ordering::SeqCst));
    m2.send(disconnect(m2.sender(), 3, HeaderProtocol::Tnetstring));
    assert!(
        wait_until(T, || probe.dropped.load(Ordering::SeqCst)),
        "the body was kept"
    );
}

#[test]
fn client_gone_fires_when_the_client_leaves() {
    let m2 = FakeMongrel2::new();
    let fired = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fired);
    let svc = tower::service_fn(move |req: Request<RequestBody>| {
        let gone = req.extensions().get::<ClientGone>().cloned().unwrap();
        let f = Arc::clone(&f);
        async move {
            gone.gone().await;
            assert!(gone.is_gone());
            f.store(true, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    });
    let _s = Running::start(connect(&m2), svc, 8);
    m2.send(RequestBuilder::get("/slow").conn_id(6).build());
    m2.send(disconnect(m2.sender(), 6, HeaderProtocol::Tnetstring));
    assert!(wait_until(T, || fired.load(Ordering::SeqCst)));
}

#[test]
fn errors_and_panics_of_the_service_are_500s_and_it_goes_on() {
    let m2 = FakeMongrel2::new();
    let svc = tower::service_fn(|req: Request<RequestBody>| async move {
        match req.uri().path() {
            "/err" => Err("it broke".into()),
            "/panic" => panic!("on purpose"),
            _ => Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(
                Bytes::from_static(b"fine"),
            ))),
        }
    });
    let _s = Running::start(connect(&m2), svc, 8);
    for (id, path) in [(1, "/err"), (2, "/panic")] {
        m2.send(RequestBuilder::get(path).conn_id(id).build());
        let r = m2.read_response(id, T).expect("a response");
        assert_eq!(r.status, 500, "{path}");
    }
    m2.send(RequestBuilder::get("/ok").conn_id(3).build());
    assert_eq!(m2.read_response(3, T).expect("a response").text(), "fine");
}

/// A service that is not ready until its gate opens.
#[derive(Clone)]
struct Gated {
    open: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    waker: Arc<parking_lot::Mutex<Option<std::task::Waker>>>,
}

impl tower::Service<Request<RequestBody>> for Gated {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        *self.waker.lock() = Some(cx.waker().clone());
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Request<RequestBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

#[test]
fn a_service_that_is_not_ready_gets_no_request() {
    let m2 = FakeMongrel2::new();
    let gated = Gated {
        open: Arc::default(),
        calls: Arc::default(),
        waker: Arc::default(),
    };
    let _s = Running::start(connect(&m2), gated.clone(), 8);
    m2.send(RequestBuilder::get("/a").conn_id(1).build());
    // The server is waiting on the service's readiness.
    assert!(wait_until(T, || gated.waker.lock().is_some()));
    assert_eq!(gated.calls.load(Ordering::SeqCst), 0);
    assert!(m2.client(1).data.is_empty());
    gated.open.store(true, Ordering::SeqCst);
    if let Some(w) = gated.waker.lock().take() {
        w.wake();
    }
    assert_eq!(m2.read_response(1, T).expect("a response").text(), "ok");
    assert_eq!(gated.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn messages_of_one_connection_are_answered_in_order() {
    let m2 = FakeMongrel2::new();
    let svc = tower::service_fn(|req: Request<RequestBody>| async move {
        // The first request is the slowest: a second one on the same connection must wait.
        if req.uri().path() == "/1" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            req.uri().path().to_owned(),
        ))))
    });
    let _s = Running::start(connect(&m2), svc, 8);
    m2.send(RequestBuilder::get("/1").conn_id(8).build());
    m2.send(RequestBuilder::get("/2").conn_id(8).build());
    let c = m2
        .wait_client(8, T, |c| {
            String::from_utf8_lossy(&c.data)
                .matches("HTTP/1.1 200")
                .count()
                == 2
        })
        .expect("two responses");
    let text = String::from_utf8_lossy(&c.data);
    assert!(
        text.find("\r\n\r\n/1").unwrap() < text.find("\r\n\r\n/2").unwrap(),
        "{text}"
    );
}

#[test]
fn a_service_that_blocks_does_not_hold_up_the_others() {
    let m2 = FakeMongrel2::new();
    // A service whose first poll blocks its thread (CPU work with no await): after the first
    // such poll every request gets a task of its own, so a fast request is not held up.
    let svc = tower::service_fn(|req: Request<RequestBody>| async move {
        let ms = match req.uri().path() {
            "/block" => 20,
            "/long" => 3000,
            _ => 0,
        };
        std::thread::sleep(Duration::from_millis(ms));
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            req.uri().path().to_owned(),
        ))))
    });
    let _s = Running::start(connect(&m2), svc, 8);
    m2.send(RequestBuilder::get("/block").conn_id(1).build());
    assert_eq!(m2.read_response(1, T).expect("a response").text(), "/block");
    m2.send(RequestBuilder::get("/long").conn_id(2).build());
    m2.send(RequestBuilder::get("/fast").conn_id(3).build());
    assert_eq!(
        m2.read_response(3, T).expect("the fast one").text(),
        "/fast"
    );
    assert!(
        m2.client(2).data.is_empty(),
        "the fast one came before the long one ended"
    );
    assert_eq!(
        m2.read_response(2, T).expect("the long one").text(),
        "/long"
    );
}

/// Awaits `serve` on a current-thread runtime of a new thread.
fn on_a_thread(
    serve: impl std::future::IntoFuture<Output = m2wsgi::Result<()>, IntoFuture: Send> + Send + 'static,
) -> std::thread::JoinHandle<m2wsgi::Result<()>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve.into_future())
    })
}

#[test]
fn with_graceful_shutdown_finishes_the_requests_in_flight() {
    let m2 = FakeMongrel2::new();
    let started = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&started);
    let svc = tower::service_fn(move |_req: Request<RequestBody>| {
        s.store(true, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve = m2wsgi::serve(connect(&m2), svc).with_graceful_shutdown(async {
        let _ = rx.await;
    });
    let thread = on_a_thread(serve);
    m2.send(RequestBuilder::get("/slow").conn_id(1).build());
    assert!(wait_until(T, || started.load(Ordering::SeqCst)));
    tx.send(()).unwrap();
    assert_eq!(m2.read_response(1, T).expect("the answer").text(), "done");
    thread
        .join()
        .unwrap()
        .expect("serve returns Ok after the drain");
}

/// A service whose readiness fails: it cannot take requests.
#[derive(Clone)]
struct Broken;

impl tower::Service<Request<RequestBody>> for Broken {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Err(std::io::Error::other("the database is gone")))
    }

    fn call(&mut self, _req: Request<RequestBody>) -> Self::Future {
        unreachable!("never ready")
    }
}

#[test]
fn a_service_that_fails_readiness_gets_503_and_the_server_stops() {
    let m2 = FakeMongrel2::new();
    let serve = m2wsgi::serve(connect(&m2), Broken).shutdown_timeout(Duration::from_secs(30));
    let thread = on_a_thread(serve);
    m2.send(RequestBuilder::get("/a").conn_id(1).build());
    assert_eq!(m2.read_response(1, T).expect("a response").status, 503);
    // The connection is given up with the answer: the drain does not wait for the 30 s
    // shutdown timeout on it.
    assert!(
        wait_until(T, || thread.is_finished()),
        "serve did not return"
    );
    thread.join().unwrap().expect("serve returns Ok");
}

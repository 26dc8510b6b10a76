//! Runs a handler in the test process: a [`Server`] on a thread, stopped and joined on drop.
#![allow(dead_code, unreachable_pub)]

use m2wsgi::{Connection, Request, Server, ShutdownHandle};
use std::thread::JoinHandle;
use std::time::Duration;

use super::mongrel2::Mongrel2;
use super::testing::FakeMongrel2;

/// A [`Server`] running on a thread of the test.
pub struct InProcess {
    pub conn: Connection,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<m2wsgi::Result<()>>>,
}

impl InProcess {
    /// Serves `handler` with `workers` threads on `conn`.
    pub fn start<F>(conn: Connection, workers: usize, handler: F) -> InProcess
    where
        F: Fn(Request) + Send + Sync + 'static,
    {
        Self::start_with(conn, workers, |s| s, handler)
    }

    /// Like [`start`](Self::start), with the [`Server`] set up by `configure` first.
    pub fn start_with<F>(
        conn: Connection,
        workers: usize,
        configure: impl FnOnce(Server) -> Server,
        handler: F,
    ) -> InProcess
    where
        F: Fn(Request) + Send + Sync + 'static,
    {
        let server = configure(
            Server::new(conn.clone())
                .workers(workers)
                .shutdown_timeout(Duration::from_secs(5)),
        );
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.serve(handler));
        InProcess {
            conn,
            handle,
            thread: Some(thread),
        }
    }

    /// Stops the server and waits for it.
    pub fn stop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join()
                .expect("server thread panicked")
                .expect("server failed");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection builder for Mongrel2's handler `name` in `m2`, uploads mapped to its chroot.
pub fn builder(m2: &Mongrel2, name: &str) -> m2wsgi::ConnectionBuilder {
    Connection::builder(m2.send_spec(name))
        .recv_spec(m2.recv_spec(name))
        .send_ident(m2.send_ident(name))
        .chroot(m2.host_path("/"))
}

/// A connection to `m2`'s sockets with its sender id.
pub fn connect_fake(m2: &FakeMongrel2) -> Connection {
    Connection::builder(m2.send_spec())
        .recv_spec(m2.recv_spec())
        .send_ident(m2.sender())
        .connect()
        .expect("connect to the fake Mongrel2")
}

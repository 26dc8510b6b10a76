//! Everything that touches ZeroMQ, and nothing else does.
//!
//! - `builder`: [`ConnectionBuilder`], the options of a connection and the sockets it opens.
//! - `connection`: [`Connection`], its state and the sending side (XPUB to Mongrel2).
//! - `receive`: the receiving side (PULL from Mongrel2, or DEALER to a device, with the worker
//!   side of the device protocol).
//! - `link`: telling a Mongrel2 restart from the sockets (the connection's *epoch*), so that no
//!   reply ever reaches a client it was not for.
//! - `device`: [`Device`], the ready-based dispatcher in front of several worker processes.
//! - `scheduler`: the device's routing table (pure bookkeeping, no sockets).
//! - `protocol`: the messages between a device and its workers.
//! - `socket`: small helpers over the `zmq` crate.

mod builder;
mod connection;
mod device;
mod link;
mod protocol;
mod receive;
mod scheduler;
mod socket;

pub use builder::ConnectionBuilder;
pub use connection::Connection;
pub use device::{Device, DeviceStatus, WorkerStatus};

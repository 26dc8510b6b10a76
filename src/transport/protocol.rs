//! The worker protocol between a [`Device`](crate::Device) and its worker processes, spelled
//! once (DEALER on the worker, ROUTER on the device):
//!
//! - worker → device, one frame: `READY <free> <seen> <waiting>` (free request slots; assigned
//!   messages received so far; `1` while it saw Mongrel2 go and the device has not confirmed
//!   the loss with `R`, else `0`) on start, on every change and every 500 ms as a heartbeat;
//!   `BYE` when it drains, repeated every 500 ms as its heartbeat until it leaves. A worker
//!   that cannot answer (Mongrel2 has not subscribed to its reply socket) announces 0 free
//!   slots.
//! - device → worker, two frames: a [`DeviceFlag`] (`A` a new connection assigned to this
//!   worker, `S` a connection it already holds, `R` Mongrel2 went away, `B` the answer to `BYE`,
//!   `P` a liveness probe), then Mongrel2's frame unchanged (empty for `R`, `B` and `P`).
//!
//! The leave handshake: a worker that drains sends `BYE`; the device stops assigning it
//! anything new, routes the next request of every keep-alive connection it held to another
//! worker, and answers `B`. Everything assigned before the `B` arrives before it (one ZeroMQ
//! pipe keeps order), so once a worker has the `B` and has answered what it holds, it can leave
//! without losing a request. After the `B` it only gets the continuations of what it holds
//! (download credits, upload slices, the done message of an async upload, WebSocket frames).
//!
//! Restarts: when the device's link to Mongrel2 breaks, it drops what it queued and sends `R`
//! to every worker it knows. A worker that saw Mongrel2 go (its subscription withdrawn) takes
//! the new Mongrel2's subscription only after that `R`, so no frame of the old server is
//! answered to the new one. A worker the device did not know yet when its link broke (one
//! that started at that moment) says `waiting` in its `READY`; while the device has no
//! Mongrel2 (lost, not reconnected), it answers that worker `R` once, since all it will send
//! afterwards comes from a Mongrel2 that connects later.

/// A message from a worker to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerMsg {
    /// The worker can start `free` more requests and has received `seen` assigned messages;
    /// `waiting`: it saw Mongrel2 go and waits for the device's `R`.
    Ready { free: i64, seen: u64, waiting: bool },
    /// The worker is draining: send it nothing new.
    Bye,
}

impl WorkerMsg {
    /// The frame's bytes.
    pub(super) fn encode(self) -> Vec<u8> {
        match self {
            Self::Ready {
                free,
                seen,
                waiting,
            } => format!("READY {free} {seen} {}", u8::from(waiting)).into_bytes(),
            Self::Bye => b"BYE".to_vec(),
        }
    }

    /// Reads a frame; `None` for anything else. Numbers that do not parse count as 0; a
    /// missing `waiting` (a worker of an earlier version) counts as not waiting.
    pub(super) fn parse(frame: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(frame).ok()?;
        let mut words = text.split_ascii_whitespace();
        match words.next()? {
            "READY" => {
                let free = words.next()?.parse().unwrap_or(0);
                let seen = words.next()?.parse().unwrap_or(0);
                let waiting = words.next() == Some("1");
                Some(Self::Ready {
                    free,
                    seen,
                    waiting,
                })
            }
            "BYE" => Some(Self::Bye),
            _ => None,
        }
    }
}

/// The first frame of what the device sends a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeviceFlag {
    /// A message for a connection newly assigned to this worker (it counts against its free
    /// slots).
    Assigned,
    /// A message for a connection this worker already holds.
    Sticky,
    /// The device's link to Mongrel2 broke: every connection before this is gone, and the
    /// device dropped what it still queued.
    Reset,
    /// The answer to `BYE`: nothing new follows, only continuations of what the worker holds.
    ByeAck,
    /// A liveness probe (the device checks which worker's connection broke); ignored.
    Probe,
}

impl DeviceFlag {
    /// The flag's bytes.
    pub(super) const fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::Assigned => b"A",
            Self::Sticky => b"S",
            Self::Reset => b"R",
            Self::ByeAck => b"B",
            Self::Probe => b"P",
        }
    }

    /// Reads a flag frame.
    pub(super) fn parse(frame: &[u8]) -> Option<Self> {
        match frame {
            b"A" => Some(Self::Assigned),
            b"S" => Some(Self::Sticky),
            b"R" => Some(Self::Reset),
            b"B" => Some(Self::ByeAck),
            b"P" => Some(Self::Probe),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            WorkerMsg::Ready {
                free: 3,
                seen: 17,
                waiting: false,
            },
            WorkerMsg::Ready {
                free: 0,
                seen: 2,
                waiting: true,
            },
            WorkerMsg::Bye,
        ] {
            assert_eq!(WorkerMsg::parse(&m.encode()), Some(m));
        }
        assert_eq!(
            WorkerMsg::parse(b"READY 4 9"),
            Some(WorkerMsg::Ready {
                free: 4,
                seen: 9,
                waiting: false
            })
        );
        assert_eq!(WorkerMsg::parse(b"READY 1"), None);
        assert_eq!(WorkerMsg::parse(b"HELLO"), None);
        for f in [
            DeviceFlag::Assigned,
            DeviceFlag::Sticky,
            DeviceFlag::Reset,
            DeviceFlag::ByeAck,
            DeviceFlag::Probe,
        ] {
            assert_eq!(DeviceFlag::parse(f.as_bytes()), Some(f));
        }
    }
}

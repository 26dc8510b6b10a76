//! [`EncodeError`]: why an encoder refused to build a message for Mongrel2.

/// Why a message to Mongrel2 could not be encoded. The encoders check their arguments before
/// writing anything, so on an error the output buffer is as it was.
///
/// It converts into [`crate::Error::Encode`] with `?`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The list of connection ids is empty: the message would go to nobody.
    #[error("no connection ids")]
    NoTargets,
    /// More connection ids than Mongrel2 takes in one message
    /// ([`MAX_TARGETS`](crate::codec::response::MAX_TARGETS)); it would reject the whole
    /// message. [`encode_deliver`](crate::codec::response::encode_deliver) batches any number.
    #[error("{count} connection ids in one message; Mongrel2 takes at most {max}", max = crate::codec::response::MAX_TARGETS)]
    TooManyTargets {
        /// How many ids were given.
        count: usize,
    },
    /// The sender is empty, or holds a space or a control byte.
    #[error("sender must be a non-empty id without spaces or control bytes")]
    BadSender,
    /// An `X ctl` message with no instruction.
    #[error("an X ctl message needs at least one instruction")]
    NoCtl,
}

//! What handles ask the driver: one enum, one queue (see the module docs of
//! [`connection`](super) for why the queue is unbounded and what bounds it).

use std::sync::Arc;

use bunite_wire::{CallId, CapId};
use tokio::sync::oneshot;

use super::runs::Deferred;
use super::{CloseHandler, ServeHandle};
use crate::client_stream::StreamQueue;
use crate::handler::{CapImpl, Returned};
use crate::schema::{CapDef, IfExists};
use crate::session::{CallRequest, Parent, RunId};
use crate::stats::Stats;
use crate::status::Status;

/// A cap to serve: its definition and implementation.
pub(crate) type ServedCap = (Arc<CapDef>, Arc<dyn CapImpl>);

/// Where an outbound call's outcome goes.
pub(crate) type Reply = super::reply::ReplyTx;

pub(crate) enum Command {
    /// Send a call (its id taken and its in-flight slot already reserved).
    Call { req: Box<CallRequest>, reply: Reply },
    /// Open a client stream (likewise).
    Stream {
        req: Box<CallRequest>,
        queue: Arc<StreamQueue>,
    },
    /// Bootstrap a cap of the peer (reserved likewise): its name and version, and the
    /// handler it is made inside of (`meta.parentCallId`).
    Bootstrap {
        id: CallId,
        cap: Box<(String, Option<String>, Option<Parent>)>,
        reply: Reply,
    },
    /// The caller stopped waiting for a call.
    Cancel(CallId),
    /// A reference we received is released.
    Release(CapId),
    /// A client stream's consumer took this many values.
    Credit(CallId, u32),
    /// A client stream's consumer let it go: dropped or cancelled it (cancelled if still
    /// open), or read its end (what the session still counts for it is let go).
    CancelStream(CallId),
    /// Serve caps, as `IfExists` says; answers the names now owned.
    Serve {
        caps: Box<(Vec<ServedCap>, IfExists)>,
        reply: oneshot::Sender<Result<ServeHandle, Status>>,
    },
    /// Switch a served name to a new implementation.
    Replace {
        cap: Box<ServedCap>,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    /// Unserve names (answers once done, if asked).
    Unserve {
        names: Box<[String]>,
        done: Option<oneshot::Sender<()>>,
    },
    /// Run this once the call's reply is queued.
    AfterReply(Box<(CallId, RunId, Deferred)>),
    /// A handler on its own task finished.
    HandlerDone {
        run: RunId,
        call_id: CallId,
        result: Box<Result<Returned, Status>>,
    },
    /// The policy answered a bootstrap (or failed, saying why).
    PolicyDone {
        call_id: CallId,
        allowed: Result<bool, Box<str>>,
    },
    /// Run this when the connection closes (at once if it has).
    OnClose(CloseHandler),
    /// Close the connection.
    Close,
    /// Drain, then close (`Connection::drain`), within this grace.
    Drain(std::time::Duration),
    /// Answer the exact live counts.
    Stats(oneshot::Sender<Stats>),
}

/// Every connection's queue allocates room for a block of 32 commands when it is made, so
/// an idle connection pays for the largest variant 32 times: the rare large ones are boxed
/// (at 40 bytes a command, the block took 256 bytes more a connection end).
pub(crate) const COMMAND_SIZE_MAX: usize = 32;

const _: () = assert!(std::mem::size_of::<Command>() <= COMMAND_SIZE_MAX);

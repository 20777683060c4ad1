//! Streams (PROTOCOL §10, §13.1–13.3): the server's credit window per stream and the
//! client's receive buffers.
//!
//! Server: a stream may send `next` only while its window is positive. Credit frames add to
//! the window (0 or missing is ignored, the window is capped), a cancel stops the source
//! even while it waits for credit and sends `end`.
//!
//! Client: values go into a bounded buffer; a server that ignores credit and overflows it
//! fails the stream with `resource_exhausted {reason:"stream_credit_window"}`.

use std::sync::Arc;

use bunite_wire::{CallId, Cancel, CapId, Frame, StreamEvent, StreamFrame, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::outbound::CallRequest;
use super::Session;
use crate::events::{Event, StreamEvent as StreamEv, StreamPhase};
use crate::schema::MAX_INITIAL_CREDIT;
use crate::status::{reason, Code, Status};

/// The most credit a server stream's window may hold. A client cannot make us queue more
/// than this many frames per stream, whatever credit it sends.
pub(crate) const MAX_WINDOW: u64 = MAX_INITIAL_CREDIT as u64;

/// How many values a client stream buffers: at most the server's initial credit (≤ 1024)
/// can be outstanding, since credit is only returned for consumed values.
pub(crate) const CLIENT_BUFFER: usize = MAX_INITIAL_CREDIT as usize + 1;

/// The client returns credit per this many consumed values (PROTOCOL §5).
pub(crate) const CREDIT_BATCH: u32 = 8;

pub(crate) struct ServerStream {
    pub cap_id: CapId,
    pub cap_name: String,
    pub method: String,
    pub window: u64,
    pub count: u64,
    pub signal: CancellationToken,
    pub abort: CancellationToken,
    pub wake: Arc<Notify>,
}

pub(crate) struct ClientStreamState {
    pub tx: mpsc::Sender<Result<Value, Status>>,
    pub cap_id: CapId,
}

/// Whether a server stream may send now.
pub(crate) enum Credit {
    Ready,
    Wait(Arc<Notify>),
    Gone,
}

impl Session {
    pub(super) fn open_server_stream(&mut self, id: CallId, s: ServerStream) {
        self.emit(Event::Stream(StreamEv {
            cap_id: s.cap_id,
            cap_name: Some(s.cap_name.clone()),
            method: s.method.clone(),
            call_id: id,
            phase: StreamPhase::Start,
            count: 0,
        }));
        self.server_streams.insert(id, s);
    }

    /// Whether stream `id` has credit, must wait, or is gone (cancelled, closed).
    pub fn stream_credit(&self, id: CallId) -> Credit {
        match self.server_streams.get(&id) {
            None => Credit::Gone,
            Some(s) if s.window > 0 => Credit::Ready,
            Some(s) => Credit::Wait(Arc::clone(&s.wake)),
        }
    }

    /// Sends one value; false when the stream is gone. A value too large for the peer ends
    /// the stream with `stream error` `resource_exhausted`.
    pub fn stream_next(&mut self, id: CallId, value: Value) -> bool {
        let Some(s) = self.server_streams.get_mut(&id) else {
            return false;
        };
        s.window = s.window.saturating_sub(1);
        s.count += 1;
        let frame = Frame::Stream(StreamFrame {
            id,
            event: StreamEvent::Next(value),
        });
        if let Err(e) = self.send_bounded(&frame) {
            let status = Status::resource_exhausted(
                format!(
                    "stream value of {} bytes exceeds the peer's maxBytes {}",
                    e.size, e.max
                ),
                reason::MAX_FRAME_BYTES,
            );
            self.stream_error(id, status);
            return false;
        }
        true
    }

    /// The source ended: `end`.
    pub fn stream_end(&mut self, id: CallId) {
        self.close_server_stream(id, StreamEvent::End, StreamPhase::End);
    }

    /// The source failed: `stream error` with its Status.
    pub fn stream_error(&mut self, id: CallId, status: Status) {
        let wire = status.to_wire_from_handler();
        self.close_server_stream(id, StreamEvent::Error(wire), StreamPhase::Error);
    }

    fn close_server_stream(&mut self, id: CallId, event: StreamEvent, phase: StreamPhase) {
        let Some(s) = self.server_streams.remove(&id) else {
            return;
        };
        s.abort.cancel();
        self.send(&Frame::Stream(StreamFrame { id, event }));
        self.emit(Event::Stream(StreamEv {
            cap_id: s.cap_id,
            cap_name: Some(s.cap_name),
            method: s.method,
            call_id: id,
            phase,
            count: s.count,
        }));
    }

    /// A cancel for a server stream: stop the source (even while it waits for credit) and
    /// send `end` (PROTOCOL §13.3). Returns false when `id` is no stream of ours.
    pub(super) fn cancel_server_stream(&mut self, id: CallId) -> bool {
        let Some(s) = self.server_streams.get(&id) else {
            return false;
        };
        s.signal.cancel();
        self.close_server_stream(id, StreamEvent::End, StreamPhase::Cancel);
        true
    }

    pub(super) fn on_stream(&mut self, f: StreamFrame) {
        match f.event {
            StreamEvent::Credit(Some(k)) if k > 0 => {
                if let Some(s) = self.server_streams.get_mut(&f.id) {
                    s.window = s.window.saturating_add(k).min(MAX_WINDOW);
                    s.wake.notify_one();
                }
            }
            StreamEvent::Credit(_) => {}
            StreamEvent::Next(v) => self.client_stream_push(f.id, v),
            StreamEvent::End => {
                self.client_streams.remove(&f.id);
            }
            StreamEvent::Error(e) => {
                self.fail_client_stream(f.id, Status::from_wire(e));
            }
        }
    }

    fn client_stream_push(&mut self, id: CallId, v: Value) {
        let Some(s) = self.client_streams.get(&id) else {
            return;
        };
        // One slot stays free for the terminal error.
        if s.tx.capacity() <= 1 {
            let status = Status::resource_exhausted(
                "stream sent more values than the credit window allows",
                reason::STREAM_CREDIT_WINDOW,
            );
            self.fail_client_stream(id, status);
            self.send(&Frame::Cancel(Cancel {
                id,
                reason: Some("stream_credit_window".into()),
            }));
            return;
        }
        let _ = s.tx.try_send(Ok(v));
    }

    pub(super) fn fail_client_stream(&mut self, id: CallId, status: Status) -> bool {
        match self.client_streams.remove(&id) {
            Some(s) => {
                let _ = s.tx.try_send(Err(status));
                true
            }
            None => false,
        }
    }

    /// Opens a client stream. The same local checks as a call.
    pub fn start_stream(
        &mut self,
        req: CallRequest,
        tx: mpsc::Sender<Result<Value, Status>>,
    ) -> Result<CallId, Status> {
        let cap_id = req.cap_id;
        let id = self.send_call(req)?;
        self.client_streams
            .insert(id, ClientStreamState { tx, cap_id });
        Ok(id)
    }

    /// Returns credit for consumed values of a client stream still open.
    pub fn return_credit(&mut self, id: CallId, messages: u32) {
        if messages == 0 || self.closed.is_some() || !self.client_streams.contains_key(&id) {
            return;
        }
        let credit = StreamEvent::Credit(Some(u64::from(messages)));
        self.send(&Frame::Stream(StreamFrame { id, event: credit }));
    }

    /// The consumer dropped or cancelled a client stream: `cancel {reason:"client_cancel"}`.
    pub fn cancel_client_stream(&mut self, id: CallId) {
        if self.client_streams.remove(&id).is_some() && self.closed.is_none() {
            self.send(&Frame::Cancel(Cancel {
                id,
                reason: Some("client_cancel".into()),
            }));
        }
    }

    /// A `result` for a stream id fails the stream (PROTOCOL §10). False when `id` is no
    /// stream of ours.
    pub(super) fn result_for_stream(&mut self, id: CallId, outcome: Result<Value, Status>) -> bool {
        let status = match outcome {
            Ok(_) => Status::new(Code::InvalidArgument, "stream method returned result frame"),
            Err(s) => s,
        };
        self.fail_client_stream(id, status)
    }
}

//! Streams (PROTOCOL §10, §13.1–13.3).
//!
//! Server side: a stream may send `next` only while its window is positive. Credit frames
//! add to the window (0 or missing is ignored; the window is capped, so a client cannot
//! make us queue without bound); a cancel stops the source even while it waits for credit
//! and sends `end`.
//!
//! Client side: values go to the consumer; a server that sends more than the credit it
//! could possibly hold (its largest initial credit plus what we returned) fails the stream
//! with `resource_exhausted {reason:"stream_credit_window"}`, and one whose values not yet
//! read would take the connection past `Limits::max_buffered_stream_bytes` fails with
//! `resource_exhausted` and is cancelled, so a consumer's buffer is bounded in number and
//! in bytes whatever the server does.

use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::Arc;

use bunite_wire::{
    CallId, Cancel, CapId, Frame, Outgoing, Payload, StreamEvent, StreamFrame, Text,
};

use super::output::{Output, RunId};
use super::{clip_peer_status, Pay, Session, Types};
use crate::error::{Error, LocalError};
use crate::events::{Event, ServerStreamEvent, StreamPhase};
use crate::schema::{CapDef, MAX_INITIAL_CREDIT};
use crate::status::{reason, Code, Status};

/// What every value waiting to be read keeps beside its bytes, charged with them to
/// `Limits::max_buffered_stream_bytes`: the value in its consumer's queue and its size in
/// the session's count. Without it a server sending values of a few bytes each kept
/// several times what was counted (a `next` of one byte is about 20 on the wire).
pub(crate) const VALUE_KEPT: usize = std::mem::size_of::<Payload>() + std::mem::size_of::<usize>();

/// The most credit a server stream's window may hold.
pub(crate) const MAX_WINDOW: u64 = MAX_INITIAL_CREDIT as u64;

/// How many values a client stream may hold unconsumed: at most the server's initial
/// credit (≤ 1024) can be outstanding, since credit is only returned for consumed values.
pub(crate) const CLIENT_BUFFER: usize = MAX_INITIAL_CREDIT as usize;

/// The client returns credit per this many consumed values (PROTOCOL §5).
pub(crate) const CREDIT_BATCH: u32 = 8;

pub(crate) struct ServerStream {
    pub run: RunId,
    cap_id: CapId,
    def: Arc<CapDef>,
    method: Text,
    window: u64,
    count: u64,
}

impl ServerStream {
    pub fn new(run: RunId, cap_id: CapId, def: Arc<CapDef>, method: Text, window: u64) -> Self {
        ServerStream {
            run,
            cap_id,
            def,
            method,
            window,
            count: 0,
        }
    }

    /// The `stream` event of its `phase` (PROTOCOL §15), with the values sent so far.
    pub(super) fn event(&self, call_id: CallId, phase: StreamPhase) -> Event {
        Event::Stream(ServerStreamEvent {
            cap_id: self.cap_id,
            cap_name: Some(self.def.name().to_owned()),
            method: self.method.to_string(),
            call_id,
            phase,
            count: self.count,
        })
    }
}

pub(crate) struct ClientStreamState<T: Types> {
    pub sink: T::Sink,
    pub cap_id: CapId,
    /// The peer's call whose handler opened it (`meta.parentCallId`), while that handler
    /// runs: the stream is in `Outbound::children` under it.
    pub parent: Option<CallId>,
    /// What each value delivered and not yet returned as credit keeps, oldest first (its
    /// message and the definitions it is charged for: `Payload::kept_beyond`), counted in
    /// `Outbound::buffered`. Its length is the number of those values.
    pub sizes: VecDeque<usize>,
    /// Credit returned by the consumer and not yet sent: the returns of one pass go out
    /// as one `credit` frame.
    pub credit: u64,
    /// Where its short values are copied (`Payload::unpin`); empty until one is.
    pub arena: BytesMut,
}

impl<T: Types> Session<T> {
    /// Where the values of each client stream still open go.
    pub fn client_stream_sinks(&self) -> impl Iterator<Item = &T::Sink> {
        self.outbound.streams.values().map(|s| &s.sink)
    }

    pub(super) fn open_server_stream(&mut self, id: CallId, s: ServerStream) {
        let (cap_id, def, method) = (s.cap_id, Arc::clone(&s.def), s.method.to_string());
        self.emit(|| {
            Event::Stream(ServerStreamEvent {
                cap_id,
                cap_name: Some(def.name().to_owned()),
                method,
                call_id: id,
                phase: StreamPhase::Start,
                count: 0,
            })
        });
        self.inbound.streams.insert(id, s);
    }

    fn server_stream(&mut self, id: CallId, run: RunId) -> Option<&mut ServerStream> {
        self.inbound.streams.get_mut(&id).filter(|s| s.run == run)
    }

    /// How many values stream `id` may send now; `None` once it is gone.
    pub fn stream_window(&self, id: CallId, run: RunId) -> Option<u64> {
        let s = self.inbound.streams.get(&id).filter(|s| s.run == run)?;
        Some(s.window)
    }

    /// Sends one value of a server stream: the credit left after it, or `None` once the
    /// stream is gone. A value too large for the peer ends the stream with `stream error`
    /// `resource_exhausted`. (The runtime pays for each value:
    /// [`stream_item_paying`](Self::stream_item_paying).)
    #[cfg(test)]
    pub fn stream_item(
        &mut self,
        id: CallId,
        run: RunId,
        value: impl Into<Outgoing>,
    ) -> Option<u64> {
        self.stream_item_paying(id, run, value, &mut |_| true)
    }

    /// Sends one value of a server stream, queued only if `pay` agrees (see [`Pay`]): the
    /// credit left after it, or `None` once the stream is gone. A value too large for the
    /// peer or the send room, or refused, ends the stream with `stream error`
    /// `resource_exhausted`.
    pub fn stream_item_paying(
        &mut self,
        id: CallId,
        run: RunId,
        value: impl Into<Outgoing>,
        pay: Pay<'_>,
    ) -> Option<u64> {
        let s = self.server_stream(id, run)?;
        s.window = s.window.saturating_sub(1);
        s.count += 1;
        let left = s.window;
        let frame = Frame::Stream(StreamFrame {
            id,
            event: StreamEvent::Next(value.into()),
        });
        if let Err(status) = self.send_answer(&frame, "stream value", pay) {
            self.stream_done(id, run, Err(status));
            self.outputs.push_back(Output::Abort(run));
            return None;
        }
        Some(left)
    }

    /// A server stream's source ended (`end`) or failed (`stream error` with its Status).
    pub fn stream_done(&mut self, id: CallId, run: RunId, result: Result<(), Status>) {
        if self.server_stream(id, run).is_none() {
            return;
        }
        self.inbound.end_run(run);
        match result {
            Ok(()) => self.close_server_stream(id, StreamEvent::End, StreamPhase::End),
            Err(status) => {
                let wire = status.to_wire_from_handler();
                self.close_server_stream(id, StreamEvent::Error(wire), StreamPhase::Error);
            }
        }
        self.orphan_children(id);
    }

    fn close_server_stream(&mut self, id: CallId, event: StreamEvent, phase: StreamPhase) {
        let Some(s) = crate::hashing::take(&mut self.inbound.streams, &id) else {
            return;
        };
        match event {
            StreamEvent::Error(error) => self.send_error(id, error, true),
            event => self.send(&Frame::Stream(StreamFrame { id, event })),
        }
        self.emit(|| s.event(id, phase));
    }

    /// A cancel for a server stream: stop the source (even while it waits for credit) and
    /// send `end` (PROTOCOL §13.3). False when `id` is no stream of ours.
    pub(super) fn cancel_server_stream(&mut self, id: CallId) -> bool {
        let Some(run) = self.inbound.streams.get(&id).map(|s| s.run) else {
            return false;
        };
        self.inbound.end_run(run);
        self.outputs.push_back(Output::Abort(run));
        self.close_server_stream(id, StreamEvent::End, StreamPhase::Cancel);
        true
    }

    /// Stops the server streams on caps we just revoked. The peer's client ended them at
    /// the `cap_revoked` (PROTOCOL §12) without a cancel, so nothing would read or stop
    /// them: each source would wait for credit, holding its in-flight slot and whatever it
    /// holds, until the connection closed. They end as cancelled ones do (their sources
    /// dropped, which cancels the calls they were making); the `end` each sends after the
    /// `cap_revoked` is one the peer ignores.
    pub(super) fn stop_streams_on(&mut self, caps: &[CapId]) {
        let on: Vec<CallId> = (self.inbound.streams.iter())
            .filter(|(_, s)| caps.contains(&s.cap_id))
            .map(|(id, _)| *id)
            .collect();
        for id in on {
            self.cancel_server_stream(id);
            self.orphan_children(id);
        }
    }

    pub(super) fn on_stream(&mut self, f: StreamFrame<Payload>) {
        match f.event {
            StreamEvent::Credit(Some(k)) if k > 0 => {
                if let Some(s) = self.inbound.streams.get_mut(&f.id) {
                    let was_closed = s.window == 0;
                    s.window = s.window.saturating_add(k).min(MAX_WINDOW);
                    if was_closed {
                        let run = s.run;
                        self.outputs.push_back(Output::Credit(run));
                    }
                }
            }
            StreamEvent::Credit(_) => {}
            StreamEvent::Next(payload) => self.client_stream_push(f.id, payload),
            StreamEvent::End => {
                if !self.end_client_stream(f.id, None, 0) {
                    self.stream_frame_for_call(f.id, false, None);
                }
            }
            StreamEvent::Error(e) => {
                let error = Error::Remote(Status::from_wire(e));
                if self.outbound.streams.contains_key(&f.id) {
                    self.end_client_stream(f.id, Some(error), self.message_len);
                } else {
                    self.stream_frame_for_call(f.id, false, Some(error));
                }
            }
        }
    }

    fn client_stream_push(&mut self, id: CallId, mut item: Payload) {
        let Some(s) = self.outbound.streams.get_mut(&id) else {
            return self.stream_frame_for_call(id, true, None);
        };
        if s.sizes.len() >= CLIENT_BUFFER {
            let status = Status::resource_exhausted(
                "stream sent more values than the credit window allows",
                reason::STREAM_CREDIT_WINDOW,
            );
            return self.overflow(id, status, reason::STREAM_CREDIT_WINDOW);
        }
        // What the value keeps until it is read: its message (its own bytes if short or a
        // small part of it: `Payload::unpin`), and definitions its record table holds
        // that the decoder may since have replaced (at most one table's worth more is kept
        // than counted: `Payload::kept_beyond`).
        item.unpin(&mut s.arena);
        let (size, table) = item.kept_beyond(self.outbound.last_table.as_ref());
        let size = size.saturating_add(VALUE_KEPT);
        let max = self.cfg.limits.max_buffered_stream_bytes;
        let buffered = self.outbound.buffered.saturating_add(size);
        if buffered > max {
            // The credit window bounds how many values wait, not how large they are (1,024
            // values of 64 MiB each would be 64 GiB).
            let status = Status::new(
                Code::ResourceExhausted,
                format!(
                    "stream values not yet read would take {buffered} bytes, more than the \
                     connection's limit of {max} bytes (max_buffered_stream_bytes)"
                ),
            );
            return self.overflow(id, status, "client_cancel");
        }
        s.sizes.push_back(size);
        self.outbound.buffered = buffered;
        if table.is_some() {
            self.outbound.last_table = table;
        }
        let to = s.sink.clone();
        self.outputs.push_back(Output::StreamItem { to, item });
    }

    /// A client stream holds more than it may: it fails with `status`
    /// (`LocalError::StreamOverflow`) and the server is sent `cancel {reason}`.
    fn overflow(&mut self, id: CallId, status: Status, reason: &str) {
        let error = Error::local(LocalError::StreamOverflow, status);
        self.end_client_stream(id, Some(error), 0);
        self.send(&Frame::Cancel(Cancel {
            id,
            reason: Some(reason.into()),
        }));
    }

    /// Removes a client stream from the table; what its values keep stays in `buffered`
    /// (see `end_client_stream` and `unbuffer`).
    fn take_client_stream(&mut self, id: CallId) -> Option<ClientStreamState<T>> {
        let s = crate::hashing::take(&mut self.outbound.streams, &id)?;
        self.outbound.on_cap.remove(s.cap_id);
        if let Some(parent) = s.parent {
            self.outbound.children.remove(parent, id);
        }
        if self.outbound.streams.is_empty() {
            self.outbound.last_table = None;
        }
        Some(s)
    }

    /// Takes `freed` (what values read or let go kept) off the bytes buffered.
    fn unbuffer(&mut self, freed: usize) {
        self.outbound.buffered = self.outbound.buffered.saturating_sub(freed);
    }

    /// Ends a client stream still open (false if it is not): its consumer gets the end
    /// (`error`, or a clean one) after the values it has not read yet. Those stay counted
    /// in `buffered` until it reads them or lets the stream go (`ended`): a consumer that
    /// stops reading holds them, and a server that ends each stream once it has filled the
    /// bound would otherwise make it hold one bound per stream. A peer's error is counted
    /// too, at `error_len` (the length of the message it came in); one that does not fit
    /// within the bound is kept clipped as a goaway's is (`clip_peer_status`).
    pub(super) fn end_client_stream(
        &mut self,
        id: CallId,
        mut error: Option<Error>,
        error_len: usize,
    ) -> bool {
        let Some(mut s) = self.take_client_stream(id) else {
            return false;
        };
        let fits = self.outbound.buffered.saturating_add(error_len)
            <= self.cfg.limits.max_buffered_stream_bytes;
        if error_len > 0 {
            error = match error {
                Some(Error::Remote(status)) if !fits => {
                    Some(Error::Remote(clip_peer_status(status)))
                }
                error if fits => {
                    s.sizes.push_back(error_len);
                    self.outbound.buffered += error_len;
                    error
                }
                error => error,
            };
        }
        if !s.sizes.is_empty() {
            self.outbound.ended.insert(id, s.sizes);
        }
        self.outputs
            .push_back(Output::StreamEnd { to: s.sink, error });
        true
    }

    /// Returns credit for `messages` consumed values of a client stream still open. Sent
    /// with the next message (returns made together are summed into one frame).
    pub fn return_credit(&mut self, id: CallId, messages: u32) {
        if messages == 0 || self.closed.is_some() {
            return;
        }
        let Some(s) = self.outbound.streams.get_mut(&id) else {
            return self.read_after_end(id, messages);
        };
        let freed = take_read(&mut s.sizes, messages);
        if s.credit == 0 {
            self.outbound.credit_due.push(id);
        }
        s.credit += u64::from(messages);
        self.unbuffer(freed);
    }

    /// The credit frames of the streams that have credit to return.
    pub(super) fn credit_frames(&mut self) -> Vec<Frame> {
        let due = std::mem::take(&mut self.outbound.credit_due);
        due.into_iter()
            .filter_map(|id| {
                let s = self.outbound.streams.get_mut(&id)?;
                let messages = std::mem::take(&mut s.credit);
                (messages > 0).then_some(Frame::Stream(StreamFrame {
                    id,
                    event: StreamEvent::Credit(Some(messages)),
                }))
            })
            .collect()
    }

    /// Server windows stay within their cap.
    #[cfg(any(test, feature = "test-util"))]
    pub(super) fn check_streams(&self) {
        for (id, s) in &self.inbound.streams {
            assert!(
                s.window <= MAX_WINDOW,
                "stream {id}: window {} over the cap",
                s.window
            );
        }
    }

    /// The consumer dropped or cancelled a client stream: `cancel {reason:"client_cancel"}`.
    pub fn cancel_client_stream(&mut self, id: CallId) {
        if let Some(s) = self.take_client_stream(id) {
            self.unbuffer(s.sizes.iter().sum());
            if self.closed.is_none() {
                self.send(&Frame::Cancel(Cancel {
                    id,
                    reason: Some("client_cancel".into()),
                }));
            }
        } else if let Some(sizes) = crate::hashing::take(&mut self.outbound.ended, &id) {
            // The consumer of an ended stream read its end, or let it go.
            self.unbuffer(sizes.iter().sum());
        }
    }

    /// The consumer of an ended stream read `messages` more of its values.
    fn read_after_end(&mut self, id: CallId, messages: u32) {
        let Some(sizes) = self.outbound.ended.get_mut(&id) else {
            return;
        };
        let freed = take_read(sizes, messages);
        if sizes.is_empty() {
            crate::hashing::take(&mut self.outbound.ended, &id);
        }
        self.unbuffer(freed);
    }

    /// A `result` for a stream id fails the stream (PROTOCOL §10).
    pub(super) fn result_for_stream(&mut self, id: CallId, outcome: Result<Payload, Error>) {
        let (error, error_len) = match outcome {
            Ok(_) => (
                Error::local(
                    LocalError::WrongKind,
                    Status::new(Code::InvalidArgument, "stream method returned result frame"),
                ),
                0,
            ),
            Err(e) => (e, self.message_len),
        };
        self.end_client_stream(id, Some(error), error_len);
    }
}

/// Takes the first `messages` of a stream's `sizes` (values its consumer read) and returns
/// what they kept. Read empty, it gives back the room a burst took (up to the window).
fn take_read(sizes: &mut VecDeque<usize>, messages: u32) -> usize {
    let read = (messages as usize).min(sizes.len());
    let freed = sizes.drain(..read).sum();
    if sizes.is_empty() && sizes.capacity() > crate::hashing::KEPT_ROOM {
        *sizes = VecDeque::new();
    }
    freed
}

//! The runner's side of the gateway: which request task waits for which
//! answer, and the agents' streams on their way from a pump to a forward.
//!
//! `IngressForward` names a stream the core read the agent's answer on, so a
//! pump still owns it. As for a splice, the pump is detached and hands the
//! stream back on the runner's ordered channel: bytes it read after the
//! core's last look (the start of the response) arrive before the stream and
//! are appended to the prefix, so the forward loses none.

use super::Answer;
use crate::runtime::pump::PumpEvent;
use bytes::BytesMut;
use meshproxy_core::ids::{PeerId, RequestId, StreamId};
use meshproxy_core::io::{Close, IngressResponse};
use std::collections::{HashMap, HashSet};
use tokio::sync::oneshot;

/// A stream whose pump was told to detach, for a forward.
#[derive(Debug)]
struct Handing {
    request: RequestId,
    agent: PeerId,
    prefix: BytesMut,
}

/// Answers owed to request tasks and streams being handed to them.
#[derive(Debug, Default)]
pub struct Bridge {
    waiting: HashMap<RequestId, oneshot::Sender<Answer>>,
    handing: HashMap<StreamId, Handing>,
    /// Requests forwarded to an agent and not done yet.
    forwarded: HashSet<RequestId>,
}

impl Bridge {
    /// A request task waits for the core's answer to `request` on `reply`.
    pub fn wait(&mut self, request: RequestId, reply: oneshot::Sender<Answer>) {
        self.waiting.insert(request, reply);
    }

    /// The core answered `request` itself.
    pub fn respond(&mut self, request: RequestId, response: IngressResponse) {
        let _ = self.answer(request, Answer::Respond(response));
    }

    /// The core handed `stream` over for `request`; `detaching` says whether
    /// its pump was told to give it back (if not, the stream is already gone).
    pub fn forward(
        &mut self,
        request: RequestId,
        stream: StreamId,
        agent: PeerId,
        prefix: &[u8],
        detaching: bool,
    ) {
        if detaching {
            self.handing.insert(stream, Handing { request, agent, prefix: BytesMut::from(prefix) });
        } else {
            let _ = self.answer(request, Answer::Lost);
        }
    }

    /// Whether `stream` is being handed over (its pump's reports are ours).
    pub fn is_handing(&self, stream: StreamId) -> bool {
        self.handing.contains_key(&stream)
    }

    /// What the pump of a stream being handed over reports.
    pub fn on_pump(&mut self, stream: StreamId, event: PumpEvent) {
        match event {
            PumpEvent::Data(data) => {
                if let Some(h) = self.handing.get_mut(&stream) {
                    h.prefix.extend_from_slice(&data);
                }
            }
            // The stream stays readable to its end: the forward reads that too.
            PumpEvent::Closed(Close::Fin) => {}
            PumpEvent::Closed(Close::Reset) => {
                // The pump ended with the stream: no `Detached` follows.
                if let Some(h) = self.handing.remove(&stream) {
                    let _ = self.answer(h.request, Answer::Lost);
                }
            }
            PumpEvent::Detached { io, .. } => {
                if let Some(h) = self.handing.remove(&stream) {
                    let answer = Answer::Forward { io, prefix: h.prefix.freeze(), agent: h.agent };
                    if self.answer(h.request, answer) {
                        self.forwarded.insert(h.request);
                    }
                }
            }
        }
    }

    /// The request task reported `request` done.
    pub fn done(&mut self, request: RequestId) {
        self.forwarded.remove(&request);
        // Gone before any answer: nobody will read one.
        self.waiting.remove(&request);
    }

    /// Requests carried by an agent's stream now.
    pub fn forwards(&self) -> usize {
        self.forwarded.len()
    }

    /// Whether the request task took the answer. A task that went away
    /// drops it, and with it the stream (a reset); its report tells the core.
    fn answer(&mut self, request: RequestId, answer: Answer) -> bool {
        self.waiting.remove(&request).is_some_and(|reply| reply.send(answer).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::pump::PumpState;
    use bytes::Bytes;

    fn detached() -> PumpEvent {
        let (io, _far) = tokio::io::duplex(64);
        PumpEvent::Detached { io: Box::new(io), state: PumpState::default() }
    }

    #[test]
    fn a_forward_gets_the_stream_behind_every_byte_read_during_the_hand_over() {
        let mut b = Bridge::default();
        let agent = PeerId::from_u64(7);
        let (tx, mut rx) = oneshot::channel();
        b.wait(RequestId(1), tx);
        b.forward(RequestId(1), StreamId(10), agent, b"HTTP/1.1 2", true);
        assert!(b.is_handing(StreamId(10)));
        b.on_pump(StreamId(10), PumpEvent::Data(Bytes::from_static(b"00 OK\r\n")));
        b.on_pump(StreamId(10), PumpEvent::Closed(Close::Fin));
        assert!(rx.try_recv().is_err(), "no answer before the stream is back");
        b.on_pump(StreamId(10), detached());
        let Ok(Answer::Forward { prefix, agent: a, .. }) = rx.try_recv() else {
            panic!("no forward")
        };
        assert_eq!((&prefix[..], a), (&b"HTTP/1.1 200 OK\r\n"[..], agent));
        assert!(!b.is_handing(StreamId(10)));
        assert_eq!(b.forwards(), 1);
        b.done(RequestId(1));
        assert_eq!(b.forwards(), 0);
    }

    #[test]
    fn a_stream_lost_in_the_hand_over_is_a_lost_answer_and_a_gone_task_is_not_counted() {
        let mut b = Bridge::default();
        let agent = PeerId::from_u64(7);
        // The pump was already gone.
        let (tx, mut rx) = oneshot::channel();
        b.wait(RequestId(1), tx);
        b.forward(RequestId(1), StreamId(1), agent, b"", false);
        assert!(matches!(rx.try_recv(), Ok(Answer::Lost)));
        // The stream reset while its pump detached.
        let (tx, mut rx) = oneshot::channel();
        b.wait(RequestId(2), tx);
        b.forward(RequestId(2), StreamId(2), agent, b"", true);
        b.on_pump(StreamId(2), PumpEvent::Closed(Close::Reset));
        assert!(matches!(rx.try_recv(), Ok(Answer::Lost)));
        assert!(!b.is_handing(StreamId(2)));
        // The request task went away: the stream is dropped, nothing is counted.
        let (tx, rx) = oneshot::channel();
        b.wait(RequestId(3), tx);
        drop(rx);
        b.forward(RequestId(3), StreamId(3), agent, b"", true);
        b.on_pump(StreamId(3), detached());
        assert_eq!(b.forwards(), 0);
        // An answer of the core's own reaches its task.
        let (tx, mut rx) = oneshot::channel();
        b.wait(RequestId(4), tx);
        b.respond(
            RequestId(4),
            meshproxy_core::io::IngressResponse {
                status: 404,
                outcome: meshproxy_core::io::IngressOutcome::NoRoute,
                location: None,
                content_type: "text/plain".into(),
                body: Bytes::new(),
                version: 1,
            },
        );
        assert!(matches!(rx.try_recv(), Ok(Answer::Respond(r)) if r.status == 404));
    }
}

//! [`Report`]: the one `IngressDone` a request owes the core, sent however
//! the request's task ends — also when hyper drops it because the client went
//! away, which is why it is a guard that reports from `Drop`.

use super::IngressMsg;
use crate::ops::metrics::IngressMetrics;
use crate::runtime::runner::RunnerMsg;
use meshproxy_core::ids::RequestId;
use meshproxy_core::io::IngressEnd;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Owes the core one `IngressDone` for `request`; sends it on
/// [`finish`](Report::finish), or as `ClientGone` when dropped unfinished.
#[derive(Debug)]
pub struct Report {
    request: RequestId,
    runner: mpsc::Sender<RunnerMsg>,
    metrics: Option<Arc<IngressMetrics>>,
    started: Instant,
    /// Whether the core still waits for an `IngressDone` (false once it
    /// answered without an agent: it forgot the request then).
    owed: bool,
    /// Whether the request's duration was counted.
    timed: bool,
}

impl Report {
    /// A report for `request`, which arrived at `started`.
    pub fn new(
        request: RequestId,
        runner: mpsc::Sender<RunnerMsg>,
        metrics: Option<Arc<IngressMetrics>>,
        started: Instant,
    ) -> Report {
        Report { request, runner, metrics, started, owed: true, timed: false }
    }

    /// The core answered the request itself and forgot it: nothing is owed.
    pub fn answered(mut self) {
        self.owed = false;
        self.time();
    }

    /// Where the request's bytes are counted.
    pub fn metrics(&self) -> Option<Arc<IngressMetrics>> {
        self.metrics.clone()
    }

    /// The request ended this way.
    pub fn finish(mut self, end: IngressEnd) {
        self.send(end);
    }

    fn time(&mut self) {
        if !self.timed {
            self.timed = true;
            if let Some(m) = &self.metrics {
                m.duration(self.started.elapsed());
            }
        }
    }

    fn send(&mut self, end: IngressEnd) {
        self.time();
        if !std::mem::take(&mut self.owed) {
            return;
        }
        let msg = RunnerMsg::Ingress(IngressMsg::Done { request: self.request, end });
        match self.runner.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            // A full queue must not lose it: the core would hold the request.
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let runner = self.runner.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = runner.send(msg).await;
                    });
                }
            }
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.send(IngressEnd::ClientGone);
    }
}

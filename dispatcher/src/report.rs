//! The agent reports finished steps in batches. While one call to the edge is in flight, the
//! steps that finish meanwhile wait for the next call, which carries them all (group commit):
//! a lone step is reported at once, and a burst of a thousand short steps costs a few calls
//! instead of a thousand (each call is a hop through the edge's router, the cluster's queue and
//! the runs' objects).

use concurrent_core::wire::{batches_by_size, CompleteRequest, MAX_COMPLETIONS, MAX_MESSAGE_BYTES};
use tokio::sync::{mpsc, oneshot};

use crate::edge::{Edge, EdgeError};

struct Pending {
    request: CompleteRequest,
    settled: oneshot::Sender<Result<(), EdgeError>>,
}

/// A handle on the agent's reporting loop; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Reporter {
    /// Starts the loop that reports for `edge`'s agent; it ends when every handle is dropped.
    pub fn start(edge: Edge) -> Reporter {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(report_loop(edge, waiting));
        Reporter { queue }
    }

    /// Reports one completion, in the next call to the edge; what the edge answered for it.
    pub async fn complete(&self, request: CompleteRequest) -> Result<(), EdgeError> {
        let (settled, answer) = oneshot::channel();
        let gone = || EdgeError::Unavailable("the agent's reporting loop has stopped".into());
        self.queue
            .send(Pending { request, settled })
            .map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

async fn report_loop(edge: Edge, mut waiting: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_COMPLETIONS {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // Calls within the edge's message size; one outcome bigger than that travels alone.
        let sizes: Vec<usize> = batches_by_size(
            batch.iter().map(|p| &p.request).collect(),
            MAX_MESSAGE_BYTES,
        )
        .iter()
        .map(Vec::len)
        .collect();
        let mut batch = batch.into_iter();
        for size in sizes {
            let call: Vec<Pending> = batch.by_ref().take(size).collect();
            settle(&edge, call).await;
        }
    }
}

/// One call to the edge for `call`, and each completion's own answer.
async fn settle(edge: &Edge, call: Vec<Pending>) {
    let requests: Vec<CompleteRequest> = call.iter().map(|p| p.request.clone()).collect();
    match edge.completions(requests).await {
        Ok(answer) if answer.results.len() == call.len() => {
            for (pending, result) in call.into_iter().zip(answer.results) {
                let settled = match (result.refused, result.unavailable) {
                    (Some(why), _) => Err(EdgeError::Refused(why)),
                    (None, Some(why)) => Err(EdgeError::Unavailable(why)),
                    (None, None) => Ok(()),
                };
                pending.settled.send(settled).ok();
            }
        }
        Ok(answer) => {
            let why = format!(
                "the edge answered {} results for {} completions",
                answer.results.len(),
                call.len()
            );
            for pending in call {
                pending
                    .settled
                    .send(Err(EdgeError::Permanent(why.clone())))
                    .ok();
            }
        }
        Err(e) => {
            for pending in call {
                pending.settled.send(Err(e.same())).ok();
            }
        }
    }
}

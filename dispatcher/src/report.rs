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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::routing::post;
    use axum::Router;
    use concurrent_core::wire::{
        CompletionResult, CompletionsRequest, CompletionsResponse, Outcome,
    };

    use super::*;

    /// A stand-in edge that records each `/completions` call's size: it refuses items named
    /// `…refuse`, and answers items named `…flaky` as unavailable the first time.
    async fn edge(calls: Arc<Mutex<Vec<usize>>>) -> String {
        let seen = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
        let app = Router::new().route(
            "/api/v1/agents/c/completions",
            post(move |body: String| {
                let (calls, seen) = (calls.clone(), seen.clone());
                async move {
                    let r: CompletionsRequest = serde_json::from_str(&body).unwrap();
                    calls.lock().unwrap().push(r.completions.len());
                    // Slow enough that what finishes meanwhile waits for the next call.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let results = r
                        .completions
                        .into_iter()
                        .map(|c| {
                            let first = seen.lock().unwrap().insert(c.item_id.clone());
                            CompletionResult {
                                refused: c.item_id.ends_with("refuse").then(|| "stale".into()),
                                unavailable: (c.item_id.ends_with("flaky") && first)
                                    .then(|| "run away".into()),
                                item_id: c.item_id,
                            }
                        })
                        .collect();
                    serde_json::to_string(&CompletionsResponse { results }).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn request(id: &str) -> CompleteRequest {
        CompleteRequest {
            item_id: id.into(),
            token: 1,
            outcome: Outcome::Succeeded {
                outputs: vec![],
                facts: Default::default(),
            },
            mlflow_run_id: None,
            no_mlflow_run: false,
        }
    }

    #[tokio::test]
    async fn a_burst_of_completions_takes_few_calls_and_each_gets_its_own_answer() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let url = edge(calls.clone()).await;
        let reporter = Reporter::start(Edge::new(&url, "c", "t".into(), "a".into()).unwrap());
        let ids: Vec<String> = (0..150)
            .map(|i| {
                if i == 7 {
                    "i7-refuse".into()
                } else {
                    format!("i{i}")
                }
            })
            .collect();
        let answers = futures::future::join_all(ids.iter().map(|id| {
            let reporter = reporter.clone();
            async move { reporter.complete(request(id)).await }
        }))
        .await;
        for (id, answer) in ids.iter().zip(&answers) {
            match answer {
                Err(EdgeError::Refused(why)) => assert!(id.ends_with("refuse") && why == "stale"),
                other => assert!(other.is_ok() && !id.ends_with("refuse"), "{id}: {other:?}"),
            }
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 150, "{calls:?}");
        assert!(calls.iter().all(|n| *n <= MAX_COMPLETIONS), "{calls:?}");
        assert!(
            calls.len() <= 4,
            "150 completions at once took {} calls: {calls:?}",
            calls.len()
        );
    }

    #[tokio::test]
    async fn a_completion_whose_run_was_unavailable_is_reported_again() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let url = edge(calls.clone()).await;
        let reporter = Reporter::start(Edge::new(&url, "c", "t".into(), "a".into()).unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let settled = crate::edge::complete_until_settled("x-flaky", &stop, || {
            reporter.complete(request("x-flaky"))
        })
        .await;
        assert!(settled.is_ok(), "{settled:?}");
        assert_eq!(
            calls.lock().unwrap().len(),
            2,
            "answered unavailable, then taken"
        );
    }
}

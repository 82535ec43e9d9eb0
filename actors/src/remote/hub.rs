//! Sorts the bulk streams arriving at one inbox by tag, so that whoever
//! waits for the rows of a task result or a block fetch gets exactly those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use ember_transport::{BulkError, IncomingBulk, Node};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};

type Rows = Result<Vec<RecordBatch>, String>;

/// The batches of one stream as they arrive: an `Err` item ends it.
pub type Batches = BoxStream<'static, Result<RecordBatch, BulkError>>;

enum Slot {
    Waiting(oneshot::Sender<Batches>),
    Arrived(Batches),
}

/// Streams that arrived, or are awaited, by tag.
#[derive(Clone, Default)]
pub struct BulkHub {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    /// Whether a stream nobody expects is turned down rather than kept
    /// for a taker (for large streams that are always asked for first).
    expected_only: bool,
}

/// Streams that arrive and are never asked for are dropped past this many.
const MAX_UNCLAIMED: usize = 4096;

impl BulkHub {
    /// Opens `inbox` on `node` and sorts what arrives there; the reading
    /// runs on the current tokio runtime until the node closes the inbox.
    pub fn open(node: &Node, inbox: &str) -> Result<Self, BulkError> {
        let incoming = node.bulk_inbox(inbox)?;
        let hub = Self::default();
        tokio::spawn(hub.clone().sort(incoming));
        Ok(hub)
    }

    /// Like [`BulkHub::open`], but a stream whose tag nobody expects is
    /// turned down at once instead of read into memory: for inboxes whose
    /// streams (application binaries) are large and always asked for.
    pub fn open_expected_only(node: &Node, inbox: &str) -> Result<Self, BulkError> {
        let incoming = node.bulk_inbox(inbox)?;
        let hub = Self {
            expected_only: true,
            ..Self::default()
        };
        tokio::spawn(hub.clone().sort(incoming));
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn sort(self, mut incoming: mpsc::Receiver<IncomingBulk>) {
        while let Some(stream) = incoming.recv().await {
            let tag = stream.tag;
            let batches = futures::stream::unfold(stream.batches, |mut rx| async move {
                rx.recv().await.map(|batch| (batch, rx))
            })
            .boxed();
            let waiter = {
                let mut slots = self.lock();
                match slots.get(&tag) {
                    Some(Slot::Waiting(_)) => match slots.remove(&tag) {
                        Some(Slot::Waiting(waiter)) => Some(waiter),
                        _ => None,
                    },
                    _ => None,
                }
            };
            match waiter {
                // Someone expects it: the batches stream to them as they
                // come, a few in memory at a time.
                Some(waiter) => {
                    let _ = waiter.send(batches);
                }
                None if self.expected_only => {
                    tracing::warn!(%tag, "turned down a bulk stream nobody expects");
                    drop(batches);
                }
                // Nobody yet (a task's rows arrive before its status): it
                // is read in full now, so that its sender can finish.
                None => {
                    let hub = self.clone();
                    tokio::spawn(async move {
                        let all: Vec<_> = batches.collect().await;
                        hub.deliver(tag, futures::stream::iter(all).boxed());
                    });
                }
            }
        }
    }

    fn deliver(&self, tag: String, batches: Batches) {
        let mut slots = self.lock();
        match slots.remove(&tag) {
            Some(Slot::Waiting(waiter)) => {
                let _ = waiter.send(batches);
            }
            _ => {
                if slots.len() >= MAX_UNCLAIMED {
                    tracing::warn!(%tag, "too many unclaimed bulk streams; dropping one");
                    return;
                }
                slots.insert(tag, Slot::Arrived(batches));
            }
        }
    }

    /// Expects the stream tagged `tag`: registered before the request that
    /// makes it is sent, its batches stream to the receiver as they come.
    pub fn expect(&self, tag: &str) -> oneshot::Receiver<Batches> {
        let (tx, rx) = oneshot::channel();
        let mut slots = self.lock();
        match slots.remove(tag) {
            Some(Slot::Arrived(batches)) => {
                let _ = tx.send(batches);
            }
            _ => {
                slots.insert(tag.to_string(), Slot::Waiting(tx));
            }
        }
        rx
    }

    /// The stream tagged `tag`, once it has started to arrive.
    pub async fn take_stream(&self, tag: &str, timeout: Duration) -> Result<Batches, String> {
        let receiver = self.expect(tag);
        let outcome = match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(batches)) => Ok(batches),
            Ok(Err(_)) => Err("the bulk inbox closed".to_string()),
            Err(_) => Err(format!(
                "the rows did not start to arrive within {timeout:?}"
            )),
        };
        if outcome.is_err() {
            self.forget(tag);
        }
        outcome
    }

    /// The rows of the stream tagged `tag`, once it has arrived in full,
    /// all within `timeout`.
    pub async fn take(&self, tag: &str, timeout: Duration) -> Rows {
        let all = async {
            let mut batches = self.take_stream(tag, timeout).await?;
            let mut rows = Vec::new();
            while let Some(batch) = batches.next().await {
                rows.push(batch.map_err(|e| e.to_string())?);
            }
            Ok(rows)
        };
        tokio::time::timeout(timeout, all)
            .await
            .unwrap_or_else(|_| Err(format!("the rows did not arrive within {timeout:?}")))
    }

    /// Stops waiting for `tag`.
    pub fn forget(&self, tag: &str) {
        self.lock().remove(tag);
    }
}

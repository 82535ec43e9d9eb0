//! Sorts the bulk streams arriving at one inbox by tag, so that whoever
//! waits for the rows of a task result or a block fetch gets exactly those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use ember_transport::{BulkError, IncomingBulk, Node};
use tokio::sync::{mpsc, oneshot};

type Rows = Result<Vec<RecordBatch>, String>;

enum Slot {
    Waiting(oneshot::Sender<Rows>),
    Arrived(Rows),
}

/// Streams that arrived, or are awaited, by tag.
#[derive(Clone, Default)]
pub struct BulkHub {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn sort(self, mut incoming: mpsc::Receiver<IncomingBulk>) {
        while let Some(mut stream) = incoming.recv().await {
            let hub = self.clone();
            tokio::spawn(async move {
                let mut batches = Vec::new();
                let mut outcome = Ok(());
                while let Some(batch) = stream.batches.recv().await {
                    match batch {
                        Ok(batch) => batches.push(batch),
                        Err(e) => {
                            outcome = Err(e.to_string());
                            break;
                        }
                    }
                }
                hub.deliver(stream.tag, outcome.map(|()| batches));
            });
        }
    }

    fn deliver(&self, tag: String, rows: Rows) {
        let mut slots = self.lock();
        match slots.remove(&tag) {
            Some(Slot::Waiting(waiter)) => {
                let _ = waiter.send(rows);
            }
            _ => {
                if slots.len() >= MAX_UNCLAIMED {
                    tracing::warn!(%tag, "too many unclaimed bulk streams; dropping one");
                    return;
                }
                slots.insert(tag, Slot::Arrived(rows));
            }
        }
    }

    /// The rows of the stream tagged `tag`, once it has arrived in full.
    pub async fn take(&self, tag: &str, timeout: Duration) -> Rows {
        let receiver = {
            let mut slots = self.lock();
            match slots.remove(tag) {
                Some(Slot::Arrived(rows)) => return rows,
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(tag.to_string(), Slot::Waiting(tx));
                    rx
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(_)) => Err("the bulk inbox closed".to_string()),
            Err(_) => Err(format!("the rows did not arrive within {timeout:?}")),
        };
        if outcome.is_err() {
            self.forget(tag);
        }
        outcome
    }

    /// Stops waiting for `tag`.
    pub fn forget(&self, tag: &str) {
        self.lock().remove(tag);
    }
}

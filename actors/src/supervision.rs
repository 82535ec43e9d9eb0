//! Links and monitors, Erlang style, on top of actix (which has neither).
//! An actor keeps its watchers in [`Watchers`]; when the actor ends — it
//! stopped, or its thread unwound from a panic — dropping the actor drops the
//! watchers, and each one receives [`PeerDown`]. A link is two watches plus
//! the rule that a linked actor stops when its peer goes down.

use std::fmt;

use actix::prelude::*;
use ember_transport::ActorAddress;
pub use ember_transport::{ExitReason, PeerDown};

/// The actors to notify when the owner ends. Notification happens on drop,
/// so it also fires when the owner's thread unwinds from a panic.
pub struct Watchers {
    owner: ActorAddress,
    watchers: Vec<(ActorAddress, Recipient<PeerDown>)>,
    reason: ExitReason,
}

impl Watchers {
    pub fn new(owner: ActorAddress) -> Self {
        Self {
            owner,
            watchers: Vec::new(),
            reason: ExitReason::Failed("ended without saying why".to_string()),
        }
    }

    /// `watcher` will hear when the owner ends.
    pub fn add(&mut self, watcher: ActorAddress, recipient: Recipient<PeerDown>) {
        self.watchers.retain(|(a, _)| a != &watcher);
        self.watchers.push((watcher, recipient));
    }

    pub fn remove(&mut self, watcher: &ActorAddress) {
        self.watchers.retain(|(a, _)| a != watcher);
    }

    /// Records why the owner is ending, for the notices sent on drop.
    pub fn set_reason(&mut self, reason: ExitReason) {
        self.reason = reason;
    }

    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for (_, watcher) in self.watchers.drain(..) {
            // A watcher that is itself gone needs no notice.
            watcher.do_send(PeerDown {
                peer: self.owner.clone(),
                reason: self.reason.clone(),
            });
        }
    }
}

impl fmt::Debug for Watchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.watchers.iter().map(|(a, _)| a.to_string()).collect();
        f.debug_struct("Watchers")
            .field("owner", &self.owner)
            .field("watchers", &names)
            .finish()
    }
}

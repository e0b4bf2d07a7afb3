//! The local executor's importer slots: at most `LOCAL_MAX_CONCURRENT_IMPORTS` importers at
//! once and `MAX_ACTIVE_IMPORTS_PER_ORG` per organization, given round-robin across
//! organizations, oldest first within one (`bulk_import_core::admission`, as on
//! Kubernetes). A job waiting for a slot has its `queue_position` in its row (the API shows
//! it `queued`), cleared when it starts.

use bulk_import_core::{
    admission::{admit, Limits, Waiting},
    repo,
};
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct State {
    waiting: Vec<Waiting<Uuid>>,
    running: HashMap<Uuid, Option<i64>>,
}

pub(super) struct Slots {
    limits: Limits,
    state: Mutex<State>,
    /// Bumped whenever a job starts, ends or joins the queue: the waiting look again.
    changed: watch::Sender<u64>,
}

/// A slot held: given back when dropped.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .state
            .lock()
            .expect("lock")
            .running
            .remove(&self.id);
        self.slots.bump();
    }
}

impl Slots {
    pub(super) fn new(total: usize, per_org: usize) -> Arc<Slots> {
        Arc::new(Slots {
            limits: Limits::new(total, per_org),
            state: Mutex::default(),
            changed: watch::channel(0).0,
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits for a slot for job `id` (unless `stop` comes first: `None`); meanwhile keeps
    /// its queue position in the row.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        pool: &PgPool,
        id: Uuid,
        stop: &CancellationToken,
    ) -> Option<Slot> {
        let (org, created, mut shown) = match repo::get(pool, id).await {
            Ok(Some(row)) => (
                Some(i64::from(row.org_id)),
                format!("{:020}", row.created_at.timestamp_micros()),
                // A position left by an API that stopped while the job waited.
                row.queue_position.map(|p| p as usize),
            ),
            _ => (None, String::new(), None),
        };
        let mut changed = self.changed.subscribe();
        self.state.lock().expect("lock").waiting.push(Waiting {
            key: id,
            org,
            created,
            name: id.to_string(),
        });
        self.bump();
        loop {
            changed.borrow_and_update();
            let position = self.try_take(id);
            let Some(position) = position else {
                if shown.is_some() {
                    let _ = repo::set_queue_position(pool, id, None).await;
                }
                return Some(Slot {
                    slots: self.clone(),
                    id,
                });
            };
            if shown != Some(position) {
                let at = i32::try_from(position).unwrap_or(i32::MAX);
                if repo::set_queue_position(pool, id, Some(at)).await.is_ok() {
                    shown = Some(position);
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = stop.cancelled() => {
                    self.state.lock().expect("lock").waiting.retain(|w| w.key != id);
                    return None;
                }
            }
        }
    }

    /// Takes the slot if `id` is admitted now (`None`); else its queue position.
    fn try_take(&self, id: Uuid) -> Option<usize> {
        let mut state = self.state.lock().expect("lock");
        let running: Vec<Option<i64>> = state.running.values().copied().collect();
        let decision = admit(&state.waiting, &running, self.limits);
        if !decision.is_admitted(&id) {
            return Some(decision.position(&id).unwrap_or(1));
        }
        let org = state
            .waiting
            .iter()
            .find(|w| w.key == id)
            .and_then(|w| w.org);
        state.waiting.retain(|w| w.key != id);
        state.running.insert(id, org);
        drop(state);
        // Others may have moved up.
        self.bump();
        None
    }
}

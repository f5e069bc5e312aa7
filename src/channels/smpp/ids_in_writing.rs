//! The SMSC message ids whose `smpp_mark_sent` is being written. A receipt for one of them waits
//! for that write, so that it lands on its row at once. Otherwise it is kept aside in
//! `smpp_early_receipts` and moved over by the id's write: two more writes, and a wait on the
//! advisory lock both take. An SMSC may send a receipt right after its `submit_sm_resp` (the
//! simulator does), so the race is common, not rare.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Ids tracked at once; past this a write is not tracked, and its receipt may come early (which
/// the database still handles).
pub const IDS_IN_WRITING_MAX: usize = 4_096;

#[derive(Debug, Default)]
pub struct IdsInWriting {
    /// Id → a semaphore without permits, closed when the id's write ends.
    ids: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl IdsInWriting {
    /// Tracks `id` until the returned guard is dropped (the write ended or was abandoned).
    pub fn begin(self: &Arc<Self>, id: &str) -> Option<WritingGuard> {
        let mut ids = self.lock();
        if ids.len() >= IDS_IN_WRITING_MAX || ids.contains_key(id) {
            return None;
        }
        let done = Arc::new(Semaphore::new(0));
        ids.insert(id.to_owned(), done.clone());
        Some(WritingGuard {
            ids: self.clone(),
            id: id.to_owned(),
            done,
        })
    }

    /// Returns once `id` is not being written (at once when it is not tracked).
    pub async fn wait_for(&self, id: &str) {
        let done = self.lock().get(id).cloned();
        if let Some(done) = done {
            // No permit is ever added: this returns when the guard closes the semaphore.
            let _closed = done.acquire().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct WritingGuard {
    ids: Arc<IdsInWriting>,
    id: String,
    done: Arc<Semaphore>,
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        self.ids.lock().remove(&self.id);
        self.done.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wait_ends_when_the_write_ends_and_untracked_ids_do_not_wait() {
        let ids = Arc::new(IdsInWriting::default());
        ids.wait_for("unknown").await;
        let guard = ids.begin("m1").expect("tracked");
        assert!(ids.begin("m1").is_none(), "one write per id");
        let waiting = tokio::time::timeout(Duration::from_millis(20), ids.wait_for("m1")).await;
        assert!(waiting.is_err(), "waits while the write runs");
        let ids2 = ids.clone();
        let waiter = tokio::spawn(async move { ids2.wait_for("m1").await });
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends with the write")
            .unwrap();
        ids.wait_for("m1").await;
    }
}

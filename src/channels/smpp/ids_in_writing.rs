//! The SMSC message ids whose `smpp_mark_sent` is being written. An SMSC may send a receipt right
//! after its `submit_sm_resp` (the simulator does), so a receipt often comes while its id's write
//! is still queued. Such a receipt rides with that write: one row update and one commit for both
//! (V66). A receipt that comes once the write has been taken into a batch waits for it, so that
//! it lands on its row; otherwise it would be kept aside in `smpp_early_receipts` and moved over
//! by the id's write: two more writes, and a wait on the advisory lock both take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;

/// Ids tracked at once; past this a write is not tracked, and its receipt may come early (which
/// the database still handles).
pub const IDS_IN_WRITING_MAX: usize = 4_096;

#[derive(Debug, Default)]
pub struct IdsInWriting {
    ids: Mutex<HashMap<String, Arc<Writing>>>,
}

/// What became of a receipt offered to its id's write.
#[derive(Debug, PartialEq, Eq)]
pub enum Ride {
    /// The id's write committed with the receipt on its row.
    Recorded,
    /// The receipt did not ride, or its write failed: the receipt is written on its own (after
    /// the id's write, when one ran).
    WriteAlone,
}

/// One id's write.
#[derive(Debug)]
pub struct Writing {
    /// Without permits; closed when the write ends.
    done: Semaphore,
    state: Mutex<Seat>,
}

#[derive(Debug, Default)]
struct Seat {
    /// The riding receipt's `stat`.
    receipt: Option<String>,
    /// The write has read `receipt` into its statement: no receipt may board any more.
    taken: bool,
    /// The write committed.
    recorded: bool,
}

impl Writing {
    /// The receipt riding with this write, read as its statement is built; none boards after.
    /// A write tried again (alone, after its batch failed) reads the same receipt.
    pub fn take_receipt(&self) -> Option<String> {
        let mut seat = self.seat();
        seat.taken = true;
        seat.receipt.clone()
    }

    fn seat(&self) -> MutexGuard<'_, Seat> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl IdsInWriting {
    /// Tracks `id` until the returned guard is dropped (the write ended or was abandoned).
    pub fn begin(self: &Arc<Self>, id: &str) -> Option<WritingGuard> {
        let mut ids = self.lock();
        if ids.len() >= IDS_IN_WRITING_MAX || ids.contains_key(id) {
            return None;
        }
        let writing = Arc::new(Writing {
            done: Semaphore::new(0),
            state: Mutex::default(),
        });
        ids.insert(id.to_owned(), writing.clone());
        Some(WritingGuard {
            ids: self.clone(),
            id: id.to_owned(),
            writing,
        })
    }

    /// Offers a receipt (its `stat`) for `id` to that id's write, and returns once the write has
    /// ended (at once when no write runs).
    pub async fn ride_or_wait(&self, id: &str, stat: &str) -> Ride {
        let Some(writing) = self.lock().get(id).cloned() else {
            return Ride::WriteAlone;
        };
        let boarded = {
            let mut seat = writing.seat();
            let free = !seat.taken && seat.receipt.is_none();
            if free {
                seat.receipt = Some(stat.to_owned());
            }
            free
        };
        // No permit is ever added: this returns when the guard closes the semaphore.
        let _closed = writing.done.acquire().await;
        if boarded && writing.seat().recorded {
            Ride::Recorded
        } else {
            Ride::WriteAlone
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Writing>>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct WritingGuard {
    ids: Arc<IdsInWriting>,
    id: String,
    writing: Arc<Writing>,
}

impl WritingGuard {
    /// The write's seat, for the statement that takes its receipt.
    pub fn writing(&self) -> Arc<Writing> {
        self.writing.clone()
    }

    /// The write committed: a receipt that rode with it is recorded.
    pub fn recorded(self) {
        self.writing.seat().recorded = true;
    }
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        self.ids.lock().remove(&self.id);
        self.writing.done.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn boarded(guard: &WritingGuard) {
        let boarding = async {
            while guard.writing().seat().receipt.is_none() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), boarding)
            .await
            .expect("the receipt boards");
    }

    #[tokio::test]
    async fn a_receipt_rides_with_a_queued_write_and_is_recorded_with_it() {
        let ids = Arc::new(IdsInWriting::default());
        assert_eq!(
            ids.ride_or_wait("unknown", "DELIVRD").await,
            Ride::WriteAlone
        );
        let guard = ids.begin("m1").expect("tracked");
        assert!(ids.begin("m1").is_none(), "one write per id");
        let ids2 = ids.clone();
        let rider = tokio::spawn(async move { ids2.ride_or_wait("m1", "DELIVRD").await });
        boarded(&guard).await;
        assert_eq!(guard.writing().take_receipt().as_deref(), Some("DELIVRD"));
        assert!(!rider.is_finished(), "waits while the write runs");
        guard.recorded();
        let ride = tokio::time::timeout(Duration::from_secs(5), rider).await;
        assert_eq!(ride.expect("ends with the write").unwrap(), Ride::Recorded);
        assert_eq!(ids.ride_or_wait("m1", "DELIVRD").await, Ride::WriteAlone);
    }

    #[tokio::test]
    async fn a_receipt_after_the_write_was_taken_or_failed_is_written_alone() {
        let ids = Arc::new(IdsInWriting::default());
        let guard = ids.begin("taken").unwrap();
        assert_eq!(guard.writing().take_receipt(), None);
        let ids2 = ids.clone();
        let late = tokio::spawn(async move { ids2.ride_or_wait("taken", "DELIVRD").await });
        tokio::task::yield_now().await;
        guard.recorded();
        assert_eq!(
            late.await.unwrap(),
            Ride::WriteAlone,
            "it came too late to board"
        );

        let guard = ids.begin("failed").unwrap();
        let ids2 = ids.clone();
        let rider = tokio::spawn(async move { ids2.ride_or_wait("failed", "DELIVRD").await });
        boarded(&guard).await;
        drop(guard);
        assert_eq!(
            rider.await.unwrap(),
            Ride::WriteAlone,
            "its write did not commit"
        );
    }
}

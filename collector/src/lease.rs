//! Leases: jobs that only one of several collectors may do at a time.
//!
//! Every live collector claims the *next* term of a lease in the `leases`
//! table, whenever it asks during the current one; the holder of a term
//! is the smallest holder id among the claims made before that term began.
//! Every collector therefore decides on the same set of claims, however
//! late in a term it starts or asks, and a collector that comes back in the
//! middle of a term cannot take over from the one that holds it then (it
//! may from the next term). Nothing here reads events or sends anything:
//! callers ask [`Lease::held`] before their job, at least once a term.

use doorwatch_process::clock;
use doorwatch_store::Store;

/// Seconds of one lease term.
const LEASE_TERM: u64 = 10;
/// Into a term, how long claims made just before it are given to reach
/// every node before the holder is read.
const LEASE_SETTLE: u64 = 2;

/// Whether this collector does the job named by the lease (sending
/// alerts, applying retention): of all collectors that want it, the one
/// with the smallest instance id among those that claimed the current
/// term before it began. It keeps the lease for as long as it runs and
/// keeps claiming, so the holder changes only at a term's start, when it
/// stopped claiming (or one with a smaller id started to).
#[derive(Debug)]
pub struct Lease {
    name: &'static str,
    me: String,
    claimed: Option<u64>,
    known: Option<(u64, bool)>,
}

impl Lease {
    /// A lease on the job `name` (`alerts`, `retention`), not claimed yet.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            me: uuid::Uuid::new_v4().to_string(),
            claimed: None,
            known: None,
        }
    }

    /// Claims the current term and says whether we hold it (`None`: not
    /// known yet, claims are still arriving).
    pub async fn held(
        &mut self,
        store: &Store,
    ) -> Result<Option<bool>, doorwatch_store::StoreError> {
        let now = clock::unix_now();
        let term = now / LEASE_TERM;
        if self.claimed != Some(term + 1) {
            store
                .claim_lease(self.name, term + 1, &self.me, clock::seconds(now))
                .await?;
            self.claimed = Some(term + 1);
        }
        if let Some((known_term, held)) = self.known
            && known_term == term
        {
            return Ok(Some(held));
        }
        if now % LEASE_TERM < LEASE_SETTLE {
            // Too early in the term: keep the previous term's answer.
            return Ok(self.known.map(|(_, held)| held));
        }
        let began = clock::seconds(term * LEASE_TERM);
        let holder = store.lease_holder(self.name, term, began).await?;
        let held = holder.as_deref() == Some(self.me.as_str());
        if self.known.map(|(_, was)| was) != Some(held) {
            tracing::info!(lease = self.name, instance = %self.me, held, "lease holder changed");
        }
        self.known = Some((term, held));
        Ok(Some(held))
    }
}

//! Leases: jobs that only one of several collectors may do at a time.
//!
//! Every live collector claims each term of a lease in the `leases` table;
//! of a term's claims, the smallest holder id holds it. Nothing here reads
//! events or sends anything: callers ask [`Lease::held`] before their job.

use doorwatch_store::Store;

/// Seconds of one alerting lease term.
const LEASE_TERM: u64 = 10;
/// Into a term, how long claims are given to arrive before the holder is
/// read.
const LEASE_SETTLE: u64 = 2;

/// Whether this collector sends alerts: of all collectors with alert
/// channels, the one with the smallest instance id among those that
/// claimed the current term. It keeps the lease for as long as it runs, so
/// the sender changes only when it stops (or one with a smaller id starts).
#[derive(Debug)]
pub struct Lease {
    me: String,
    claimed: Option<u64>,
    known: Option<(u64, bool)>,
}

impl Lease {
    pub fn new() -> Self {
        Self {
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
        let now = crate::enroll::unix_now();
        let term = now / LEASE_TERM;
        if self.claimed != Some(term) {
            store
                .claim_lease("alerts", term, &self.me, crate::enroll::seconds(now))
                .await?;
            self.claimed = Some(term);
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
        let holder = store.lease_holder("alerts", term).await?;
        let held = holder.as_deref() == Some(self.me.as_str());
        if self.known.map(|(_, was)| was) != Some(held) {
            tracing::info!(instance = %self.me, sending = held, "alerting lease");
        }
        self.known = Some((term, held));
        Ok(Some(held))
    }
}

//! Subscription writes paced below Graph's limits.
//!
//! Graph allows an app 500 subscription creates or renewals per 20 seconds
//! in one tenant and 2,000 per 20 seconds across all tenants. After an
//! outage or a key rotation a fleet has thousands of writes to make at
//! once; sent as fast as possible they are throttled into failure. So every
//! subscription write of a container reserves a slot first: slots of one
//! tenant are at least `window / per_tenant` apart, slots of the app at
//! least `window / per_app`, so no 20-second window holds more than the
//! limit (this container pacing at 90 % of it leaves room for the few
//! writes of the admin API in other containers).
//!
//! A slot is reserved, not polled for: waiters are served in the order they
//! asked, and a caller with a deadline learns at once whether its slot comes
//! in time ([`Paced`]) instead of waiting and failing. A `429` with
//! `Retry-After` holds the whole tenant (or app) until then ([`WritePacer::hold`]).
//! A rate-limiter crate polls a bucket and cannot promise a future slot
//! against a deadline, which is what a time-boxed run needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Graph's window for subscription writes.
pub const WINDOW: Duration = Duration::from_secs(20);
/// Writes per [`WINDOW`] and tenant this container allows itself (Graph: 500).
pub const PER_TENANT: u32 = 450;
/// Writes per [`WINDOW`] this container allows itself across tenants (Graph: 2,000).
pub const PER_APP: u32 = 1_800;

/// The slot came too late for the caller's deadline: nothing was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Graph's subscription write limit for this tenant is reached until {wait:?} from now; the write is left for the next scheduled run")]
pub struct Paced {
    /// How long the caller would have had to wait.
    pub wait: Duration,
}

#[derive(Debug, Default)]
struct Slots {
    /// The first free slot per tenant.
    tenants: HashMap<String, Instant>,
    /// The first free slot of the app.
    app: Option<Instant>,
}

/// Reserves slots for subscription writes, per tenant and per app.
#[derive(Debug)]
pub struct WritePacer {
    tenant_gap: Duration,
    app_gap: Duration,
    slots: Mutex<Slots>,
}

impl Default for WritePacer {
    fn default() -> Self {
        Self::new(PER_TENANT, PER_APP, WINDOW)
    }
}

impl WritePacer {
    /// A pacer allowing `per_tenant` writes per tenant and `per_app` in all
    /// per `window`.
    pub fn new(per_tenant: u32, per_app: u32, window: Duration) -> Self {
        Self {
            tenant_gap: window / per_tenant.max(1),
            app_gap: window / per_app.max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// Waits for a write slot of `tenant`, reserving it only when it comes
    /// before `deadline`.
    ///
    /// # Errors
    /// [`Paced`] when the slot would come after `deadline` (nothing is reserved).
    pub async fn acquire(&self, tenant: &str, deadline: Instant) -> Result<(), Paced> {
        let now = Instant::now();
        let tenant = tenant.to_ascii_lowercase();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tenant_free = slots.tenants.get(&tenant).copied().unwrap_or(now);
            let app_free = slots.app.unwrap_or(now);
            let slot = now.max(tenant_free).max(app_free);
            if slot > deadline {
                return Err(Paced { wait: slot - now });
            }
            slots.tenants.insert(tenant, slot + self.tenant_gap);
            slots.app = Some(slot + self.app_gap);
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }

    /// Holds every write of `tenant` (and, when `whole_app`, of the app) for
    /// `wait`: Graph answered `429` with this `Retry-After`.
    pub fn hold(&self, tenant: &str, wait: Duration, whole_app: bool) {
        let until = Instant::now() + wait;
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = slots.tenants.entry(tenant.to_ascii_lowercase()).or_insert(until);
        *entry = (*entry).max(until);
        if whole_app {
            slots.app = Some(slots.app.map_or(until, |a| a.max(until)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts, for every window of `window` starting at a slot, how many
    /// slots fall inside it; returns the largest count.
    fn busiest(slots: &[Instant], window: Duration) -> usize {
        slots
            .iter()
            .map(|start| slots.iter().filter(|t| **t >= *start && **t < *start + window).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_holds_more_writes_than_the_limit_of_a_tenant_or_the_app() {
        let pacer = std::sync::Arc::new(WritePacer::new(10, 15, WINDOW));
        let far = Instant::now() + Duration::from_secs(3_600);
        let mut tasks = Vec::new();
        for i in 0..60 {
            let pacer = pacer.clone();
            let tenant = if i % 2 == 0 { "contoso" } else { "fabrikam" };
            tasks.push(tokio::spawn(async move {
                pacer.acquire(tenant, far).await.map(|()| (tenant, Instant::now()))
            }));
        }
        let mut by_tenant: HashMap<&str, Vec<Instant>> = HashMap::new();
        let mut all = Vec::new();
        for t in tasks {
            let (tenant, at) = t.await.unwrap().unwrap();
            by_tenant.entry(tenant).or_default().push(at);
            all.push(at);
        }
        assert_eq!(all.len(), 60, "every write got its slot");
        for (tenant, slots) in &by_tenant {
            assert!(busiest(slots, WINDOW) <= 10, "{tenant}: {}", busiest(slots, WINDOW));
        }
        assert!(busiest(&all, WINDOW) <= 15, "app: {}", busiest(&all, WINDOW));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_after_the_deadline_is_refused_at_once_and_reserves_nothing() {
        let pacer = WritePacer::new(2, 100, WINDOW);
        let soon = Instant::now() + Duration::from_secs(5);
        pacer.acquire("t", soon).await.unwrap();
        // The next slot of the tenant is 10 s away: past the deadline.
        let refused = pacer.acquire("t", soon).await.unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(10));
        // Refusing reserved nothing: a later deadline gets that same slot.
        let start = Instant::now();
        pacer.acquire("t", start + Duration::from_secs(60)).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        // Another tenant is not held up by this one.
        let other = Instant::now();
        pacer.acquire("u", other).await.unwrap();
        assert_eq!(Instant::now(), other);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_holds_the_tenant_and_a_whole_app_throttle_holds_all() {
        let pacer = WritePacer::new(100, 100, WINDOW);
        pacer.hold("Contoso", Duration::from_secs(7), false);
        let start = Instant::now();
        assert!(pacer.acquire("contoso", start + Duration::from_secs(6)).await.is_err());
        pacer.acquire("fabrikam", start).await.unwrap();
        pacer.hold("contoso", Duration::from_secs(3), true);
        assert!(pacer.acquire("fabrikam", start + Duration::from_secs(2)).await.is_err());
        pacer.acquire("contoso", start + Duration::from_secs(8)).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
    }
}

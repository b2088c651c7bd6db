//! The TTL reaper: deletes stored payloads that are old enough and that no
//! live event or message references.
//!
//! For each object older than the cut-off it takes the reap lock of the
//! hash ([`PayloadRefs::try_reap`](wharf_storage::PayloadRefs::try_reap)),
//! asks the storage whether the hash is referenced, and deletes only when it
//! is not; an append reusing the payload holds a pin across its commit, so
//! the two can never interleave into a dangling reference.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use wharf_core::{Clock, Error, Result, Timestamp};

use crate::Wharf;

/// What a cleanup did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Payload objects looked at.
    pub scanned: u64,
    /// Objects deleted (with `dry_run`, that would have been deleted).
    pub deleted: u64,
    /// Stored bytes those objects held.
    pub bytes_freed: u64,
    /// Objects old enough but kept because a live event or message
    /// references them, or an append is about to.
    pub kept_referenced: u64,
    /// Whether nothing was deleted because this was a dry run.
    pub dry_run: bool,
}

impl Wharf {
    /// Deletes the stored payloads older than `older_than` that nothing
    /// references; with `dry_run`, only counts them. `progress` is called
    /// after each object with the report so far.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when payload offloading is not configured;
    /// the store's errors while listing or deleting (what was deleted before
    /// stays deleted, and the report is lost).
    pub async fn cleanup_payloads(
        &self,
        older_than: Duration,
        dry_run: bool,
        mut progress: impl FnMut(&CleanupReport) + Send,
    ) -> Result<CleanupReport> {
        let offload = self.offload.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "payload offloading is not configured (payload_offload.enabled)".into(),
            )
        })?;
        // An age older than the epoch (`--older-than 100000y`) selects nothing.
        let cutoff = self
            .clock
            .now()
            .to_system_time()
            .checked_sub(older_than)
            .map_or(
                Timestamp::from_micros(i64::MIN),
                Timestamp::from_system_time,
            );
        let mut report = CleanupReport {
            dry_run,
            ..CleanupReport::default()
        };
        let mut objects = offload.store.list();
        while let Some(object) = objects.next().await {
            let object = object?;
            report.scanned += 1;
            if object.last_modified <= cutoff {
                match offload.refs.try_reap(&object.hash).await? {
                    None => report.kept_referenced += 1,
                    Some(_lock) => {
                        if offload.refs.is_referenced(&object.hash).await? {
                            report.kept_referenced += 1;
                        } else if dry_run || offload.store.delete(&object.hash).await? {
                            report.deleted += 1;
                            report.bytes_freed += object.stored_bytes;
                        }
                    }
                }
            }
            progress(&report);
        }
        if !dry_run {
            wharf_payload::metrics::record_cleanup_deleted(
                offload.store.storage_type(),
                report.deleted,
            );
        }
        tracing::info!(
            scanned = report.scanned,
            deleted = report.deleted,
            bytes_freed = report.bytes_freed,
            kept_referenced = report.kept_referenced,
            dry_run,
            "payload cleanup finished"
        );
        Ok(report)
    }
}

/// Runs [`Wharf::cleanup_payloads`] with the TTL every `interval`, on `clock`,
/// until the task is aborted.
pub(crate) async fn run(engine: Wharf, clock: Arc<dyn Clock>, interval: Duration, ttl: Duration) {
    loop {
        clock
            .sleep_until(clock.now().saturating_add(interval))
            .await;
        if let Err(e) = engine.cleanup_payloads(ttl, false, |_| {}).await {
            tracing::warn!(error = %e, "payload reaper run failed; retrying at the next interval");
        }
    }
}

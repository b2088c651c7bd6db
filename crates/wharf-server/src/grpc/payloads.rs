//! The gRPC `wharf.v1.Payloads` service: the payload store behind payload
//! offloading, for operators and for clients that pass references around.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use wharf::{
    CleanupReport, ContentHash, Error, PayloadFailure, PayloadReference,
    PayloadRetrievalFailedDetails, PayloadStore, Wharf,
};
use wharf_proto::convert;
use wharf_proto::status::{invalid_field, payload_offload_disabled, to_status};
use wharf_proto::v1::{
    self, CleanupPayloadsRequest, CleanupPayloadsResponse, GetPayloadRequest, GetPayloadResponse,
    PayloadStatsRequest, PayloadStatsResponse, PutPayloadRequest, PutPayloadResponse,
    cleanup_payloads_response::Kind, get_payload_request::Target, payloads_server::Payloads,
};

/// How often a running cleanup reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The service; one per server, shared by every connection.
#[derive(Clone)]
pub struct PayloadsService {
    wharf: Wharf,
    shutdown: CancellationToken,
}

impl PayloadsService {
    /// A service over `wharf`'s payload store whose cleanups stop when
    /// `shutdown` fires.
    pub fn new(wharf: Wharf, shutdown: CancellationToken) -> Self {
        Self { wharf, shutdown }
    }

    fn store(&self) -> Result<&PayloadStore, Status> {
        self.wharf
            .payload_store()
            .ok_or_else(payload_offload_disabled)
    }
}

/// A cleanup report on the wire.
pub(crate) fn report(r: &CleanupReport) -> v1::CleanupReport {
    v1::CleanupReport {
        scanned: r.scanned,
        deleted: r.deleted,
        bytes_freed: r.bytes_freed,
        kept_referenced: r.kept_referenced,
        dry_run: r.dry_run,
    }
}

/// The hash a payload URI names: its last segment is `{64 hex}.bin`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `uri` otherwise.
fn hash_of_uri(uri: &str) -> Result<ContentHash, Status> {
    uri.rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".bin"))
        .and_then(|hex| hex.parse().ok())
        .ok_or_else(|| {
            invalid_field(
                "uri",
                format!("`{uri}` does not end in `{{64 hex digits}}.bin`"),
            )
        })
}

/// The reference a get asks for. A hash or URI alone is completed from the
/// stored object: its size is the payload's, which holds for objects
/// stored without compression or encryption (see the report of `Get`).
async fn target_reference(
    store: &PayloadStore,
    target: Option<Target>,
) -> Result<PayloadReference, Status> {
    let (hash, uri) = match target {
        Some(Target::Reference(r)) => return convert::payload_reference("reference", r),
        Some(Target::ContentHash(bytes)) => {
            let hash = convert::content_hash("content_hash", &bytes)?;
            (hash, store.uri(&hash))
        }
        Some(Target::Uri(uri)) => (hash_of_uri(&uri)?, uri),
        None => {
            return Err(invalid_field(
                "target",
                "give a reference, a content_hash or a uri",
            ));
        }
    };
    let mut reference = PayloadReference {
        storage_type: store.storage_type(),
        uri,
        content_hash: hash,
        original_size: 0,
        stored_at: wharf::Timestamp::from_micros(0),
    };
    let object = store.head(&hash).await.map_err(|e| to_status(&e))?;
    let Some(object) = object else {
        let details =
            PayloadRetrievalFailedDetails::new(&reference, "no payload object with this hash");
        let error = Error::payload_retrieval(PayloadFailure::NotFound, details);
        return Err(to_status(&error));
    };
    reference.original_size = object.stored_bytes;
    reference.stored_at = object.last_modified;
    Ok(reference)
}

type CleanupStream = Pin<Box<dyn Stream<Item = Result<CleanupPayloadsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Payloads for PayloadsService {
    async fn put(
        &self,
        request: Request<PutPayloadRequest>,
    ) -> Result<Response<PutPayloadResponse>, Status> {
        let store = self.store()?;
        let data = request.into_inner().data;
        let limit = self.wharf.limits().max_payload_bytes;
        if data.len() > limit {
            return Err(invalid_field(
                "data",
                format!(
                    "{} bytes; the payload limit is {limit} bytes (limits.max_payload_bytes)",
                    data.len()
                ),
            ));
        }
        let reference = store.put(&data).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(PutPayloadResponse {
            reference: Some(reference.into()),
        }))
    }

    async fn get(
        &self,
        request: Request<GetPayloadRequest>,
    ) -> Result<Response<GetPayloadResponse>, Status> {
        let store = self.store()?;
        let reference = target_reference(store, request.into_inner().target).await?;
        let data = store.get(&reference).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(GetPayloadResponse {
            data,
            reference: Some(reference.into()),
        }))
    }

    async fn stats(
        &self,
        _request: Request<PayloadStatsRequest>,
    ) -> Result<Response<PayloadStatsResponse>, Status> {
        let store = self.store()?;
        let stats = store.stats().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(PayloadStatsResponse {
            objects: stats.objects,
            bytes: stats.bytes,
            storage_type: v1::PayloadStorageType::from(store.storage_type()).into(),
        }))
    }

    type CleanupStream = CleanupStream;

    async fn cleanup(
        &self,
        request: Request<CleanupPayloadsRequest>,
    ) -> Result<Response<CleanupStream>, Status> {
        self.store()?;
        let r = request.into_inner();
        let older_than = convert::duration(r.older_than_micros);
        let dry_run = r.dry_run;
        let (tx, rx) = mpsc::channel(4);
        let wharf = self.wharf.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // The engine reports after every object; the latest count is
            // sent a few times a second.
            let (progress_tx, mut progress) = watch::channel(CleanupReport::default());
            let cleanup = wharf.cleanup_payloads(older_than, dry_run, move |r| {
                progress_tx.send_replace(*r);
            });
            tokio::pin!(cleanup);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                // Returning drops the cleanup: a client that goes away, or a
                // shutdown, stops it between two objects.
                let message = tokio::select! {
                    done = &mut cleanup => {
                        let message = done
                            .map(|r| CleanupPayloadsResponse { kind: Some(Kind::Done(report(&r))) })
                            .map_err(|e| to_status(&e));
                        let _ = tx.send(message).await;
                        return;
                    }
                    _ = tick.tick() => {
                        if !progress.has_changed().unwrap_or(false) {
                            continue;
                        }
                        let r = *progress.borrow_and_update();
                        Ok(CleanupPayloadsResponse { kind: Some(Kind::Progress(report(&r))) })
                    }
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => {
                        Err(Status::unavailable("server is shutting down; the cleanup stopped"))
                    }
                };
                let stop = message.is_err();
                if tx.send(message).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_their_hash_in_the_last_segment() {
        let hex = "ab".repeat(32);
        for uri in [
            format!("file:///var/payloads/{hex}.bin"),
            format!("s3://bucket/events/{hex}.bin"),
            format!("{hex}.bin"),
        ] {
            assert_eq!(hash_of_uri(&uri).unwrap(), ContentHash([0xab; 32]), "{uri}");
        }
        for bad in ["s3://bucket/events/", "file:///x/abc.bin", &hex] {
            let status = hash_of_uri(bad).unwrap_err();
            assert!(
                status.message().starts_with("uri:") && status.message().contains(bad),
                "{}",
                status.message()
            );
        }
    }
}

//! The gRPC `wharf.v1.Queues` service over the engine.

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use wharf::{DequeueOptions, QueueCreated, Receipt, Wharf};
use wharf_proto::convert::{self, duration};
use wharf_proto::status::{to_rpc_status, to_status};
use wharf_proto::v1::{
    AckRequest, AckResponse, AckResult, CreateQueueRequest, CreateQueueResponse,
    DeleteQueueRequest, DeleteQueueResponse, DequeueRequest, DequeueResponse, EnqueueRequest,
    EnqueueResponse, EnqueueStreamRequest, ExtendRequest, ExtendResponse, ListQueuesRequest,
    ListQueuesResponse, NackRequest, NackResponse, PurgeRequest, PurgeResponse, RedriveRequest,
    RedriveResponse, StatsRequest, StatsResponse, queues_server::Queues,
};

use super::enqueue_stream::{self, AnswerStream};

/// The service; one per server, shared by every connection.
#[derive(Clone)]
pub struct QueuesService {
    wharf: Wharf,
    shutdown: CancellationToken,
}

impl QueuesService {
    /// A service over `wharf` whose long-polling dequeues end, empty, when
    /// `shutdown` fires.
    pub fn new(wharf: Wharf, shutdown: CancellationToken) -> Self {
        Self { wharf, shutdown }
    }
}

fn status(error: wharf::Error) -> Status {
    to_status(&error)
}

#[tonic::async_trait]
impl Queues for QueuesService {
    async fn create_queue(
        &self,
        request: Request<CreateQueueRequest>,
    ) -> Result<Response<CreateQueueResponse>, Status> {
        let r = request.into_inner();
        let queue = convert::queue_name(r.queue)?;
        let settings = convert::queue_settings(r.settings, self.wharf.queue_defaults())?;
        let created = self
            .wharf
            .create_queue(&queue, settings)
            .await
            .map_err(status)?;
        Ok(Response::new(CreateQueueResponse {
            created: created == QueueCreated::Created,
        }))
    }

    async fn enqueue(
        &self,
        request: Request<EnqueueRequest>,
    ) -> Result<Response<EnqueueResponse>, Status> {
        let r = request.into_inner();
        let queue = convert::queue_name(r.queue)?;
        let messages = r.messages.into_iter().map(Into::into).collect();
        let enqueued = self
            .wharf
            .enqueue_batch(&queue, messages)
            .await
            .map_err(status)?;
        Ok(Response::new(EnqueueResponse {
            messages: enqueued.into_iter().map(Into::into).collect(),
        }))
    }

    type EnqueueStreamStream = AnswerStream;

    async fn enqueue_stream(
        &self,
        request: Request<Streaming<EnqueueStreamRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        Ok(Response::new(enqueue_stream::serve(
            self.wharf.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }

    async fn dequeue(
        &self,
        request: Request<DequeueRequest>,
    ) -> Result<Response<DequeueResponse>, Status> {
        let r = request.into_inner();
        let queue = convert::queue_name(r.queue)?;
        let options = DequeueOptions {
            visibility_timeout: r.visibility_timeout_micros.map(duration),
            max_messages: r.max_messages.unwrap_or(1),
            wait: duration(r.wait_micros),
        };
        // Checked here too, so a request out of bounds is refused even while
        // the server is shutting down (and before the storage port, which
        // the engine's checks do not guard).
        options.validate().map_err(status)?;
        let wait = options.wait;
        let dequeue = async {
            if r.payload_references {
                // References as stored: nothing is fetched, so nothing can
                // fail to be fetched and be dead-lettered.
                self.wharf.queue_store().dequeue(&queue, options).await
            } else {
                self.wharf.dequeue(&queue, options).await
            }
        };
        let deliveries = if wait.is_zero() {
            dequeue.await
        } else {
            // A long poll ends with nothing when the server shuts down, so
            // shutdown need not wait out up to 20 s of it. The engine's wait
            // is cancel-safe; only a delivery racing the shutdown can be
            // lost, and it comes back when its visibility timeout ends.
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Ok(Vec::new()),
                delivered = dequeue => delivered,
            }
        }
        .map_err(status)?;
        Ok(Response::new(DequeueResponse {
            deliveries: deliveries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let r = request.into_inner();
        let queue = convert::queue_name(r.queue)?;
        let receipts: Vec<Receipt> = r.receipts.into_iter().map(Receipt::new).collect();
        let results = self
            .wharf
            .ack_batch(&queue, &receipts)
            .await
            .map_err(status)?;
        Ok(Response::new(AckResponse {
            results: results
                .into_iter()
                .map(|r| AckResult {
                    error: r.err().map(|e| to_rpc_status(&e)),
                })
                .collect(),
        }))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<NackResponse>, Status> {
        let r = request.into_inner();
        let queue = convert::queue_name(r.queue)?;
        self.wharf
            .nack(
                &queue,
                &Receipt::new(r.receipt),
                duration(r.redeliver_after_micros),
                r.reason,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(NackResponse {}))
    }

    async fn extend(
        &self,
        request: Request<ExtendRequest>,
    ) -> Result<Response<ExtendResponse>, Status> {
        let r = request.into_inner();
        let queue = convert::queue_name(r.queue)?;
        self.wharf
            .extend(&queue, &Receipt::new(r.receipt), duration(r.timeout_micros))
            .await
            .map_err(status)?;
        Ok(Response::new(ExtendResponse {}))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let queue = convert::queue_name(request.into_inner().queue)?;
        let stats = self.wharf.queue_stats(&queue).await.map_err(status)?;
        Ok(Response::new(StatsResponse {
            stats: Some(stats.into()),
        }))
    }

    async fn list_queues(
        &self,
        _request: Request<ListQueuesRequest>,
    ) -> Result<Response<ListQueuesResponse>, Status> {
        let queues = self.wharf.list_queues().await.map_err(status)?;
        Ok(Response::new(ListQueuesResponse {
            queues: queues.into_iter().map(Into::into).collect(),
        }))
    }

    async fn redrive(
        &self,
        request: Request<RedriveRequest>,
    ) -> Result<Response<RedriveResponse>, Status> {
        let r = request.into_inner();
        let dead_letter_queue = convert::queue_name(r.dead_letter_queue)?;
        let to = r.to.map(convert::queue_name).transpose()?;
        let moved = self
            .wharf
            .redrive(&dead_letter_queue, to.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(RedriveResponse { moved }))
    }

    async fn purge(
        &self,
        request: Request<PurgeRequest>,
    ) -> Result<Response<PurgeResponse>, Status> {
        let queue = convert::queue_name(request.into_inner().queue)?;
        let purged = self.wharf.purge(&queue).await.map_err(status)?;
        Ok(Response::new(PurgeResponse { purged }))
    }

    async fn delete_queue(
        &self,
        request: Request<DeleteQueueRequest>,
    ) -> Result<Response<DeleteQueueResponse>, Status> {
        let queue = convert::queue_name(request.into_inner().queue)?;
        self.wharf.delete_queue(&queue).await.map_err(status)?;
        Ok(Response::new(DeleteQueueResponse {}))
    }
}

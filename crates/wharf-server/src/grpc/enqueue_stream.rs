//! `EnqueueStream`: single enqueues pipelined on one stream.
//!
//! A unary call costs a new HTTP/2 stream, headers both ways and trailers;
//! for a 1 KiB message that is most of the work. Here each request is one
//! frame, each answer another. Requests are taken up to [`IN_FLIGHT`] at a
//! time and run concurrently, so they meet in the engine's group commits as
//! unary calls in flight would; answers go out in the order the requests
//! came, each once its enqueue is durable.

use std::pin::Pin;

use futures::stream::{FuturesOrdered, Stream, StreamExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use wharf::{Error, QueueName, Wharf};
use wharf_proto::status::to_rpc_status;
use wharf_proto::v1::enqueue_stream_response::Outcome;
use wharf_proto::v1::{EnqueueStreamRequest, EnqueueStreamResponse};

/// Requests of one stream being enqueued at once; the stream is not read
/// further until one is answered (the client's sends then wait on HTTP/2
/// flow control).
const IN_FLIGHT: usize = 256;

/// The response stream of an `EnqueueStream` call.
pub(crate) type AnswerStream =
    Pin<Box<dyn Stream<Item = Result<EnqueueStreamResponse, Status>> + Send>>;

/// Serves one `EnqueueStream` call: reads `requests` until the client ends
/// them or `shutdown` fires, then answers what was read and ends. A broken
/// request stream (a malformed or oversized frame) ends the answers with
/// its status after the answers of everything read before it.
pub(crate) fn serve(
    wharf: Wharf,
    mut requests: Streaming<EnqueueStreamRequest>,
    shutdown: CancellationToken,
) -> AnswerStream {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        let mut pending = FuturesOrdered::new();
        let mut reading = true;
        let mut broken = None;
        loop {
            tokio::select! {
                biased;
                Some(answer) = pending.next() => {
                    if tx.send(Ok(answer)).await.is_err() {
                        return; // the client went away
                    }
                }
                () = shutdown.cancelled(), if reading => reading = false,
                request = requests.message(), if reading && pending.len() < IN_FLIGHT => {
                    match request {
                        Ok(Some(request)) => pending.push_back(enqueue(wharf.clone(), request)),
                        Ok(None) => reading = false,
                        Err(status) => {
                            reading = false;
                            broken = Some(status);
                        }
                    }
                }
                else => break,
            }
        }
        if let Some(status) = broken {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// One request's answer, as `Enqueue` with that one message would answer.
async fn enqueue(wharf: Wharf, request: EnqueueStreamRequest) -> EnqueueStreamResponse {
    let enqueued = async {
        let queue = QueueName::new(request.queue).map_err(Error::invalid_queue_name)?;
        let message = request.message.ok_or_else(|| {
            Error::InvalidArgument("an enqueue stream request has no `message`".into())
        })?;
        wharf.enqueue(&queue, message.into()).await
    };
    EnqueueStreamResponse {
        outcome: Some(match enqueued.await {
            Ok(enqueued) => Outcome::Enqueued(enqueued.into()),
            Err(e) => Outcome::Error(to_rpc_status(&e)),
        }),
    }
}

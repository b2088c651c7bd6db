//! Single enqueues pipelined on one `EnqueueStream` call per client.
//!
//! [`Client::enqueue`](crate::Client::enqueue) sends a small message as one
//! request on a stream that every clone of the client shares, and waits for
//! its answer; the server answers in the order it was sent to, so the
//! waiting callers form a queue. The stream is opened on first use and again
//! after it ends (the server shut down, the connection broke): whoever was
//! waiting then gets the stream's error, and the next enqueue opens a new
//! one. Dropping the last clone ends the requests, so the server finishes
//! and the stream's task ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use wharf_core::{Enqueued, Error, Result};
use wharf_proto::convert;
use wharf_proto::status::{from_rpc_status, from_status};
use wharf_proto::v1::{self, enqueue_stream_response::Outcome, queues_client::QueuesClient};

/// Messages larger than this (encoded) go as a unary call instead: an
/// oversized frame would break the stream for every message in flight,
/// and pipelining is for small messages anyway.
pub(crate) const MAX_STREAMED_BYTES: usize = 64 * 1024;

type Answer = oneshot::Sender<Result<Enqueued>>;

/// The stream of a client and its clones: the current pipe, if any.
#[derive(Default)]
pub(crate) struct EnqueueStream {
    pipe: Mutex<Option<Pipe>>,
}

/// One open `EnqueueStream` call.
struct Pipe {
    requests: mpsc::UnboundedSender<v1::EnqueueStreamRequest>,
    waiting: Arc<Mutex<Waiting>>,
}

/// The callers waiting for answers, in the order their requests were sent.
#[derive(Default)]
struct Waiting {
    /// The stream ended; nothing more is answered on it.
    ended: bool,
    answers: VecDeque<Answer>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one is still
    // consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EnqueueStream {
    /// Sends `request` on the open stream (opening one over `queues` if
    /// none is) and waits for its answer.
    pub(crate) async fn enqueue(
        &self,
        queues: &QueuesClient<Channel>,
        request: v1::EnqueueStreamRequest,
    ) -> Result<Enqueued> {
        let (answer, answered) = oneshot::channel();
        self.send(queues, request, answer);
        answered.await.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "the enqueue stream ended without an answer".into(),
            ))
        })
    }

    fn send(
        &self,
        queues: &QueuesClient<Channel>,
        mut request: v1::EnqueueStreamRequest,
        answer: Answer,
    ) {
        let mut pipe = lock(&self.pipe);
        loop {
            let current = match &mut *pipe {
                Some(current) => current,
                none => none.insert(Pipe::open(queues.clone())),
            };
            let mut waiting = lock(&current.waiting);
            if !waiting.ended {
                // Queued and sent under one lock, so answers pair with
                // requests in order.
                match current.requests.send(request) {
                    Ok(()) => {
                        waiting.answers.push_back(answer);
                        return;
                    }
                    Err(mpsc::error::SendError(unsent)) => request = unsent,
                }
            }
            drop(waiting);
            *pipe = None; // ended: open a new one
        }
    }
}

impl Pipe {
    fn open(mut queues: QueuesClient<Channel>) -> Self {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let answering = Arc::clone(&waiting);
        tokio::spawn(async move {
            let outgoing = UnboundedReceiverStream::new(outgoing);
            let end = match queues.enqueue_stream(outgoing).await {
                Ok(answers) => answer(answers.into_inner(), &answering).await,
                Err(status) => from_status(&status),
            };
            let unanswered = {
                let mut waiting = lock(&answering);
                waiting.ended = true;
                std::mem::take(&mut waiting.answers)
            };
            for caller in unanswered {
                let _ = caller.send(Err(end.clone()));
            }
        });
        Self { requests, waiting }
    }
}

/// Hands each answer to the caller waiting longest; returns why the stream
/// ended.
async fn answer(
    mut answers: tonic::Streaming<v1::EnqueueStreamResponse>,
    waiting: &Mutex<Waiting>,
) -> Error {
    loop {
        let outcome = match answers.message().await {
            Ok(Some(response)) => match response.outcome {
                Some(Outcome::Enqueued(enqueued)) => {
                    convert::enqueued(enqueued).map_err(|s| from_status(&s))
                }
                Some(Outcome::Error(status)) => Err(from_rpc_status(&status)),
                None => Err(Error::Storage(
                    "the server answered an enqueue with no outcome".into(),
                )),
            },
            Ok(None) => {
                return Error::Unavailable(
                    "the server ended the enqueue stream (it is shutting down); \
                     the message was not enqueued"
                        .into(),
                );
            }
            Err(status) => return from_status(&status),
        };
        let Some(caller) = lock(waiting).answers.pop_front() else {
            return Error::Storage("the server answered an enqueue that was not sent".into());
        };
        let _ = caller.send(outcome);
    }
}

/// Whether `message` is small enough to go on the stream.
pub(crate) fn streamable(message: &v1::NewMessage) -> bool {
    message.encoded_len() <= MAX_STREAMED_BYTES
}

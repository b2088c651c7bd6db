//! One LISTEN connection per node, fanning notifications out by kind.
//!
//! Every node listens on one channel per schema (NOTIFY channels are
//! database-wide, so the schema name keeps two deployments in one database
//! apart). A payload is `kind:rest`; subscribers of `kind` get `rest`.
//!
//! Notifications are a wake-up, never the data: after the connection is
//! lost and made again every subscriber gets [`Signal::Resync`] and must
//! re-read what it watches, since anything sent meanwhile was missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use wharf_core::Result;

use crate::error::pg;

/// How many signals a slow subscriber may fall behind before it is told to
/// resync instead.
const BACKLOG: usize = 1024;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A notification of the subscribed kind, with the payload after `kind:`.
    Notified(String),
    /// Notifications may have been missed (reconnect, or this subscriber
    /// lagged): re-read the state.
    Resync,
}

/// The node's notification connection.
pub(crate) struct Listener {
    kinds: Arc<Kinds>,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Kinds(Mutex<HashMap<String, broadcast::Sender<Signal>>>);

impl Kinds {
    fn sender(&self, kind: &str) -> broadcast::Sender<Signal> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind.to_owned())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .clone()
    }

    fn dispatch(&self, payload: &str) {
        let (kind, rest) = payload.split_once(':').unwrap_or((payload, ""));
        let sender = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .cloned();
        if let Some(sender) = sender {
            let _ = sender.send(Signal::Notified(rest.to_owned()));
        }
    }

    fn resync_all(&self) {
        for sender in self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            let _ = sender.send(Signal::Resync);
        }
    }
}

impl Listener {
    /// Connects and listens on `channel`; reconnects by itself when the
    /// connection is lost.
    ///
    /// # Errors
    /// `Unavailable` when the first connection cannot be made.
    pub(crate) async fn start(config: tokio_postgres::Config, channel: String) -> Result<Self> {
        let kinds = Arc::new(Kinds::default());
        let (connected_tx, connected) = watch::channel(false);
        let first = listen(&config, &channel).await?;
        let _ = connected_tx.send(true);
        let task = tokio::spawn(run(config, channel, kinds.clone(), connected_tx, first));
        Ok(Self {
            kinds,
            connected,
            task,
        })
    }

    /// Signals for payloads `kind:…`.
    pub(crate) fn subscribe(&self, kind: &str) -> broadcast::Receiver<Signal> {
        self.kinds.sender(kind).subscribe()
    }

    /// Whether the LISTEN connection is up now, as a watch.
    pub(crate) fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Stops listening.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Messages = futures::channel::mpsc::UnboundedReceiver<AsyncMessage>;

/// A connection listening on `channel`: its client (dropping it closes the
/// connection) and its messages, which end when the connection does.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
) -> Result<(tokio_postgres::Client, Messages)> {
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg("open the notification connection", e))?;
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if tx.unbounded_send(message).is_err() {
                break;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .map_err(|e| pg("listen for notifications", e))?;
    Ok((client, rx))
}

async fn run(
    config: tokio_postgres::Config,
    channel: String,
    kinds: Arc<Kinds>,
    connected: watch::Sender<bool>,
    first: (tokio_postgres::Client, Messages),
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let (client, mut messages) = match current.take() {
            Some(c) => c,
            None => match listen(&config, &channel).await {
                Ok(c) => {
                    tracing::info!("PostgreSQL notification connection restored");
                    let _ = connected.send(true);
                    backoff = Duration::from_millis(50);
                    // Anything sent while we were away was missed.
                    kinds.resync_all();
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL notification connection failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                kinds.dispatch(n.payload());
            }
        }
        drop(client);
        let _ = connected.send(false);
        tracing::warn!("PostgreSQL notification connection lost; reconnecting");
    }
}

/// Turns a lagged receive into [`Signal::Resync`]; `None` when the
/// listener is gone.
pub(crate) async fn recv(rx: &mut broadcast::Receiver<Signal>) -> Option<Signal> {
    match rx.recv().await {
        Ok(signal) => Some(signal),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(Signal::Resync),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

//! `wharf queue …`: the queue verbs, over the gRPC client.
//!
//! Bounds on counts and durations are checked when the command line is
//! parsed (exit 2); names are checked here before connecting (exit 1), so a
//! bad request is refused before anything reaches the server.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_client::Client;
use wharf_core::{
    DequeueOptions, Error, NewMessage, QueueCreated, QueueInfo, QueueName, QueueSettings,
    QueueStats, Receipt,
};

use crate::args::{
    AckArgs, CreateQueueArgs, DequeueArgs, EnqueueArgs, ExtendArgs, GlobalArgs, NackArgs,
    QueueArgs, QueueCommand, RedriveArgs,
};
use crate::connect::connect;
use crate::exit::PartialFailure;
use crate::input::Payload;
use crate::output::{self, DeliveryLine, Format};

/// Runs one queue verb.
///
/// # Errors
/// The domain error of the call (which decides the exit code), or why the
/// arguments or the payload could not be used.
pub async fn run(command: QueueCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let format = Format::from_json_flag(global.json);
    let server = global.server.as_str();
    match command {
        QueueCommand::Create(args) => create(args, server, format).await,
        QueueCommand::Enqueue(args) => enqueue(args, server, format).await,
        QueueCommand::Dequeue(args) => dequeue(args, server, format).await,
        QueueCommand::Ack(args) => ack(args, server, format).await,
        QueueCommand::Nack(args) => nack(args, server, format).await,
        QueueCommand::Extend(args) => extend(args, server, format).await,
        QueueCommand::Stats(args) => stats(args, server, format).await,
        QueueCommand::Redrive(args) => redrive(args, server, format).await,
        QueueCommand::Purge(args) => purge(args, server, format).await,
        QueueCommand::Delete(args) => delete(args, server, format).await,
        QueueCommand::List => list(server, format).await,
    }
}

/// Validates a queue name here rather than only at the server, so a bad name
/// is reported with its rule even when no server is running.
fn queue_name(name: String) -> Result<QueueName, Error> {
    QueueName::new(name).map_err(Error::invalid_queue_name)
}

/// The queue named on the command line, and a client of the server.
async fn open(queue: String, server: &str) -> anyhow::Result<(QueueName, Client)> {
    let queue = queue_name(queue)?;
    Ok((queue, connect(server).await?))
}

async fn create(args: CreateQueueArgs, server: &str, format: Format) -> anyhow::Result<()> {
    // The server's configured defaults are not visible to a client, so what
    // is not given takes the built-in defaults of DESIGN.md §3.
    let mut settings = QueueSettings::default();
    if let Some(attempts) = args.max_delivery_attempts {
        settings.max_delivery_attempts = attempts;
    }
    if args.no_dead_letter_queue {
        settings.dead_letter_queue = None;
    } else if let Some(dlq) = args.dead_letter_queue {
        settings.dead_letter_queue = Some(queue_name(dlq)?);
    }
    if let Some(timeout) = args.visibility_timeout {
        settings.visibility_timeout = timeout;
    }
    let (queue, client) = open(args.queue, server).await?;
    let created = client.create_queue(&queue, settings.clone()).await? == QueueCreated::Created;
    match format {
        Format::Json => output::json(&json!({
            "queue": queue.as_str(),
            "created": created,
            "settings": settings,
        })),
        Format::Human if created => output::line(format_args!(
            "created queue {queue}: {}",
            SettingsText(&settings)
        )),
        Format::Human => output::line(format_args!(
            "queue {queue} already exists with these settings: {}",
            SettingsText(&settings)
        )),
    }
}

async fn enqueue(args: EnqueueArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let payload = Payload::try_from(args.payload)?;
    let queue = queue_name(args.queue)?;
    let body = payload.read().await?;
    let mut message = NewMessage::new(body.data)
        .with_content_type(body.content_type)
        .with_delay(args.delay.unwrap_or_default());
    message.metadata = body.metadata;
    if let Some(dedup_id) = args.dedup_id {
        message = message.with_dedup_id(dedup_id);
    }
    let client = connect(server).await?;
    let enqueued = client.enqueue(&queue, message).await?;
    match format {
        Format::Json => output::json(&json!({
            "message_id": enqueued.message_id.to_string(),
            "duplicate": enqueued.duplicate,
        })),
        // Only the id on stdout, so `id=$(wharf queue enqueue …)` works.
        Format::Human => output::line(enqueued.message_id),
    }
}

async fn dequeue(args: DequeueArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let options = DequeueOptions {
        visibility_timeout: args.visibility_timeout,
        max_messages: args.max,
        wait: args.wait,
    };
    let (queue, client) = open(args.queue, server).await?;
    let deliveries = client
        .with_payload_references(args.payload_references)
        .dequeue(&queue, options)
        .await?;
    match format {
        Format::Json => output::json(&json!({
            "deliveries": deliveries.iter().map(output::delivery_json).collect::<Vec<_>>(),
        })),
        Format::Human => deliveries
            .iter()
            .try_for_each(|d| output::line(DeliveryLine(d))),
    }
}

async fn ack(args: AckArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let (queue, client) = open(args.queue, server).await?;
    let outcomes = client.ack_batch(&queue, &args.receipts).await?;
    if outcomes.len() != args.receipts.len() {
        return Err(Error::Storage(format!(
            "the server answered {} receipts with {} outcomes",
            args.receipts.len(),
            outcomes.len()
        ))
        .into());
    }
    let mut acknowledged: Vec<&Receipt> = Vec::new();
    let mut failed: Vec<(&Receipt, Error)> = Vec::new();
    for (receipt, outcome) in args.receipts.iter().zip(outcomes) {
        match outcome {
            Ok(()) => acknowledged.push(receipt),
            Err(e) => failed.push((receipt, e)),
        }
    }
    // What was acknowledged is printed even when others failed, so a script
    // knows which deliveries are done.
    let total = args.receipts.len();
    match format {
        Format::Json => output::json(&json!({
            "acknowledged": acknowledged.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "failed": failed
                .iter()
                .map(|(r, e)| json!({"receipt": r.as_str(), "error": e.to_string()}))
                .collect::<Vec<_>>(),
        }))?,
        Format::Human if failed.is_empty() => output::line(format_args!(
            "acknowledged {}",
            Count(total as u64, "message")
        ))?,
        Format::Human if !acknowledged.is_empty() => output::line(format_args!(
            "acknowledged {} of {total} messages",
            acknowledged.len()
        ))?,
        Format::Human => {}
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(PartialFailure {
        summary: format!(
            "{} of {} not acknowledged",
            failed.len(),
            Count(total as u64, "receipt")
        ),
        failures: failed
            .into_iter()
            .map(|(r, e)| (r.to_string(), e))
            .collect(),
    }
    .into())
}

async fn nack(args: NackArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let (queue, client) = open(args.queue, server).await?;
    client
        .nack(&queue, &args.receipt, args.redeliver_after, args.reason)
        .await?;
    match format {
        Format::Json => output::json(&json!({
            "receipt": args.receipt.as_str(),
            "redeliver_after": humantime::format_duration(args.redeliver_after).to_string(),
        })),
        Format::Human => output::line(format_args!(
            "nacked: redelivered {}, or dead-lettered if that was its last attempt",
            if args.redeliver_after.is_zero() {
                "now".to_owned()
            } else {
                format!("in {}", humantime::format_duration(args.redeliver_after))
            }
        )),
    }
}

async fn extend(args: ExtendArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let (queue, client) = open(args.queue, server).await?;
    client.extend(&queue, &args.receipt, args.timeout).await?;
    let timeout = humantime::format_duration(args.timeout).to_string();
    match format {
        Format::Json => output::json(&json!({
            "receipt": args.receipt.as_str(),
            "visibility_timeout": timeout,
        })),
        Format::Human => output::line(format_args!("extended: invisible for {timeout} from now")),
    }
}

async fn stats(args: QueueArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let (queue, client) = open(args.queue, server).await?;
    let stats = client.queue_stats(&queue).await?;
    match format {
        Format::Json => {
            let mut value = stats_json(&stats);
            if let Value::Object(object) = &mut value {
                object.insert("queue".into(), json!(queue.as_str()));
            }
            output::json(&value)
        }
        Format::Human => {
            output::line(format_args!("{queue}: {}", StatsText(&stats)))?;
            output::line(format_args!(
                "since created: {} delivered, {} acknowledged, {} nacked, {} dead-lettered",
                stats.deliveries, stats.acks, stats.nacks, stats.dead_lettered
            ))
        }
    }
}

async fn redrive(args: RedriveArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let to = args.to.map(queue_name).transpose()?;
    let (dlq, client) = open(args.dead_letter_queue, server).await?;
    let moved = client.redrive(&dlq, to.as_ref()).await?;
    match (format, to) {
        (Format::Json, to) => output::json(&json!({
            "queue": dlq.as_str(),
            "to": to.as_ref().map(QueueName::as_str),
            "moved": moved,
        })),
        (Format::Human, Some(to)) => output::line(format_args!(
            "moved {} from {dlq} to {to}",
            Count(moved, "message")
        )),
        (Format::Human, None) => output::line(format_args!(
            "moved {} from {dlq} back to the queues they came from",
            Count(moved, "message")
        )),
    }
}

async fn purge(args: QueueArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let (queue, client) = open(args.queue, server).await?;
    let purged = client.purge(&queue).await?;
    match format {
        Format::Json => output::json(&json!({"queue": queue.as_str(), "purged": purged})),
        Format::Human => output::line(format_args!(
            "purged {} from {queue}",
            Count(purged, "message")
        )),
    }
}

async fn delete(args: QueueArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let (queue, client) = open(args.queue, server).await?;
    client.delete_queue(&queue).await?;
    match format {
        Format::Json => output::json(&json!({"queue": queue.as_str(), "deleted": true})),
        Format::Human => output::line(format_args!("deleted queue {queue}")),
    }
}

async fn list(server: &str, format: Format) -> anyhow::Result<()> {
    let client = connect(server).await?;
    let mut queues = client.list_queues().await?;
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    match format {
        Format::Json => output::json(&json!({
            "queues": queues.iter().map(info_json).collect::<Vec<_>>(),
        })),
        Format::Human => queues.iter().try_for_each(|info| {
            output::line(format_args!(
                "{}: {}; {}",
                info.name,
                StatsText(&info.stats),
                SettingsText(&info.settings)
            ))
        }),
    }
}

/// A queue as `queue list --json` shows it, and as the HTTP admin API's
/// `/admin/queues` does: `name`, `settings` (durations in humantime, as the
/// configuration file writes them) and `stats`.
fn info_json(info: &QueueInfo) -> Value {
    json!({
        "name": info.name.as_str(),
        "settings": info.settings,
        "stats": stats_json(&info.stats),
    })
}

/// Statistics with the field names of the HTTP admin API: the counts,
/// `depth`, and `oldest_age_seconds` (a number, or null when empty).
fn stats_json(stats: &QueueStats) -> Value {
    json!({
        "visible": stats.visible,
        "in_flight": stats.in_flight,
        "delayed": stats.delayed,
        "depth": stats.depth(),
        "oldest_age_seconds": stats.oldest_age().map(|age| age.as_secs_f64()),
        "dead_letters": stats.dead_letters,
        "deliveries": stats.deliveries,
        "acks": stats.acks,
        "nacks": stats.nacks,
        "dead_lettered": stats.dead_lettered,
    })
}

/// Settings for people: `max 5 deliveries, dead letters to dlq, visibility timeout 30s`.
struct SettingsText<'a>(&'a QueueSettings);

impl std::fmt::Display for SettingsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        write!(
            f,
            "max {}, ",
            Count(s.max_delivery_attempts.into(), "delivery")
        )?;
        match &s.dead_letter_queue {
            Some(dlq) => write!(f, "dead letters to {dlq}, ")?,
            None => f.write_str("no dead-letter queue, ")?,
        }
        write!(
            f,
            "visibility timeout {}",
            humantime::format_duration(s.visibility_timeout)
        )
    }
}

/// Statistics for people:
/// `3 visible, 1 in flight, 0 delayed, oldest 2s, 0 dead letters`.
struct StatsText<'a>(&'a QueueStats);

impl std::fmt::Display for StatsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        write!(
            f,
            "{} visible, {} in flight, {} delayed, ",
            s.visible, s.in_flight, s.delayed
        )?;
        if let Some(age) = s.oldest_age() {
            // Whole seconds are precise enough for people.
            let age = Duration::from_secs(age.as_secs());
            write!(f, "oldest {}, ", humantime::format_duration(age))?;
        }
        write!(f, "{}", Count(s.dead_letters, "dead letter"))
    }
}

/// `1 message`, `2 messages`, `2 deliveries`.
struct Count(u64, &'static str);

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        match (n, self.1.strip_suffix('y')) {
            (1, _) => write!(f, "1 {}", self.1),
            (_, Some(stem)) => write!(f, "{n} {stem}ies"),
            (_, None) => write!(f, "{n} {}s", self.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_pluralised() {
        assert_eq!(Count(1, "message").to_string(), "1 message");
        assert_eq!(Count(0, "message").to_string(), "0 messages");
        assert_eq!(Count(5, "delivery").to_string(), "5 deliveries");
        assert_eq!(Count(2, "dead letter").to_string(), "2 dead letters");
    }

    #[test]
    fn settings_for_people_name_each_setting() {
        assert_eq!(
            SettingsText(&QueueSettings::default()).to_string(),
            "max 5 deliveries, dead letters to dlq, visibility timeout 30s"
        );
        let none = QueueSettings {
            dead_letter_queue: None,
            ..QueueSettings::default()
        };
        assert_eq!(
            SettingsText(&none).to_string(),
            "max 5 deliveries, no dead-letter queue, visibility timeout 30s"
        );
    }

    #[test]
    fn stats_for_people_leave_out_the_age_of_an_empty_queue() {
        let stats = QueueStats {
            visible: 3,
            in_flight: 1,
            oldest_age_micros: Some(2_500_000),
            dead_letters: 1,
            ..QueueStats::default()
        };
        assert_eq!(
            StatsText(&stats).to_string(),
            "3 visible, 1 in flight, 0 delayed, oldest 2s, 1 dead letter"
        );
        assert_eq!(
            StatsText(&QueueStats::default()).to_string(),
            "0 visible, 0 in flight, 0 delayed, 0 dead letters"
        );
    }

    #[test]
    fn stats_json_uses_the_names_of_the_http_admin_api() {
        let stats = QueueStats {
            visible: 3,
            in_flight: 1,
            delayed: 2,
            oldest_age_micros: Some(2_500_000),
            ..QueueStats::default()
        };
        let v = stats_json(&stats);
        assert_eq!(v["depth"], 6);
        assert_eq!(v["oldest_age_seconds"], 2.5);
        assert_eq!(
            stats_json(&QueueStats::default())["oldest_age_seconds"],
            Value::Null
        );
    }
}

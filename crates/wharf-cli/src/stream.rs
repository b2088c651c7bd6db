//! `wharf stream …`: the event-stream verbs, over the gRPC client.

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use wharf_client::SubscriptionItem;
use wharf_core::{
    AppendOutcome, Error, LogFilter, NewEvent, Position, ReadDirection, StreamName, StreamStart,
};

use crate::args::{
    AppendArgs, DeleteStreamArgs, GlobalArgs, PositionAtArgs, ReadArgs, StreamCommand, TailArgs,
};
use crate::connect::connect;
use crate::input::Payload;
use crate::output::{self, EventLine, Format};
use crate::signals::Signals;

/// Runs one stream verb.
///
/// # Errors
/// The domain error of the call (which decides the exit code), or why the
/// arguments or the payload could not be used.
pub async fn run(command: StreamCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let format = Format::from_json_flag(global.json);
    match command {
        StreamCommand::Append(args) => append(args, &global.server, format).await,
        StreamCommand::Read(args) => read(args, &global.server, format).await,
        StreamCommand::Tail(args) => tail(args, &global.server, format).await,
        StreamCommand::PositionAt(args) => position_at(args, &global.server, format).await,
        StreamCommand::Delete(args) => delete(args, &global.server, format).await,
    }
}

/// Validates a stream name here rather than only at the server, so a bad name
/// is reported with its rule even when no server is running.
fn stream_name(name: String) -> Result<StreamName, Error> {
    StreamName::new(name).map_err(Error::invalid_stream_name)
}

async fn append(args: AppendArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let payload = Payload::try_from(args.payload)?;
    let stream = stream_name(args.stream)?;
    let body = payload.read().await?;
    let mut event = NewEvent::new(args.event_type, body.data).with_content_type(body.content_type);
    event.metadata = body.metadata;
    if let Some(id) = args.id {
        event = event.with_id(id);
    }

    let client = connect(server).await?;
    let outcome = client
        .append(&stream, args.expected_version, vec![event])
        .await?;
    let result = outcome.result();
    let duplicate = matches!(outcome, AppendOutcome::Duplicate(_));
    match format {
        Format::Json => output::json(&json!({
            "stream": stream.as_str(),
            "first_version": result.first_version,
            "last_version": result.last_version,
            "first_position": result.first_position.0,
            "last_position": result.last_position.0,
            "duplicate": duplicate,
        })),
        Format::Human => output::line(format_args!(
            "appended to {stream} at version {} (position {}){}",
            result.last_version,
            result.last_position,
            if duplicate {
                " (duplicate: already appended)"
            } else {
                ""
            }
        )),
    }
}

async fn read(args: ReadArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let stream = stream_name(args.stream)?;
    let start = args.from.map_or(StreamStart::Edge, StreamStart::Version);
    let direction = if args.backwards {
        ReadDirection::Backwards
    } else {
        ReadDirection::Forwards
    };
    let client = connect(server)
        .await?
        .with_payload_references(args.payload_references);
    let events = client
        .read_stream(&stream, start, direction, args.limit)
        .await?;
    match format {
        Format::Json => output::json(&json!({
            "events": events.iter().map(output::event_json).collect::<Vec<_>>(),
        })),
        Format::Human => events
            .iter()
            .try_for_each(|e| output::line(EventLine::in_stream(e))),
    }
}

async fn tail(args: TailArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let filter = LogFilter {
        stream_prefix: args.prefix.filter(|p| !p.is_empty()),
        event_types: args.event_types,
    };
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let subscribed = async {
        let client = connect(server)
            .await?
            .with_payload_references(args.payload_references);
        anyhow::Ok(
            client
                .subscribe(Position(args.from_position), &filter)
                .await?,
        )
    };
    // Connecting can take seconds against an unresponsive host; a signal
    // then still stops the tail at once.
    let mut items = tokio::select! {
        items = subscribed => items?,
        _ = signals.next() => return Ok(()),
    };
    let mut printed = 0_u64;
    loop {
        if args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
        let item = tokio::select! {
            item = items.next() => item,
            // A signal is how a tail without --limit ends; that is success.
            _ = signals.next() => return Ok(()),
        };
        match item {
            Some(Ok(SubscriptionItem::Event(event))) => {
                match format {
                    Format::Json => output::json(&output::event_json(&event))?,
                    Format::Human => output::line(EventLine::in_log(&event))?,
                }
                printed += 1;
            }
            Some(Ok(SubscriptionItem::CaughtUp)) => {
                // A note for people watching; stdout stays events only.
                if format == Format::Human {
                    eprintln!("-- caught up; waiting for new events (Ctrl-C to stop) --");
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(Error::Unavailable("the server ended the subscription".into()).into());
            }
        }
    }
}

async fn position_at(args: PositionAtArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let client = connect(server).await?;
    let position = client.position_at(args.at).await?;
    match (format, position) {
        (Format::Json, p) => output::json(&json!({ "position": p.map(|p| p.0) })),
        (Format::Human, Some(p)) => output::line(format_args!("position {p}")),
        (Format::Human, None) => output::line(format_args!("no event at or after {}", args.at)),
    }
}

async fn delete(args: DeleteStreamArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let stream = stream_name(args.stream)?;
    let client = connect(server).await?;
    let deleted = client.delete_stream(&stream, args.expected_version).await?;
    match format {
        Format::Json => output::json(&json!({"stream": stream.as_str(), "deleted": deleted})),
        Format::Human => output::line(format_args!(
            "deleted {deleted} event{} from {stream}",
            if deleted == 1 { "" } else { "s" }
        )),
    }
}

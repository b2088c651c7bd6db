//! Wharf as a library: open a data directory, append, read back, and follow
//! the log live.
//!
//! Run with `cargo run -p wharf --example embedded [DATA_DIR]`.

use std::time::Duration;

use wharf::{
    Config, ExpectedVersion, LogFilter, NewEvent, Position, ReadDirection, StreamName, StreamStart,
    SubscriptionItem, Wharf,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wharf-example"));
    let wharf = Wharf::open(&Config::embedded(&dir)).await?;
    let stream: StreamName = format!("order-{}", std::process::id()).parse()?;

    let outcome = wharf
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("OrderPlaced", r#"{"total": 12}"#)
                    .with_content_type("application/json"),
                NewEvent::new("OrderPaid", r#"{"amount": 12}"#)
                    .with_content_type("application/json"),
            ],
        )
        .await?;
    println!("appended at positions {:?}", outcome.result());

    for event in wharf
        .read_stream(&stream, StreamStart::Edge, ReadDirection::Forwards, 100)
        .await?
    {
        println!(
            "{}@{} {} {}",
            event.stream,
            event.stream_version,
            event.event_type,
            String::from_utf8_lossy(&event.data)
        );
    }

    // Follow the log from the stream's first event; a background append
    // arrives live, pushed by the commit rather than found by polling.
    let filter = LogFilter {
        stream_prefix: Some(stream.to_string()),
        event_types: vec![],
    };
    let from = Position(outcome.result().first_position.0);
    let mut subscription = wharf.subscribe(from, filter);
    let writer = wharf.clone();
    let live_stream = stream.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let shipped = NewEvent::new("OrderShipped", "{}");
        writer
            .append(&live_stream, ExpectedVersion::Exact(1), vec![shipped])
            .await
    });
    loop {
        match subscription.next().await? {
            SubscriptionItem::Event(e) => {
                println!("subscription: {} at position {}", e.event_type, e.position);
                if e.event_type == "OrderShipped" {
                    break;
                }
            }
            SubscriptionItem::CaughtUp => println!("subscription: caught up, now live"),
        }
    }
    wharf.close().await;
    Ok(())
}

//! Several sessions sharing one schema: the global-order invariant under
//! concurrent appends from several nodes, followers on every node woken by
//! any node's commits, and a node whose appends wait on a peer holding the
//! head lock.
//!
//! The order check is proven able to fail: the same checker runs against a
//! deliberately naive log numbered by a plain `bigserial`, whose writers
//! pause between INSERT and COMMIT, and must catch it losing events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::NoTls;
use wharf_core::{
    AppendOutcome, Clock, Error, ExpectedVersion, LogFilter, NewEvent, Position, ReadDirection,
    StreamName, StreamStart, SystemClock,
};
use wharf_postgres::PgStore;
use wharf_postgres::testing::{TestSchema, url};
use wharf_storage::{AppendRequest, EventLog, Subscription, SubscriptionItem};

/// What a follower did wrong, judged against everything that committed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Violations {
    /// Committed positions the follower moved past without seeing.
    missed: Vec<u64>,
    /// Positions seen out of order or twice (`(previous, seen)`).
    out_of_order: Vec<(u64, u64)>,
    /// Positions seen that never committed.
    phantom: Vec<u64>,
}

impl Violations {
    fn none(&self) -> bool {
        *self == Self::default()
    }
}

/// Checks a follower's reads: it saw every committed position, each once, in
/// increasing order. A follower never goes back, so a committed position it
/// did not see is one it moved past before that position became visible.
fn check(seen: &[u64], committed: &BTreeSet<u64>) -> Violations {
    let mut v = Violations::default();
    for w in seen.windows(2) {
        if w[1] <= w[0] {
            v.out_of_order.push((w[0], w[1]));
        }
    }
    let seen_set: BTreeSet<u64> = seen.iter().copied().collect();
    v.missed = committed.difference(&seen_set).copied().collect();
    v.phantom = seen_set.difference(committed).copied().collect();
    v
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

const NODES: usize = 3;
const APPENDERS_PER_NODE: usize = 4;
const APPENDS_PER_APPENDER: usize = 150;

/// Appends from one appender: small batches to a few shared streams, so
/// groups mix streams and nodes contend on the same ones. Returns every
/// committed position.
async fn appender(log: Arc<PgStore>, node: usize, appender: usize) -> Vec<u64> {
    let mut positions = Vec::new();
    for i in 0..APPENDS_PER_APPENDER {
        let n = 1 + (node + appender + i) % 4;
        let events = (0..n)
            .map(|k| NewEvent::new("Tick", format!("{node}/{appender}/{i}/{k}")))
            .collect();
        let outcome = log
            .append(AppendRequest {
                stream: stream(&format!("order-{}", (appender + i) % 5)),
                expected: ExpectedVersion::Any,
                events,
            })
            .await
            .expect("append commits");
        let AppendOutcome::Appended(r) = outcome else {
            panic!("fresh events appended as {outcome:?}");
        };
        positions.extend(r.first_position.0..=r.last_position.0);
    }
    positions
}

/// What a follower read.
struct Followed {
    /// Every position, in the order read.
    seen: Vec<u64>,
    /// How many it read while appends were still under way: the race the
    /// test is about.
    while_appending: usize,
}

/// Follows the log by position as fast as it can until `done` is set and
/// it has reached `target` (set with `done`).
async fn follower(
    log: Arc<PgStore>,
    done: Arc<AtomicBool>,
    target: Arc<tokio::sync::OnceCell<u64>>,
) -> Followed {
    let mut seen = Vec::new();
    let mut while_appending = 0;
    let mut from = Position::START;
    loop {
        let finished = done.load(Ordering::Acquire);
        let page = log
            .read_all(from, &LogFilter::default(), 64)
            .await
            .expect("log is readable");
        assert!(page.next >= from, "a reader never moves backwards");
        seen.extend(page.events.iter().map(|e| e.position.0));
        if !finished {
            while_appending = seen.len();
        }
        from = page.next;
        if finished && target.get().is_some_and(|t| from.0 >= *t) {
            return Followed {
                seen,
                while_appending,
            };
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_on_every_node_see_every_event_in_position_order() {
    let schema = TestSchema::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Arc::new(schema.open(clock.clone()).await));
    }
    let done = Arc::new(AtomicBool::new(false));
    let target = Arc::new(tokio::sync::OnceCell::new());
    let followers: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(follower(n.clone(), done.clone(), target.clone())))
        .collect();
    let appenders: Vec<_> = (0..NODES)
        .flat_map(|node| (0..APPENDERS_PER_NODE).map(move |a| (node, a)))
        .map(|(node, a)| tokio::spawn(appender(nodes[node].clone(), node, a)))
        .collect();
    let mut committed = BTreeSet::new();
    for a in appenders {
        committed.extend(a.await.expect("appender finishes"));
    }
    let end = committed.last().map_or(0, |p| p + 1);
    assert_eq!(
        committed,
        (0..end).collect::<BTreeSet<_>>(),
        "committed positions are dense"
    );
    target.set(end).expect("set once");
    done.store(true, Ordering::Release);
    for (node, f) in followers.into_iter().enumerate() {
        let followed = tokio::time::timeout(Duration::from_secs(15), f)
            .await
            .expect("follower reaches the end")
            .expect("follower finishes");
        assert!(
            followed.while_appending > 0,
            "follower on node {node} read nothing while appends ran; the test proves nothing"
        );
        eprintln!(
            "node {node}: {} of {} events read while appending",
            followed.while_appending,
            committed.len()
        );
        let violations = check(&followed.seen, &committed);
        assert!(violations.none(), "follower on node {node}: {violations:?}");
    }
    // Stream versions stayed gapless under contention from every node.
    for s in 0..5 {
        let events = nodes[0]
            .read_stream(
                &stream(&format!("order-{s}")),
                StreamStart::Edge,
                ReadDirection::Forwards,
                usize::MAX,
            )
            .await
            .expect("stream is readable");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, i as u64, "stream order-{s}");
        }
    }
    for node in &nodes {
        node.close().await;
    }
}

/// A log as one would first write it on PostgreSQL: positions from a
/// `bigserial`, readers paging by `position >= from`. Returns the committed
/// positions and what a concurrent follower saw.
async fn run_naive_log(schema: &TestSchema) -> (BTreeSet<u64>, Vec<u64>) {
    const WRITERS: usize = 6;
    const INSERTS: usize = 60;
    let table = format!("\"{}\".naive_log", schema.name());
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url(), NoTls)
            .await
            .expect("PostgreSQL for tests");
        tokio::spawn(connection);
        client
    };
    let setup = connect().await;
    setup
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\";
             CREATE TABLE {table} (position bigserial PRIMARY KEY, writer int NOT NULL);",
            schema.name()
        ))
        .await
        .expect("create the naive log");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let client = connect().await;
        let done = done.clone();
        let sql =
            format!("SELECT position FROM {table} WHERE position >= $1 ORDER BY position LIMIT 64");
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut from = 1i64;
            loop {
                // Read the flag first: a page read after every writer
                // finished holds everything.
                let finished = done.load(Ordering::Acquire);
                let rows = client.query(&sql, &[&from]).await.expect("read naive log");
                for row in &rows {
                    let p: i64 = row.get(0);
                    seen.push(p as u64);
                    from = p + 1;
                }
                if finished && rows.is_empty() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let table = table.clone();
            async move {
                let mut client = connect().await;
                let mut positions = Vec::new();
                for _ in 0..INSERTS {
                    let tx = client.transaction().await.expect("begin");
                    let p: i64 = tx
                        .query_one(
                            &format!("INSERT INTO {table} (writer) VALUES ($1) RETURNING position"),
                            &[&(w as i32)],
                        )
                        .await
                        .expect("insert")
                        .get(0);
                    tokio::time::sleep(Duration::from_micros(rand::random_range(0..2_000))).await;
                    tx.commit().await.expect("commit");
                    positions.push(p as u64);
                }
                positions
            }
        })
        .map(tokio::spawn)
        .collect();
    let mut committed = BTreeSet::new();
    for w in writers {
        committed.extend(w.await.expect("writer finishes"));
    }
    done.store(true, Ordering::Release);
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("naive reader finishes")
        .expect("naive reader runs");
    (committed, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_a_plain_sequence_losing_events() {
    let schema = TestSchema::new();
    let (committed, seen) = run_naive_log(&schema).await;
    let violations = check(&seen, &committed);
    assert!(
        !violations.missed.is_empty(),
        "a follower of a bigserial log with slow commits skips positions that commit late; \
         saw {} of {} without a miss",
        seen.len(),
        committed.len()
    );
    assert!(
        violations.phantom.is_empty() && violations.out_of_order.is_empty(),
        "only misses are expected: {violations:?}"
    );
}

/// Waits for `head` to reach `at`.
async fn head_reaches(head: &mut tokio::sync::watch::Receiver<Position>, at: Position) {
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= at))
        .await
        .expect("the head watch moves within 5 s of another node's commit")
        .expect("the log is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_on_other_nodes_wake_on_a_commit() {
    let schema = TestSchema::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let writer = schema.open(clock.clone()).await;
    let mut watchers = Vec::new();
    for _ in 0..2 {
        let node: Arc<dyn EventLog> = Arc::new(schema.open(clock.clone()).await);
        let mut sub = Subscription::new(node.clone(), Position::START, LogFilter::default());
        let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("an empty log catches up at once")
            .expect("subscription reads");
        assert_eq!(first, SubscriptionItem::CaughtUp);
        let live = tokio::spawn(async move {
            loop {
                match sub.next().await.expect("subscription reads") {
                    SubscriptionItem::Event(e) => return e,
                    SubscriptionItem::CaughtUp => continue,
                }
            }
        });
        watchers.push((node.watch_head(), live, node));
    }
    let event = NewEvent::new("Shipped", "parcel-1");
    let r = writer
        .append(AppendRequest {
            stream: stream("shipments"),
            expected: ExpectedVersion::NoStream,
            events: vec![event.clone()],
        })
        .await
        .expect("append commits")
        .result();
    for (mut head, live, _node) in watchers {
        head_reaches(&mut head, r.last_position.next()).await;
        let got = tokio::time::timeout(Duration::from_secs(5), live)
            .await
            .expect("the subscription wakes within 5 s of another node's commit")
            .expect("subscription task");
        assert_eq!(got.id, event.id);
        assert_eq!(got.position, r.first_position);
    }
    writer.close().await;
}

/// A plain session on the test database, in `schema`.
async fn session(schema: &TestSchema) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("PostgreSQL for tests");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", schema.name()))
        .await
        .expect("set the search path");
    client
}

/// Takes the head lock in `peer`, as another node's append would, and
/// returns the peer's backend pid.
async fn hold_head_lock(peer: &tokio_postgres::Client) -> i32 {
    peer.batch_execute("BEGIN; SELECT next_position FROM log_head FOR UPDATE")
        .await
        .expect("lock the head");
    peer.query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0)
}

/// The backends waiting for a lock `peer_pid` holds, once there is one.
async fn blocked_by(admin: &tokio_postgres::Client, peer_pid: i32) -> Vec<i32> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let pids: Vec<i32> = admin
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    &[&peer_pid],
                )
                .await
                .expect("list blocked backends")
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !pids.is_empty() {
                return pids;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the append waits for the head lock within 5 s")
}

fn request(name: &str, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream: stream(name),
        expected: ExpectedVersion::Any,
        events,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_connection_breaks_fails_unavailable_and_the_next_commits() {
    let schema = TestSchema::new();
    let node = Arc::new(schema.open(Arc::new(SystemClock)).await);
    let (peer, admin) = (session(&schema).await, session(&schema).await);
    let peer_pid = hold_head_lock(&peer).await;
    let pending = tokio::spawn({
        let node = node.clone();
        async move {
            node.append(request("cut", vec![NewEvent::new("T", "lost")]))
                .await
        }
    });
    for pid in blocked_by(&admin, peer_pid).await {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate the waiting backend");
    }
    let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("an append whose connection died answers")
        .expect("append task");
    assert!(matches!(outcome, Err(Error::Unavailable(_))), "{outcome:?}");
    peer.batch_execute("ROLLBACK")
        .await
        .expect("release the head");
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        node.append(request("cut", vec![NewEvent::new("T", "kept")])),
    )
    .await
    .expect("the batcher is not wedged")
    .expect("the next append commits on a new connection")
    .result();
    assert_eq!((r.first_version, r.first_position), (0, Position(0)));
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_the_same_group_as_its_original_is_a_duplicate() {
    let schema = TestSchema::new();
    let node = Arc::new(schema.open(Arc::new(SystemClock)).await);
    let (peer, admin) = (session(&schema).await, session(&schema).await);
    let peer_pid = hold_head_lock(&peer).await;
    // The batcher's first group waits on the lock; the original and its
    // retry queue up behind it and form the next group together.
    let first = tokio::spawn({
        let node = node.clone();
        async move {
            node.append(request("other", vec![NewEvent::new("T", "x")]))
                .await
        }
    });
    blocked_by(&admin, peer_pid).await;
    let events = vec![NewEvent::new("T", "a"), NewEvent::new("T", "b")];
    let twins: Vec<_> = (0..2)
        .map(|_| {
            let (node, events) = (node.clone(), events.clone());
            tokio::spawn(async move { node.append(request("twins", events)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    peer.batch_execute("ROLLBACK")
        .await
        .expect("release the head");
    first.await.expect("task").expect("the first group commits");
    let mut outcomes = Vec::new();
    for t in twins {
        outcomes.push(t.await.expect("task").expect("both twins succeed"));
    }
    outcomes.sort_by_key(|o| matches!(o, AppendOutcome::Duplicate(_)));
    let [
        AppendOutcome::Appended(original),
        AppendOutcome::Duplicate(again),
    ] = outcomes[..]
    else {
        panic!("expected one append and one duplicate, got {outcomes:?}");
    };
    assert_eq!(original, again);
    let written = node
        .read_stream(
            &stream("twins"),
            StreamStart::Edge,
            ReadDirection::Forwards,
            10,
        )
        .await
        .expect("stream is readable");
    assert_eq!(written.len(), 2, "the retry wrote nothing");
    node.close().await;
}

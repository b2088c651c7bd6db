// Temporary: phase timing of 5 MiB get/put. Deleted after profiling.
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use wharf::*;

fn rnd(seed: u64) -> Bytes {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(5 << 20);
    while v.len() < 5 << 20 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.into()
}

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let iters: usize = std::env::args().nth(2).map_or(100, |n| n.parse().unwrap());
    let dir = tempfile::tempdir_in("/work/main").unwrap();
    let mut offload = PayloadOffloadConfig {
        enabled: true,
        threshold_bytes: 256 << 10,
        reaper_interval_hours: 0,
        ..Default::default()
    };
    offload.filesystem.base_path = dir.path().join("payloads");
    let config = Config {
        storage: StorageConfig::Embedded {
            path: dir.path().join("db"),
            durability: Durability::Full,
        },
        payload_offload: offload,
        ..Config::default()
    };
    let w = Wharf::open(&config).await.unwrap();
    let stream: StreamName = "s".parse().unwrap();
    let n = 10;
    let mut refs = vec![];
    let mut put = Duration::ZERO;
    for i in 0..n {
        let d = rnd(i + 1);
        let t = Instant::now();
        w.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("x", d)])
            .await
            .unwrap();
        put += t.elapsed();
    }
    println!("engine put {:.2} ms", put.as_secs_f64() * 1e3 / n as f64);
    for v in 0..n {
        let e = w
            .read_stream(&stream, StreamStart::Version(v), ReadDirection::Forwards, 1)
            .await
            .unwrap();
        refs.push(e[0].external.clone().unwrap());
    }
    let store = w.payload_store().unwrap().clone();
    let files: Vec<_> = refs
        .iter()
        .map(|r| r.uri.strip_prefix("file://").unwrap().to_owned())
        .collect();
    let time = |name: &str, d: Duration, k: usize| {
        println!(
            "{name:<28} {:.2} ms  {:.0} MB/s",
            d.as_secs_f64() * 1e3 / k as f64,
            (k * (5 << 20)) as f64 / 1e6 / d.as_secs_f64()
        )
    };
    if mode == "perf-get" {
        for _ in 0..iters {
            for v in 0..n {
                w.read_stream(&stream, StreamStart::Version(v), ReadDirection::Forwards, 1)
                    .await
                    .unwrap();
            }
        }
        return;
    }
    for round in 0..3 {
        println!("-- round {round}");
        let t = Instant::now();
        for f in &files {
            std::hint::black_box(Sha256::digest(std::fs::read(f).unwrap()));
        }
        time("fs::read + sha256", t.elapsed(), n as usize);
        let data: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let t = Instant::now();
        for d in &data {
            std::hint::black_box(Sha256::digest(d));
        }
        time("sha256 of 5 MiB (in RAM)", t.elapsed(), n as usize);
        let t = Instant::now();
        for f in &files {
            std::hint::black_box(std::fs::read(f).unwrap());
        }
        time("fs::read only", t.elapsed(), n as usize);
        let t = Instant::now();
        for r in &refs {
            std::hint::black_box(store.get(r).await.unwrap());
        }
        time("PayloadStore::get", t.elapsed(), n as usize);
        let t = Instant::now();
        for v in 0..n {
            std::hint::black_box(
                w.read_stream(&stream, StreamStart::Version(v), ReadDirection::Forwards, 1)
                    .await
                    .unwrap(),
            );
        }
        time("Wharf::read_stream", t.elapsed(), n as usize);
        let t = Instant::now();
        for i in 0..n {
            std::hint::black_box(
                w.event_log()
                    .read_stream(&stream, StreamStart::Version(i), ReadDirection::Forwards, 1)
                    .await
                    .unwrap(),
            );
        }
        time("event log read (no payload)", t.elapsed(), n as usize);
    }
    for round in 0..3 {
        println!("-- put round {round}");
        let k = 10u64;
        let bufs: Vec<Bytes> = (0..k).map(|i| rnd(1000 * (round + 2) + i)).collect();
        let d = dir.path().join(format!("raw{round}"));
        std::fs::create_dir(&d).unwrap();
        let (mut th, mut tw, mut ts, mut tr) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        for (i, b) in bufs.iter().enumerate() {
            use std::io::Write;
            let t = Instant::now();
            let h = Sha256::digest(b);
            th += t.elapsed();
            let t = Instant::now();
            let p = d.join(format!("t{i}"));
            let mut f = std::fs::File::create_new(&p).unwrap();
            f.write_all(b).unwrap();
            tw += t.elapsed();
            let t = Instant::now();
            f.sync_data().unwrap();
            ts += t.elapsed();
            drop(f);
            let t = Instant::now();
            std::fs::rename(&p, d.join(format!("{:x}.bin", h))).unwrap();
            std::fs::File::open(&d).unwrap().sync_all().unwrap();
            tr += t.elapsed();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / k as f64;
        println!(
            "raw: hash {:.2} ms, write {:.2} ms, fdatasync {:.2} ms, rename+dirfsync {:.2} ms; total {:.2}",
            ms(th),
            ms(tw),
            ms(ts),
            ms(tr),
            ms(th + tw + ts + tr)
        );
        let t = Instant::now();
        for b in &bufs {
            store.put(&b.slice(..)).await.ok();
        }
        println!(
            "PayloadStore::put (dedup hits: already stored? no) {:.2} ms",
            ms(t.elapsed())
        );
        let bufs2: Vec<Bytes> = (0..k).map(|i| rnd(7000 * (round + 2) + i)).collect();
        let t = Instant::now();
        for b in &bufs2 {
            store.put(b).await.unwrap();
        }
        println!("PayloadStore::put fresh {:.2} ms", ms(t.elapsed()));
        let bufs3: Vec<Bytes> = (0..k).map(|i| rnd(9000 * (round + 2) + i)).collect();
        let t = Instant::now();
        for b in bufs3 {
            w.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("x", b)])
                .await
                .unwrap();
        }
        println!("Wharf::append 5 MiB {:.2} ms", ms(t.elapsed()));
        let t = Instant::now();
        for i in 0..k {
            w.append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("x", rnd(i).slice(..1024))],
            )
            .await
            .unwrap();
        }
        println!("Wharf::append 1 KiB inline {:.2} ms", ms(t.elapsed()));
    }
    w.close().await;
}

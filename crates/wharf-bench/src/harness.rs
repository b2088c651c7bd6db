//! The measurement harness shared by every suite.
//!
//! DESIGN.md §10 asks for figures that are *medians of several runs*, reported with the
//! system and durability setting that produced them, so that results from different
//! systems (and from this machine's physical limits) can be compared honestly. This module
//! owns that contract: a suite describes a workload once and the [`Harness`] runs it
//! `runs` times, keeps every individual value (so noise stays visible) and computes the
//! median. It also renders the two output forms (aligned table, one JSON document) and
//! records which machine and filesystem the numbers came from.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use serde::Serialize;
use tokio::runtime::Runtime;

/// Settings every suite receives for one invocation of `wharf-bench`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// How many times each workload is run; the reported figure is the median.
    pub runs: usize,
    /// Shrink workload sizes/durations so a suite finishes fast (smoke runs, CI).
    ///
    /// `--quick` keeps the number of runs: a median of one value hides noise, whereas
    /// smaller workloads only make each value a bit less precise.
    pub quick: bool,
    /// Fresh, empty directory owned by this suite, on the disk being measured. It is
    /// removed after the run, so suites may leave files behind.
    pub dir: PathBuf,
    /// Runs only the workloads whose `system/workload` contains this text (`--only`);
    /// a measurement of several workloads at once (latency percentiles) is matched as
    /// `system/`. `None`: everything.
    pub only: Option<String>,
}

impl BenchConfig {
    /// Chooses a workload parameter: `full` normally, `quick` under `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Whether `--only` selects `workload` on `system`.
    pub fn wants(&self, system: &str, workload: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| format!("{system}/{workload}").contains(only))
    }
}

/// The entry point every suite module exports as `pub fn run`.
///
/// A suite builds a [`Harness`] with its own name, measures its workloads and returns
/// [`Harness::into_results`]. Returning an error aborts the whole invocation: a
/// benchmark that silently drops a row is worse than one that fails loudly.
pub type SuiteFn = fn(&BenchConfig) -> anyhow::Result<Vec<BenchResult>>;

/// One row of output: a workload on a system, the value of every run and their median.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    pub suite: String,
    pub workload: String,
    /// What was measured, e.g. `machine` (raw OS/hardware), `wharf`, `nats-jetstream`.
    pub system: String,
    /// The durability setting the figure was obtained with, e.g. `fdatasync`, `n/a`.
    pub durability: String,
    /// e.g. `ops/s`, `MB/s` (MB = 10^6 bytes), `ms`, `us`, `msg/s`, `events/s`.
    pub unit: String,
    pub median: f64,
    pub runs: Vec<f64>,
    /// What a number alone cannot say, e.g. that the system refused the workload and why
    /// (the figure is then 0). Absent from the JSON when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One value produced by a single run of a workload.
///
/// Most workloads produce exactly one value and use [`Harness::measure`]. Some produce
/// several figures from the same work (p50 and p99 latency of one message stream, or
/// time per object plus throughput); re-running the workload per figure would waste time
/// and measure different samples, so [`Harness::measure_many`] accepts a list of these.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub workload: String,
    pub unit: String,
    pub value: f64,
}

impl Measurement {
    pub fn new(workload: impl Into<String>, unit: impl Into<String>, value: f64) -> Self {
        Self {
            workload: workload.into(),
            unit: unit.into(),
            value,
        }
    }
}

/// Runs the workloads of one suite and collects their results.
pub struct Harness<'a> {
    suite: String,
    config: &'a BenchConfig,
    results: Vec<BenchResult>,
    /// Created on first use so that purely synchronous suites never start threads.
    runtime: OnceCell<Runtime>,
}

impl<'a> Harness<'a> {
    pub fn new(suite: impl Into<String>, config: &'a BenchConfig) -> Self {
        Self {
            suite: suite.into(),
            config,
            results: Vec::new(),
            runtime: OnceCell::new(),
        }
    }

    /// Runs `workload` `runs` times; each call returns one value in `unit`.
    ///
    /// Setup that should not be timed belongs outside the closure (or before the timer
    /// starts inside it); the closure's return value is what gets recorded.
    pub fn measure(
        &mut self,
        workload: &str,
        system: &str,
        durability: &str,
        unit: &str,
        mut run: impl FnMut() -> anyhow::Result<f64>,
    ) -> anyhow::Result<()> {
        if !self.config.wants(system, workload) {
            return Ok(());
        }
        self.measure_many_selected(system, durability, || {
            Ok(vec![Measurement::new(workload, unit, run()?)])
        })
    }

    /// Like [`Harness::measure`], but each run yields several figures (one row each).
    ///
    /// Every run must return the same workloads/units in the same order.
    pub fn measure_many(
        &mut self,
        system: &str,
        durability: &str,
        run: impl FnMut() -> anyhow::Result<Vec<Measurement>>,
    ) -> anyhow::Result<()> {
        if !self.config.wants(system, "") {
            return Ok(());
        }
        self.measure_many_selected(system, durability, run)
    }

    fn measure_many_selected(
        &mut self,
        system: &str,
        durability: &str,
        run: impl FnMut() -> anyhow::Result<Vec<Measurement>>,
    ) -> anyhow::Result<()> {
        let rows = collect_runs(&self.suite, self.config.runs, system, durability, run)?;
        self.push(rows)
    }

    /// Async variant of [`Harness::measure`]: each run's future is driven to completion
    /// on the harness's Tokio runtime (see [`Harness::runtime`]).
    pub fn measure_async<F, Fut>(
        &mut self,
        workload: &str,
        system: &str,
        durability: &str,
        unit: &str,
        mut run: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<f64>>,
    {
        if !self.config.wants(system, workload) {
            return Ok(());
        }
        self.measure_many_async_selected(system, durability, || {
            let fut = run();
            async move { Ok(vec![Measurement::new(workload, unit, fut.await?)]) }
        })
    }

    /// Async variant of [`Harness::measure_many`].
    ///
    /// `family` is what the rows' workload names start with: `--only` selects the runs
    /// when it is part of `system/family`.
    pub fn measure_many_async<F, Fut>(
        &mut self,
        family: &str,
        system: &str,
        durability: &str,
        run: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Vec<Measurement>>>,
    {
        if !self.config.wants(system, family) {
            return Ok(());
        }
        self.measure_many_async_selected(system, durability, run)
    }

    fn measure_many_async_selected<F, Fut>(
        &mut self,
        system: &str,
        durability: &str,
        mut run: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Vec<Measurement>>>,
    {
        let rt = self.runtime()?;
        let rows = collect_runs(&self.suite, self.config.runs, system, durability, || {
            rt.block_on(run())
        })?;
        self.push(rows)
    }

    /// The multi-threaded Tokio runtime the async measurements run on.
    ///
    /// Suites that start servers or clients before measuring should spawn them here
    /// (`h.runtime()?.block_on(...)` / `.spawn(...)`), so that they keep running while
    /// the measured futures execute on the same runtime.
    pub fn runtime(&self) -> anyhow::Result<&Runtime> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the Tokio runtime for async workloads")?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    /// Records a row whose runs were measured by the suite itself.
    ///
    /// For figures that only make sense paired within one run, e.g. a ratio of Wharf to
    /// the raw machine measured back to back, where [`Harness::measure_many`] (one system
    /// per call) cannot pair them. `runs` holds one value per run, in run order.
    pub fn record(
        &mut self,
        workload: &str,
        system: &str,
        durability: &str,
        unit: &str,
        runs: Vec<f64>,
    ) -> anyhow::Result<()> {
        ensure!(
            !runs.is_empty(),
            "suite `{}`: workload `{workload}` on `{system}` has no runs",
            self.suite
        );
        ensure!(
            runs.iter().all(|v| v.is_finite()),
            "suite `{}`: workload `{workload}` on `{system}` has a non-finite value ({runs:?})",
            self.suite
        );
        let median = median(&runs).context("a workload with no runs has no median")?;
        self.push(vec![BenchResult {
            suite: self.suite.clone(),
            workload: workload.to_owned(),
            system: system.to_owned(),
            durability: durability.to_owned(),
            unit: unit.to_owned(),
            median,
            runs,
            note: None,
        }])
    }

    /// Attaches `note` to the row of `workload` on `system` measured earlier.
    pub fn note(&mut self, workload: &str, system: &str, note: &str) -> anyhow::Result<()> {
        if !self.config.wants(system, workload) {
            return Ok(());
        }
        let row = self
            .results
            .iter_mut()
            .find(|r| r.workload == workload && r.system == system)
            .with_context(|| {
                format!("no row of workload `{workload}` on `{system}` to attach a note to")
            })?;
        row.note = Some(note.to_owned());
        Ok(())
    }

    pub fn into_results(self) -> Vec<BenchResult> {
        self.results
    }

    fn push(&mut self, rows: Vec<BenchResult>) -> anyhow::Result<()> {
        for row in rows {
            // Two rows with the same key would be indistinguishable in the output.
            let duplicate = self.results.iter().any(|r| {
                r.workload == row.workload && r.system == row.system && r.unit == row.unit
            });
            ensure!(
                !duplicate,
                "suite `{}` measured workload `{}` on `{}` in `{}` twice",
                self.suite,
                row.workload,
                row.system,
                row.unit
            );
            self.results.push(row);
        }
        Ok(())
    }
}

/// Calls `run` `runs` times and turns the values into one row per produced workload.
fn collect_runs(
    suite: &str,
    runs: usize,
    system: &str,
    durability: &str,
    mut run: impl FnMut() -> anyhow::Result<Vec<Measurement>>,
) -> anyhow::Result<Vec<BenchResult>> {
    ensure!(runs > 0, "the number of runs must be at least 1");
    let mut rows: Vec<BenchResult> = Vec::new();
    for i in 1..=runs {
        let measurements =
            run().with_context(|| format!("suite `{suite}`, system `{system}`, run {i}/{runs}"))?;
        if i == 1 {
            ensure!(
                !measurements.is_empty(),
                "suite `{suite}`: a workload on `{system}` produced no measurements"
            );
            rows = measurements
                .iter()
                .map(|m| BenchResult {
                    suite: suite.to_owned(),
                    workload: m.workload.clone(),
                    system: system.to_owned(),
                    durability: durability.to_owned(),
                    unit: m.unit.clone(),
                    median: f64::NAN,
                    runs: Vec::with_capacity(runs),
                    note: None,
                })
                .collect();
        }
        let same_shape = measurements.len() == rows.len()
            && measurements
                .iter()
                .zip(&rows)
                .all(|(m, r)| m.workload == r.workload && m.unit == r.unit);
        ensure!(
            same_shape,
            "suite `{suite}`: run {i} on `{system}` returned different workloads than run 1"
        );
        for (m, row) in measurements.iter().zip(rows.iter_mut()) {
            // JSON cannot carry NaN/inf, and such a value means the workload is broken.
            ensure!(
                m.value.is_finite(),
                "suite `{suite}`: workload `{}` produced a non-finite value ({})",
                m.workload,
                m.value
            );
            eprintln!(
                "[{suite}] {} ({system}, {durability}) run {i}/{runs}: {} {}",
                m.workload,
                format_value(m.value),
                m.unit
            );
            row.runs.push(m.value);
        }
    }
    for row in &mut rows {
        row.median = median(&row.runs).context("a workload with no runs has no median")?;
    }
    Ok(rows)
}

/// The median: the middle value, or the mean of the two middle values for even counts.
///
/// The median rather than the mean, because one run disturbed by another process (a
/// compile, a page-cache writeback) should not move the reported figure.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Deterministic, incompressible bytes (xorshift64* seeded through splitmix64).
///
/// Workloads need payloads that filesystems, compressors or dedup cannot shortcut, and
/// distinct seeds give distinct buffers (content addressing must not see duplicates).
/// A tiny generator keeps `rand` out of the dependency tree and runs at memory speed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    // splitmix64 of the seed: never zero-adjacent states, even for seeds 0, 1, 2...
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    state = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    state ^= state >> 31;
    if state == 0 {
        state = 0x2545_F491_4F6C_DD1D;
    }
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut out = vec![0u8; len];
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let last = next().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
    out
}

/// The machine the figures were obtained on; without it numbers are not comparable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineInfo {
    /// CPUs this process may use (honours affinity and cgroup quotas).
    pub cores: usize,
    /// Total RAM; `null` if it could not be determined.
    pub memory_bytes: Option<u64>,
    pub cpu_model: String,
    pub kernel: String,
    /// Filesystem type of the measured directory, e.g. `ext4`, `xfs`, `tmpfs`.
    pub data_dir_fs: String,
}

impl MachineInfo {
    /// Best effort: a field that cannot be read becomes `unknown`/`null` rather than
    /// failing the benchmark, since the measurements themselves are still valid.
    pub fn detect(data_dir: &Path) -> Self {
        let unknown = || "unknown".to_owned();
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_bytes(),
            cpu_model: cpu_model().unwrap_or_else(unknown),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| unknown()),
            data_dir_fs: filesystem_of(data_dir).unwrap_or_else(unknown),
        }
    }
}

fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(key, _)| matches!(key.trim(), "model name" | "Model" | "Hardware"))
        .map(|(_, value)| value.trim().to_owned())
}

/// The filesystem type of the mount containing `dir`, from `/proc/self/mountinfo`.
///
/// This is what tells a reader whether fsync figures came from a real disk or tmpfs.
fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <maj:min> <root> <mount point> <options> [tags] - <fstype> ..."
            let (head, tail) = line.split_once(" - ")?;
            let mount_point = unescape_mountinfo(head.split(' ').nth(4)?);
            let fstype = tail.split(' ').next()?;
            Some((PathBuf::from(mount_point), fstype.to_owned()))
        })
        .filter(|(mount_point, _)| dir.starts_with(mount_point))
        // The deepest mount wins; among equals the last one listed is the visible one.
        .max_by_key(|(mount_point, _)| mount_point.components().count())
        .map(|(_, fstype)| fstype)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `--json` document: `{"machine": {...}, "results": [...]}` (DESIGN.md §10).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: MachineInfo,
    pub results: Vec<BenchResult>,
}

impl Report {
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string_pretty(self).context("serialising the benchmark report as JSON")
    }

    /// A human-readable table, columns aligned; numbers right-aligned.
    pub fn to_table(&self) -> String {
        const HEADERS: [&str; 7] = [
            "suite",
            "workload",
            "system",
            "durability",
            "median",
            "unit",
            "runs",
        ];
        let rows: Vec<[String; 7]> = self
            .results
            .iter()
            .map(|r| {
                let runs: Vec<String> = r.runs.iter().map(|v| format_value(*v)).collect();
                [
                    r.suite.clone(),
                    r.workload.clone(),
                    r.system.clone(),
                    r.durability.clone(),
                    format_value(r.median),
                    r.unit.clone(),
                    runs.join(" "),
                ]
            })
            .collect();
        let mut widths = HEADERS.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: [&str; 7]| {
            let mut text = String::new();
            for (col, (cell, width)) in cells.iter().zip(widths).enumerate() {
                if col > 0 {
                    text.push_str("  ");
                }
                if col == 4 {
                    let _ = write!(text, "{cell:>width$}");
                } else {
                    let _ = write!(text, "{cell:<width$}");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(HEADERS);
        line(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
        for row in &rows {
            line(row.each_ref().map(String::as_str));
        }
        let notes: Vec<&BenchResult> = self.results.iter().filter(|r| r.note.is_some()).collect();
        if !notes.is_empty() {
            out.push_str("\nnotes:\n");
            for r in notes {
                let note = r.note.as_deref().unwrap_or_default();
                let _ = writeln!(out, "  {} {} ({}): {note}", r.suite, r.workload, r.system);
            }
        }
        out
    }
}

/// Enough digits to compare figures across runs, without implying false precision.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, runs: Vec<f64>) -> BenchResult {
        BenchResult {
            suite: "physical".into(),
            workload: workload.into(),
            system: "machine".into(),
            durability: "fdatasync".into(),
            unit: "ops/s".into(),
            median: median(&runs).unwrap(),
            runs,
            note: None,
        }
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            cores: 2,
            memory_bytes: Some(8 << 30),
            cpu_model: "Test CPU".into(),
            kernel: "6.1.0".into(),
            data_dir_fs: "ext4".into(),
        }
    }

    #[test]
    fn median_of_odd_count_is_middle_value() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 10.0, 2.0]), Some(3.0));
    }

    #[test]
    fn median_of_single_value_and_of_nothing() {
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn json_document_has_machine_and_results() {
        let report = Report {
            machine: machine(),
            results: vec![row("append_fsync_4k", vec![100.0, 300.0, 200.0])],
        };
        let doc: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        let top: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(top, ["machine", "results"]);
        let m = &doc["machine"];
        assert_eq!(m["cores"], 2);
        assert_eq!(m["memory_bytes"], 8u64 << 30);
        for key in ["cpu_model", "kernel", "data_dir_fs"] {
            assert!(m[key].is_string(), "machine.{key} should be a string");
        }
        let r = &doc["results"][0];
        assert_eq!(r["suite"], "physical");
        assert_eq!(r["workload"], "append_fsync_4k");
        assert_eq!(r["system"], "machine");
        assert_eq!(r["durability"], "fdatasync");
        assert_eq!(r["unit"], "ops/s");
        assert_eq!(r["median"], 200.0);
        assert_eq!(r["runs"], serde_json::json!([100.0, 300.0, 200.0]));
    }

    #[test]
    fn only_runs_the_selected_workloads() {
        let config = BenchConfig {
            runs: 1,
            quick: true,
            dir: PathBuf::from("."),
            only: Some("wharf/dequeue".to_owned()),
        };
        let mut h = Harness::new("test", &config);
        for (system, workload) in [
            ("wharf", "dequeue_ack"),
            ("wharf", "enqueue"),
            ("redis", "dequeue_ack"),
        ] {
            h.measure_async(workload, system, "n/a", "msg/s", || async { Ok(1.0) })
                .unwrap();
        }
        h.measure_many("wharf", "n/a", || {
            Ok(vec![Measurement::new("p50", "us", 1.0)])
        })
        .unwrap();
        for family in ["dequeue_depth", "latency"] {
            h.measure_many_async(family, "wharf", "n/a", || async move {
                Ok(vec![Measurement::new(format!("{family}_p50"), "us", 1.0)])
            })
            .unwrap();
        }
        h.note("enqueue", "wharf", "skipped rows take no notes")
            .unwrap();
        let ran: Vec<(String, String)> = h
            .into_results()
            .into_iter()
            .map(|r| (r.system, r.workload))
            .collect();
        assert_eq!(
            ran,
            [
                ("wharf".to_owned(), "dequeue_ack".to_owned()),
                ("wharf".to_owned(), "dequeue_depth_p50".to_owned()),
            ]
        );
    }

    #[test]
    fn harness_records_every_run_and_the_median() {
        let config = BenchConfig {
            runs: 3,
            quick: true,
            dir: PathBuf::from("."),
            only: None,
        };
        let mut h = Harness::new("test", &config);
        let mut next = [30.0, 10.0, 20.0].into_iter();
        h.measure("w", "machine", "n/a", "ops/s", || {
            next.next().context("ran too often")
        })
        .unwrap();
        h.measure_async("w_async", "machine", "n/a", "us", || async { Ok(1.5) })
            .unwrap();
        let results = h.into_results();
        assert_eq!(results[0].runs, [30.0, 10.0, 20.0]);
        assert_eq!(results[0].median, 20.0);
        assert_eq!(results[1].workload, "w_async");
        assert_eq!(results[1].median, 1.5);
    }

    #[test]
    fn harness_rejects_non_finite_values_and_duplicate_rows() {
        let config = BenchConfig {
            runs: 1,
            quick: true,
            dir: PathBuf::from("."),
            only: None,
        };
        let mut h = Harness::new("test", &config);
        assert!(h.measure("nan", "m", "n/a", "x", || Ok(f64::NAN)).is_err());
        h.measure("w", "m", "n/a", "x", || Ok(1.0)).unwrap();
        assert!(h.measure("w", "m", "n/a", "x", || Ok(1.0)).is_err());
    }

    #[test]
    fn table_has_header_and_aligned_rows() {
        let report = Report {
            machine: machine(),
            results: vec![
                row("append_fsync_4k", vec![1.0, 2.0, 3.0]),
                row("seq", vec![1234.0, 2345.0, 3456.0]),
            ],
        };
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("suite"));
        let unit_col = lines[0].find("unit").unwrap();
        assert_eq!(lines[2].find("ops/s"), Some(unit_col));
        assert_eq!(lines[3].find("ops/s"), Some(unit_col));
        assert!(lines[3].ends_with("1234 2345 3456"));
    }

    #[test]
    fn recorded_rows_get_their_median_and_notes_show_in_table_and_json() {
        let config = BenchConfig {
            runs: 3,
            quick: true,
            dir: PathBuf::from("."),
            only: None,
        };
        let mut h = Harness::new("test", &config);
        h.record("ratio", "wharf", "n/a", "%", vec![90.0, 70.0, 80.0])
            .unwrap();
        h.record("refused", "peer", "n/a", "MB/s", vec![0.0; 3])
            .unwrap();
        h.note("refused", "peer", "refused: too large").unwrap();
        assert!(h.note("missing", "peer", "x").is_err());
        assert!(h.record("nan", "m", "n/a", "x", vec![f64::NAN]).is_err());
        assert!(h.record("empty", "m", "n/a", "x", Vec::new()).is_err());
        let results = h.into_results();
        assert_eq!(results[0].median, 80.0);
        assert_eq!(results[0].note, None);

        let report = Report {
            machine: machine(),
            results,
        };
        let table = report.to_table();
        assert!(
            table.ends_with("\nnotes:\n  test refused (peer): refused: too large\n"),
            "{table}"
        );
        let doc: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert!(doc["results"][0].get("note").is_none());
        assert_eq!(doc["results"][1]["note"], "refused: too large");
    }

    #[test]
    fn random_bytes_are_deterministic_and_distinct_per_seed() {
        assert_eq!(random_bytes(1, 1001), random_bytes(1, 1001));
        assert_ne!(random_bytes(1, 64), random_bytes(2, 64));
        assert_eq!(random_bytes(3, 13).len(), 13);
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}

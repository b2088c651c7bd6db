//! `wharf-bench`: the benchmark harness of DESIGN.md §10.
//!
//! `wharf-bench <suite>... [--quick] [--runs N] [--json] [--dir PATH]`
//!
//! This file only parses arguments and dispatches to suite modules; measuring and
//! reporting live in [`harness`]. Results go to stdout (a table, or one JSON document
//! with `--json`); progress goes to stderr so that stdout stays machine-readable.

/// glibc's allocator spends a sixth of the embedded writer's time in
/// `malloc`/`free` of message-sized blocks; mimalloc drains queues ~20% faster
/// (docs/decisions.md, "The binaries use mimalloc"). Set here, in the
/// binary, so that applications embedding the library keep their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod harness;
mod payload;
mod physical;
mod postgres;
mod queue;
mod stream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::harness::{BenchConfig, MachineInfo, Report, SuiteFn};

/// Every suite DESIGN.md names, in the order `all` runs them.
///
/// `None` marks a suite that is not written yet: asking for it is an error, never an
/// empty or made-up result. To add a suite, create `src/<name>.rs` exporting
/// `pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>>`, declare the
/// module above and put `Some(<name>::run)` here.
const SUITES: &[(&str, Option<SuiteFn>)] = &[
    ("physical", Some(physical::run)),
    ("stream", Some(stream::run)),
    ("queue", Some(queue::run)),
    ("payload", Some(payload::run)),
    ("processor", None),
    ("postgres", Some(postgres::run)),
];

/// Exit status for usage errors (clap uses the same for bad arguments).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "wharf-bench",
    version,
    about = "Wharf benchmark harness (DESIGN.md §10)"
)]
struct Cli {
    /// Suites to run, in order; `all` runs every implemented suite.
    #[arg(
        required = true,
        value_parser = clap::builder::PossibleValuesParser::new(
            SUITES.iter().map(|(name, _)| *name).chain(["all"])
        ),
    )]
    suites: Vec<String>,

    /// Smaller workloads, for a fast smoke run (the number of runs is unchanged).
    #[arg(long)]
    quick: bool,

    /// Runs per workload; the reported figure is their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,

    /// Run only the workloads whose `system/workload` contains this text, e.g.
    /// `wharf-postgres/dequeue` (for profiling one workload); measurements of several
    /// figures at once are matched by what their names start with, e.g.
    /// `wharf/latency_2000` for the latency percentiles.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,

    /// Print one JSON document `{"machine": {...}, "results": [...]}` instead of a table.
    #[arg(long)]
    json: bool,

    /// Directory on the disk to measure; a scratch directory is created inside it and
    /// removed afterwards. Defaults to the current directory (not /tmp, often tmpfs).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let suites = match select_suites(&cli.suites) {
        Ok(suites) => suites,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&cli, &suites) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves the requested names to suite functions, before anything runs, so that a
/// typo or an unwritten suite fails immediately rather than after minutes of measuring.
fn select_suites(requested: &[String]) -> Result<Vec<(&'static str, SuiteFn)>, String> {
    let mut selected: Vec<(&'static str, SuiteFn)> = Vec::new();
    for name in requested {
        if name == "all" {
            let missing: Vec<&str> = SUITES
                .iter()
                .filter(|(_, suite)| suite.is_none())
                .map(|(name, _)| *name)
                .collect();
            if !missing.is_empty() {
                eprintln!(
                    "note: `all` skips suites not implemented yet: {}",
                    missing.join(", ")
                );
            }
            for (name, suite) in SUITES {
                if let Some(suite) = suite {
                    add(&mut selected, name, *suite);
                }
            }
            continue;
        }
        match SUITES.iter().find(|(known, _)| known == name) {
            Some((name, Some(suite))) => add(&mut selected, name, *suite),
            Some((name, None)) => return Err(format!("suite `{name}` is not implemented yet")),
            None => return Err(format!("unknown suite `{name}`")),
        }
    }
    Ok(selected)
}

fn add(selected: &mut Vec<(&'static str, SuiteFn)>, name: &'static str, suite: SuiteFn) {
    if !selected.iter().any(|(chosen, _)| *chosen == name) {
        selected.push((name, suite));
    }
}

fn run(cli: &Cli, suites: &[(&'static str, SuiteFn)]) -> anyhow::Result<()> {
    let base = match &cli.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    std::fs::create_dir_all(&base)
        .with_context(|| format!("creating benchmark directory {}", base.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".wharf-bench-tmp-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a scratch directory in {}", base.display()))?;

    let machine = MachineInfo::detect(scratch.path());
    eprintln!(
        "wharf-bench: measuring in {} ({}), {} cores, runs={}{}",
        scratch.path().display(),
        machine.data_dir_fs,
        machine.cores,
        cli.runs,
        if cli.quick { ", quick" } else { "" }
    );

    let mut results = Vec::new();
    for (name, suite) in suites {
        let config = BenchConfig {
            runs: cli.runs as usize,
            quick: cli.quick,
            only: cli.only.clone(),
            dir: suite_dir(scratch.path(), name)?,
        };
        results.extend(suite(&config).with_context(|| format!("suite `{name}` failed"))?);
    }
    let scratch_path = scratch.path().to_path_buf();
    scratch
        .close()
        .with_context(|| format!("removing scratch directory {}", scratch_path.display()))?;

    let report = Report { machine, results };
    if cli.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// Each suite gets its own empty directory so suites cannot trip over each other's files.
fn suite_dir(scratch: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = scratch.join(name);
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

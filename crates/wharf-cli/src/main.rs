//! `wharf`: the server and the command-line tool to talk to it.
//!
//! Each verb lives in its own module; this file only parses the command line,
//! runs the verb and turns its outcome into an exit code (see [`exit`]).

/// glibc's allocator spends a sixth of the embedded writer's time in
/// `malloc`/`free` of message-sized blocks; mimalloc drains queues ~20% faster
/// (docs/decisions.md, "The binaries use mimalloc"). Set here, in the
/// binary, so that applications embedding the library keep their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod connect;
mod exit;
mod input;
mod output;
mod payload_store;
mod queue;
mod serve;
mod signals;
mod stream;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::output::Format;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return exit::report(Err(anyhow::Error::new(e).context("cannot start tokio"))),
    };
    exit::report(runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args, Format::from_json_flag(cli.global.json)).await,
        Command::Stream(command) => stream::run(command, &cli.global).await,
        Command::Queue(command) => queue::run(command, &cli.global).await,
        Command::PayloadStore(command) => payload_store::run(command, &cli.global).await,
    }
}

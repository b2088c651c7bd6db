//! What the CLI's end-to-end tests share: the `wharf` binary run as a real
//! process, and a `wharf serve` child on port 0 in a fresh data directory
//! whose address is learnt from the server's "serving" line. Every wait is
//! bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a server may take to start or stop, and a tail to deliver.
pub const SERVER_DEADLINE: Duration = Duration::from_secs(10);
/// How long one short CLI command may take before the test fails.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// A URL where nothing listens: port 1 is never bound on a test machine.
pub const NOWHERE: &str = "http://127.0.0.1:1";

/// The binary, with no `WHARF_*` or `RUST_LOG` inherited from the developer's
/// shell, so only what a test sets applies.
pub fn wharf() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("WHARF_") || text == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// Kills the child when dropped, so a failing test leaves no process behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Sends `signal` to the child.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: signalling a child process we own and have not yet reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({signal}) failed");
    }

    /// Waits for the child to exit, at most `deadline`.
    pub fn wait_for(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the child with SIGKILL and reaps it, failing the test if either
    /// fails.
    pub fn kill(mut self) {
        self.0.kill().expect("SIGKILL the server");
        self.0.wait().expect("reap the server");
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts success and returns stdout parsed as exactly one JSON document.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self.document()
    }

    /// Stdout parsed as exactly one JSON document, whatever the exit code.
    pub fn document(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }

    /// Asserts success and returns stdout's lines.
    pub fn lines(&self) -> Vec<&str> {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self.stdout.lines().collect()
    }

    /// Asserts exit `code` and one `error:` line on stderr containing every
    /// one of `parts`.
    pub fn assert_error_line(&self, code: i32, parts: &[&str]) {
        assert_eq!(self.code, Some(code), "{self:#?}");
        let lines: Vec<_> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not one line: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        for part in parts {
            assert!(lines[0].contains(part), "no `{part}` in stderr: {self:#?}");
        }
    }

    /// As [`Output::assert_error_line`], with nothing on stdout.
    pub fn assert_error(&self, code: i32, parts: &[&str]) {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        self.assert_error_line(code, parts);
    }
}

/// Reads `source` to its end on a thread.
pub fn collect(mut source: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Starts `cmd` with `stdin` written and closed, stdout and stderr collected.
pub fn spawn(
    mut cmd: Command,
    stdin: Option<&[u8]>,
) -> (
    ChildGuard,
    thread::JoinHandle<String>,
    thread::JoinHandle<String>,
) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("spawn wharf"));
    if let Some(input) = stdin {
        let mut pipe = child.0.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("write stdin");
    }
    let stdout = collect(child.0.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.0.stderr.take().expect("stderr is piped"));
    (child, stdout, stderr)
}

/// Waits for a command started by [`spawn`], failing the test past
/// [`COMMAND_DEADLINE`].
pub fn finish(
    child: ChildGuard,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
) -> Output {
    finish_named("command", child, stdout, stderr)
}

/// As [`finish`], naming the command `what` if it does not finish.
fn finish_named(
    what: &str,
    mut child: ChildGuard,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
) -> Output {
    let Some(status) = child.wait_for(COMMAND_DEADLINE) else {
        drop(child);
        panic!(
            "{what} did not finish within {COMMAND_DEADLINE:?}; stderr: {}",
            stderr.join().unwrap_or_default()
        );
    };
    Output {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs `cmd` to completion with `stdin`, failing the test past
/// [`COMMAND_DEADLINE`].
pub fn run(cmd: Command, stdin: Option<&[u8]>) -> Output {
    let what = format!("{cmd:?}");
    let (child, stdout, stderr) = spawn(cmd, stdin);
    finish_named(&what, child, stdout, stderr)
}

/// Runs the binary with `args` and no server.
pub fn wharf_offline(args: &[&str]) -> Output {
    let mut cmd = wharf();
    cmd.args(["--server", NOWHERE]).args(args);
    run(cmd, None)
}

/// Sends every line of `source` to the returned channel, on a thread.
pub fn line_channel(source: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A `wharf serve` child process with its own data directory.
pub struct Server {
    pub child: ChildGuard,
    pub grpc: SocketAddr,
    /// The HTTP admin API.
    pub http: SocketAddr,
    pub data: PathBuf,
    pub logs: Arc<Mutex<String>>,
    pub _dir: Option<TempDir>,
}

/// Payloads over this are offloaded by [`Server::start_offloading`].
pub const THRESHOLD: usize = 64 * 1024;

impl Server {
    /// A server on a fresh data directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(&dir.path().join("data"));
        server._dir = Some(dir);
        server
    }

    /// A server on a fresh data directory that offloads payloads over
    /// [`THRESHOLD`] to a filesystem store in [`Server::payload_dir`],
    /// configured through `WHARF_PAYLOAD_OFFLOAD__…` variables.
    pub fn start_offloading() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let payloads = dir.path().join("payloads");
        let threshold = THRESHOLD.to_string();
        let env = [
            ("WHARF_PAYLOAD_OFFLOAD__ENABLED", "true"),
            ("WHARF_PAYLOAD_OFFLOAD__THRESHOLD_BYTES", threshold.as_str()),
            ("WHARF_PAYLOAD_OFFLOAD__STORE_TYPE", "filesystem"),
            (
                "WHARF_PAYLOAD_OFFLOAD__FILESYSTEM__BASE_PATH",
                payloads.to_str().expect("a UTF-8 temporary path"),
            ),
            ("WHARF_PAYLOAD_OFFLOAD__REAPER_INTERVAL_HOURS", "0"),
        ];
        let mut server = Self::start_with(&dir.path().join("data"), &env);
        server._dir = Some(dir);
        server
    }

    /// Where [`Server::start_offloading`] keeps payload objects.
    pub fn payload_dir(&self) -> PathBuf {
        self.data
            .parent()
            .expect("data has a parent")
            .join("payloads")
    }

    /// The payload object files, by name.
    pub fn payload_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.payload_dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".bin"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A server on `data`; panics unless it is serving within
    /// [`SERVER_DEADLINE`].
    pub fn start_in(data: &Path) -> Self {
        Self::start_with(data, &[])
    }

    /// A server on `data` with the environment variables `env` set.
    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = serve_command(data);
        command.envs(env.iter().copied());
        Self::spawn_serving(command, data)
    }

    /// A server on the PostgreSQL `url` and `schema`, with the environment
    /// variables `env` set; run from a fresh temporary directory.
    pub fn start_postgres(url: &str, schema: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = postgres_serve_command(url, schema);
        command.current_dir(dir.path()).envs(env.iter().copied());
        let mut server = Self::spawn_serving(command, &dir.path().join("unused"));
        server._dir = Some(dir);
        server
    }

    /// Spawns `command` (a `wharf serve`) and waits for its serving line.
    pub fn spawn_serving(mut command: Command, data: &Path) -> Self {
        let mut child = ChildGuard(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn wharf serve"),
        );
        let logs = Arc::new(Mutex::new(String::new()));
        let lines = line_channel(child.0.stderr.take().expect("stderr is piped"));
        let deadline = Instant::now() + SERVER_DEADLINE;
        let (grpc, http) = loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    push_log(&logs, &line);
                    if let Some(rest) = line.strip_prefix("wharf serving gRPC on ") {
                        let (grpc, rest) = rest.split_once(',').unwrap_or_default();
                        let http = rest
                            .strip_prefix(" HTTP admin on ")
                            .and_then(|r| r.split(' ').next())
                            .unwrap_or_default();
                        break (
                            grpc.parse::<SocketAddr>()
                                .expect("gRPC address in serving line"),
                            http.parse::<SocketAddr>()
                                .expect("HTTP address in serving line"),
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "server not serving within {SERVER_DEADLINE:?}: {}",
                        read_log(&logs)
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait_for(SERVER_DEADLINE);
                    panic!("server exited ({status:?}): {}", read_log(&logs))
                }
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let sink = logs.clone();
        thread::spawn(move || {
            while let Ok(line) = lines.recv() {
                push_log(&sink, &line);
            }
        });
        wait_until_accepting(grpc);
        Self {
            child,
            grpc,
            http,
            data: data.to_owned(),
            logs,
            _dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `wharf` with `--server` pointing here.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = wharf();
        cmd.args(["--server", &self.url()]).args(args);
        cmd
    }

    /// Runs `wharf args…` against this server.
    pub fn wharf(&self, args: &[&str]) -> Output {
        run(self.command(args), None)
    }

    /// Runs `wharf args…` against this server with `stdin`.
    pub fn wharf_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(self.command(args), Some(stdin))
    }

    /// Runs `wharf --json args…` and returns its one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.wharf(&all).json()
    }

    /// Sends SIGTERM and returns how the server exited, within
    /// [`SERVER_DEADLINE`].
    pub fn terminate(mut self) -> ExitStatus {
        self.child.signal(libc::SIGTERM);
        self.child.wait_for(SERVER_DEADLINE).unwrap_or_else(|| {
            panic!(
                "server still running {SERVER_DEADLINE:?} after SIGTERM: {}",
                read_log(&self.logs)
            )
        })
    }
}

/// `wharf serve` on port 0 over PostgreSQL at `url` in `schema`.
pub fn postgres_serve_command(url: &str, schema: &str) -> Command {
    let mut cmd = wharf();
    cmd.arg("serve")
        .env("WHARF_SERVER__GRPC_LISTEN", "127.0.0.1:0")
        .env("WHARF_SERVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("WHARF_STORAGE__TYPE", "postgres")
        .env("WHARF_STORAGE__URL", url)
        .env("WHARF_STORAGE__SCHEMA", schema)
        .env("WHARF_STORAGE__POOL_SIZE", "8")
        .env("RUST_LOG", "warn");
    cmd
}

/// `wharf serve` on port 0 with the data in `data`, run from its parent
/// directory so nothing lands in the working tree.
pub fn serve_command(data: &Path) -> Command {
    let mut cmd = wharf();
    cmd.arg("serve")
        .env("WHARF_SERVER__GRPC_LISTEN", "127.0.0.1:0")
        .env("WHARF_SERVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("WHARF_STORAGE__PATH", data)
        .current_dir(data.parent().expect("data has a parent"));
    cmd
}

fn push_log(logs: &Mutex<String>, line: &str) {
    let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
    logs.push_str(line);
    logs.push('\n');
}

fn read_log(logs: &Mutex<String>) -> String {
    logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Polls `addr` every 50 ms until it accepts a connection, at most
/// [`SERVER_DEADLINE`].
pub fn wait_until_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + SERVER_DEADLINE;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} not accepting connections"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The words of a command line without quoting, e.g. `w("stream read s")`.
pub fn w(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

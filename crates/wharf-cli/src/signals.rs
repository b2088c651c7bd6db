//! Stop signals for `serve` and `tail`.

/// The signals that ask a long-running command to stop: SIGTERM (service
/// managers, `kill`) and SIGINT (Ctrl-C).
///
/// Handlers are installed when this is created, not when it is first
/// awaited, so a signal that arrives while the command is busy is kept
/// rather than killing the process.
#[cfg(unix)]
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// When the runtime cannot register a handler.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal and names it.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Ctrl-C only, where there are no Unix signals.
#[cfg(not(unix))]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// When the runtime cannot register a handler.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self)
    }

    /// Waits for Ctrl-C.
    pub async fn next(&mut self) -> &'static str {
        // Without a handler there is nothing to wait for; never resolve.
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}

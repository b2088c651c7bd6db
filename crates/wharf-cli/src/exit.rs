//! Errors → exit codes and the one line on stderr.
//!
//! Scripts branch on the exit code (DESIGN.md §7), so the mapping from an
//! error's meaning to a code lives here and nowhere else:
//! 0 success · 1 error · 2 usage · 3 not found · 4 conflict · 5 unavailable.

use std::fmt;
use std::process::ExitCode;

use clap::error::ErrorKind;

/// Success.
pub const OK: u8 = 0;
/// Any failure without a more specific code.
pub const ERROR: u8 = 1;
/// The command was invoked wrongly.
pub const USAGE: u8 = 2;
/// What was asked for does not exist.
pub const NOT_FOUND: u8 = 3;
/// A conflict: wrong expected version, event id used elsewhere, lease lost,
/// queue exists with other settings.
pub const CONFLICT: u8 = 4;
/// The server cannot be reached or cannot serve now; retrying may succeed.
pub const UNAVAILABLE: u8 = 5;

/// A mistake in the invocation that clap cannot see, such as no payload
/// given; exits 2 like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Some items of a batch failed while the others succeeded, such as an
/// acknowledge of several receipts of which one lost its lease.
///
/// Its code is [`CONFLICT`] when any item's failure is a conflict (a lost
/// lease is the usual, expected one), else the code of the first failure.
#[derive(Debug)]
pub struct PartialFailure {
    /// What failed, e.g. `1 of 3 receipts not acknowledged`.
    pub summary: String,
    /// Each failed item, as the user gave it, with its error.
    pub failures: Vec<(String, wharf_core::Error)>,
}

/// How many failed items the error line names; `--json` lists them all.
const NAMED_FAILURES: usize = 10;

impl fmt::Display for PartialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)?;
        for (i, (item, error)) in self.failures.iter().take(NAMED_FAILURES).enumerate() {
            let separator = if i == 0 { ": " } else { "; " };
            write!(f, "{separator}{item}: {error}")?;
        }
        if let Some(more) = self.failures.len().checked_sub(NAMED_FAILURES)
            && more > 0
        {
            write!(f, "; and {more} more")?;
        }
        Ok(())
    }
}

impl std::error::Error for PartialFailure {}

impl PartialFailure {
    fn code(&self) -> u8 {
        let codes = self.failures.iter().map(|(_, e)| domain_code(e));
        codes
            .clone()
            .find(|&c| c == CONFLICT)
            .or_else(|| codes.clone().next())
            .unwrap_or(ERROR)
    }
}

/// Stdout was closed by its reader (`wharf stream tail | head -1`): the
/// reader has what it wanted, so this ends the command quietly with 0.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The exit code an error stands for.
///
/// Only the error itself and its context wrappers are looked at, not its
/// sources: `serve` fails with start errors whose sources may be domain
/// errors, yet a server that cannot start is a plain error (1).
pub fn code_of(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<StdoutClosed>().is_some() {
        return OK;
    }
    if error.downcast_ref::<UsageError>().is_some() {
        return USAGE;
    }
    if let Some(partial) = error.downcast_ref::<PartialFailure>() {
        return partial.code();
    }
    error
        .downcast_ref::<wharf_core::Error>()
        .map_or(ERROR, domain_code)
}

/// The exit code of a domain error's meaning. A payload that could not be
/// retrieved is not found (3) when its object is missing, unavailable (5)
/// when the store timed out or failed, and an error (1) when its bytes are
/// corrupt or access was denied: retrying does not help those.
fn domain_code(error: &wharf_core::Error) -> u8 {
    use wharf_core::{Error, PayloadFailure};
    match error {
        Error::StreamNotFound(_) | Error::QueueNotFound(_) => NOT_FOUND,
        Error::WrongExpectedVersion { .. }
        | Error::EventIdConflict { .. }
        | Error::QueueExists { .. }
        | Error::LeaseLost { .. } => CONFLICT,
        Error::Unavailable(_) => UNAVAILABLE,
        Error::PayloadRetrievalFailed { failure, .. } => match failure {
            PayloadFailure::NotFound => NOT_FOUND,
            PayloadFailure::Timeout | PayloadFailure::Unavailable => UNAVAILABLE,
            PayloadFailure::IntegrityFailed | PayloadFailure::AccessDenied => ERROR,
        },
        _ => ERROR,
    }
}

/// Ends the process for `result`: prints the error as one line on stderr and
/// returns its code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::from(OK);
    };
    let code = code_of(&error);
    if code != OK {
        eprintln!("error: {}", message(&error));
    }
    ExitCode::from(code)
}

/// Ends the process for a command line clap rejected.
///
/// Help and version requests print as clap does. Usage errors become one
/// line, like every other error, with clap's usage block and tips dropped:
/// the first paragraph already names what was wrong.
pub fn clap_error(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing help can fail only when stdout is closed; nothing to say then.
            let _ = error.print();
            ExitCode::from(if error.use_stderr() { USAGE } else { OK })
        }
        _ => {
            let text = error.to_string();
            let first = text.split("\n\n").next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {} (see --help)", one_line(first));
            ExitCode::from(USAGE)
        }
    }
}

/// The error and its causes, joined by `: `. A cause whose text its wrapper
/// already shows (a context that quotes the error it wraps) is left out
/// rather than said twice.
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    one_line(&text)
}

/// Joins the lines of `text` with single spaces, so an error is one line
/// whatever the message it wraps.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use wharf_core::{Error, StreamName};

    use super::*;

    fn stream() -> StreamName {
        StreamName::new("s").unwrap()
    }

    #[test]
    fn domain_errors_map_to_their_documented_codes() {
        let code = |e: Error| code_of(&anyhow::Error::new(e));
        assert_eq!(code(Error::StreamNotFound(stream())), NOT_FOUND);
        assert_eq!(
            code(Error::WrongExpectedVersion {
                stream: stream(),
                expected: "3".into(),
                actual: Some(7)
            }),
            CONFLICT
        );
        assert_eq!(
            code(Error::EventIdConflict {
                id: uuid::Uuid::nil()
            }),
            CONFLICT
        );
        assert_eq!(code(Error::Unavailable("down".into())), UNAVAILABLE);
        assert_eq!(code(Error::InvalidArgument("x".into())), ERROR);
        assert_eq!(code(Error::Storage("x".into())), ERROR);
    }

    #[test]
    fn queue_errors_map_to_their_documented_codes() {
        let code = |e: Error| code_of(&anyhow::Error::new(e));
        let queue: wharf_core::QueueName = "q".parse().unwrap();
        assert_eq!(code(Error::QueueNotFound(queue.clone())), NOT_FOUND);
        assert_eq!(
            code(Error::QueueExists {
                queue: queue.clone()
            }),
            CONFLICT
        );
        assert_eq!(code(lease_lost(&queue)), CONFLICT);
    }

    fn lease_lost(queue: &wharf_core::QueueName) -> Error {
        Error::LeaseLost {
            queue: queue.clone(),
            message_id: uuid::Uuid::nil(),
            reason: "delivered again".into(),
        }
    }

    #[test]
    fn payload_retrieval_failures_map_by_their_kind() {
        use wharf_core::{PayloadFailure, PayloadRetrievalFailedDetails};
        let details = PayloadRetrievalFailedDetails {
            storage_type: wharf_core::PayloadStorageType::S3,
            uri: "s3://b/x.bin".into(),
            content_hash: wharf_core::ContentHash([1; 32]),
            original_size: 9,
            error: "boom".into(),
        };
        let code = |f| {
            code_of(&anyhow::Error::new(Error::payload_retrieval(
                f,
                details.clone(),
            )))
        };
        assert_eq!(code(PayloadFailure::NotFound), NOT_FOUND);
        assert_eq!(code(PayloadFailure::Timeout), UNAVAILABLE);
        assert_eq!(code(PayloadFailure::Unavailable), UNAVAILABLE);
        assert_eq!(code(PayloadFailure::IntegrityFailed), ERROR);
        assert_eq!(code(PayloadFailure::AccessDenied), ERROR);
    }

    #[test]
    fn partial_failure_is_a_conflict_when_any_lease_was_lost() {
        let queue: wharf_core::QueueName = "q".parse().unwrap();
        let partial = |failures: Vec<Error>| PartialFailure {
            summary: "some failed".into(),
            failures: failures
                .into_iter()
                .enumerate()
                .map(|(i, e)| (format!("r{i}"), e))
                .collect(),
        };
        let code = |p: PartialFailure| code_of(&p.into());
        assert_eq!(code(partial(vec![lease_lost(&queue)])), CONFLICT);
        assert_eq!(
            code(partial(vec![
                Error::InvalidArgument("malformed receipt".into()),
                lease_lost(&queue)
            ])),
            CONFLICT
        );
        assert_eq!(
            code(partial(vec![Error::InvalidArgument("malformed".into())])),
            ERROR
        );
        assert_eq!(
            code(partial(vec![Error::Unavailable("down".into())])),
            UNAVAILABLE
        );
    }

    #[test]
    fn partial_failure_names_every_failed_item_on_one_line() {
        let queue: wharf_core::QueueName = "q".parse().unwrap();
        let e = PartialFailure {
            summary: "2 of 3 receipts not acknowledged".into(),
            failures: vec![
                ("r1".into(), lease_lost(&queue)),
                (
                    "r2".into(),
                    Error::InvalidArgument("malformed receipt".into()),
                ),
            ],
        };
        assert_eq!(
            message(&e.into()),
            "2 of 3 receipts not acknowledged: r1: lease lost on message \
             00000000-0000-0000-0000-000000000000 of queue `q`: delivered again; \
             r2: malformed receipt"
        );
    }

    #[test]
    fn partial_failure_names_at_most_ten_items() {
        let e = PartialFailure {
            summary: "12 of 12 receipts not acknowledged".into(),
            failures: (0..12)
                .map(|i| (format!("r{i}"), Error::InvalidArgument("bad".into())))
                .collect(),
        };
        let text = e.to_string();
        assert!(text.contains("r9: bad; and 2 more"), "{text}");
        assert!(!text.contains("r10"), "{text}");
    }

    #[test]
    fn context_does_not_hide_the_meaning() {
        let e = Err::<(), _>(Error::StreamNotFound(stream()))
            .context("reading")
            .unwrap_err();
        assert_eq!(code_of(&e), NOT_FOUND);
    }

    #[test]
    fn usage_errors_exit_2_and_closed_stdout_exits_0() {
        assert_eq!(code_of(&UsageError("no data".into()).into()), USAGE);
        assert_eq!(code_of(&StdoutClosed.into()), OK);
        assert_eq!(code_of(&anyhow::anyhow!("other")), ERROR);
    }

    #[test]
    fn causes_are_joined_without_repeating_themselves() {
        let e = anyhow::Error::new(Error::invalid_stream_name(wharf_core::NameError::Empty));
        assert_eq!(message(&e), "invalid stream name: name must not be empty");
        let e = anyhow::Error::new(Error::StreamNotFound(stream())).context("reading");
        assert_eq!(message(&e), "reading: stream `s` not found");
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(one_line("a:\n  b\n\nc "), "a: b c");
    }
}

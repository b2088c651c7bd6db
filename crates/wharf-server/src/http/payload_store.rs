//! `/admin/payload-store/…`: the payload store's statistics and a manual
//! cleanup, the HTTP side of `wharf payload-store stats|cleanup`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use wharf::{CleanupReport, PayloadStore};
use wharf_proto::status::{DOMAIN, payload_offload_disabled, reason};

use super::{AdminState, ApiError};

/// `GET /admin/payload-store/stats`.
#[derive(Debug, Serialize)]
pub(super) struct StatsJson {
    objects: u64,
    bytes: u64,
    storage_type: &'static str,
}

fn store(s: &AdminState) -> Result<&PayloadStore, ApiError> {
    s.wharf
        .payload_store()
        .ok_or_else(|| payload_offload_disabled().into())
}

/// `GET /admin/payload-store/stats`: the number of payload objects, their
/// stored bytes and the kind of store.
pub(super) async fn stats(State(s): State<AdminState>) -> Result<Json<StatsJson>, ApiError> {
    let store = store(&s)?;
    let stats = store.stats().await?;
    Ok(Json(StatsJson {
        objects: stats.objects,
        bytes: stats.bytes,
        storage_type: store.storage_type().as_str(),
    }))
}

/// A query parameter that is missing, unknown or malformed: 400 with reason
/// `INVALID_ARGUMENT` and metadata `parameter` (and `value` when given).
fn bad_parameter(name: &str, value: Option<&str>, problem: &str) -> ApiError {
    let mut metadata = HashMap::from([("parameter".to_owned(), name.to_owned())]);
    let message = match value {
        Some(value) => {
            metadata.insert("value".to_owned(), value.to_owned());
            format!("query parameter `{name}`: `{value}` {problem}")
        }
        None => format!("query parameter `{name}` {problem}"),
    };
    let details = ErrorDetails::with_error_info(reason::INVALID_ARGUMENT, DOMAIN, metadata);
    Status::with_error_details(Code::InvalidArgument, message, details).into()
}

/// The parameters of a cleanup: `age` (required, humantime) and `dry_run`
/// (`true`/`false`, default false).
fn cleanup_parameters(pairs: Vec<(String, String)>) -> Result<(Duration, bool), ApiError> {
    let mut age = None;
    let mut dry_run = false;
    for (name, value) in pairs {
        match name.as_str() {
            "age" => {
                let parsed = humantime::parse_duration(&value).map_err(|e| {
                    let problem = format!(
                        "is not a duration ({e}); expected e.g. 30s, 12h or 7d (0s: any age)"
                    );
                    bad_parameter("age", Some(&value), &problem)
                })?;
                age = Some(parsed);
            }
            "dry_run" => {
                dry_run = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(bad_parameter(
                            "dry_run",
                            Some(&value),
                            "is not a boolean; expected true or false",
                        ));
                    }
                };
            }
            _ => {
                return Err(bad_parameter(
                    &name,
                    None,
                    "is unknown; this endpoint takes `age` and `dry_run`",
                ));
            }
        }
    }
    let age = age.ok_or_else(|| {
        bad_parameter(
            "age",
            None,
            "is required: delete payloads at least this old, e.g. age=7d",
        )
    })?;
    Ok((age, dry_run))
}

/// `POST /admin/payload-store/cleanup?age=7d[&dry_run=true]`: deletes the
/// payloads at least `age` old that no live event or message references.
/// Answers when done, with the report; stops (503) at server shutdown.
pub(super) async fn cleanup(
    State(s): State<AdminState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<CleanupReport>, ApiError> {
    let Query(pairs) = query.map_err(|e| bad_parameter("query", None, &e.body_text()))?;
    let (age, dry_run) = cleanup_parameters(pairs)?;
    store(&s)?;
    tokio::select! {
        report = s.wharf.cleanup_payloads(age, dry_run, |_| {}) => Ok(Json(report?)),
        () = s.shutdown.cancelled() => Err(Status::unavailable(
            "the server is shutting down; the cleanup stopped"
        ).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn message(e: ApiError) -> String {
        e.0.message().to_owned()
    }

    #[test]
    fn age_and_dry_run_parse() {
        let (age, dry_run) = cleanup_parameters(pairs(&[("age", "7d")])).unwrap();
        assert_eq!((age, dry_run), (Duration::from_secs(7 * 86_400), false));
        let (age, dry_run) =
            cleanup_parameters(pairs(&[("dry_run", "true"), ("age", "0s")])).unwrap();
        assert_eq!((age, dry_run), (Duration::ZERO, true));
    }

    #[test]
    fn bad_parameters_are_named_with_their_value() {
        let e = message(cleanup_parameters(pairs(&[("age", "banana")])).unwrap_err());
        assert!(e.contains("`age`") && e.contains("`banana`"), "{e}");
        let e = message(cleanup_parameters(pairs(&[])).unwrap_err());
        assert!(e.contains("`age` is required"), "{e}");
        let e =
            message(cleanup_parameters(pairs(&[("age", "1d"), ("dry_run", "yes")])).unwrap_err());
        assert!(e.contains("`dry_run`") && e.contains("`yes`"), "{e}");
        let e = message(cleanup_parameters(pairs(&[("age", "1d"), ("agee", "1")])).unwrap_err());
        assert!(e.contains("`agee` is unknown"), "{e}");
    }
}

//! Hard deletion of a stream.

use wharf_core::{Error, ExpectedVersion, Result, StreamName};

use super::timed;
use crate::Shared;
use crate::error::pg;

/// Deletes the events of `stream`; its name then starts again at version 0.
///
/// Runs under the head lock, like appends: an append checks a stream's
/// version and writes the next one under that lock, so a deletion must not
/// land between the two, or the append would continue a stream that no
/// longer exists and leave it starting past version 0.
pub(super) async fn delete_stream(
    shared: &Shared,
    stream: &StreamName,
    expected: ExpectedVersion,
) -> Result<u64> {
    let doing = format!("delete stream `{stream}`");
    timed(&doing, async {
        let mut conn = shared.conn().await?;
        let tx = conn.transaction().await.map_err(|e| pg(&doing, e))?;
        let lock = tx
            .prepare_cached("SELECT next_position FROM log_head FOR NO KEY UPDATE")
            .await
            .map_err(|e| pg(&doing, e))?;
        let state = tx
            .prepare_cached("SELECT max(version) FROM events WHERE stream = $1")
            .await
            .map_err(|e| pg(&doing, e))?;
        let remove = tx
            .prepare_cached("DELETE FROM events WHERE stream = $1")
            .await
            .map_err(|e| pg(&doing, e))?;
        tx.query_one(&lock, &[]).await.map_err(|e| pg(&doing, e))?;
        let last = tx
            .query_one(&state, &[&stream.as_str()])
            .await
            .map_err(|e| pg(&doing, e))?
            .get::<_, Option<i64>>(0);
        let Some(last) = last else {
            return Err(Error::StreamNotFound(stream.clone()));
        };
        let last = last as u64;
        let holds = match expected {
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
            ExpectedVersion::NoStream => false,
            ExpectedVersion::Exact(n) => n == last,
        };
        if !holds {
            return Err(Error::WrongExpectedVersion {
                stream: stream.clone(),
                expected: expected.to_string(),
                actual: Some(last),
            });
        }
        let deleted = tx
            .execute(&remove, &[&stream.as_str()])
            .await
            .map_err(|e| pg(&doing, e))?;
        tx.commit().await.map_err(|e| pg(&doing, e))?;
        Ok(deleted)
    })
    .await
}

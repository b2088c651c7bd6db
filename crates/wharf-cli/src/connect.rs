//! Reaching the server named by `--server`.

use wharf_client::Client;

/// Connects to the server at `url`, taking a bare `host:port` as `http://`.
///
/// # Errors
/// [`wharf_core::Error::Unavailable`] when nothing answers (exit 5), or
/// [`wharf_core::Error::InvalidArgument`] for a malformed URL.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    Ok(Client::connect(&url).await?)
}

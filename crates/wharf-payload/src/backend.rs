//! Building the object store of each `store_type` from `payload_offload`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use wharf_core::payload::{GcsStoreConfig, S3StoreConfig};
use wharf_core::{Error, PayloadOffloadConfig, PayloadStorageType, Result};

use crate::failure::error_chain;
use crate::key::Prefix;
use crate::local::LocalDir;

/// Where a store's objects live and how to reach them.
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) signer: Option<Arc<dyn Signer>>,
    pub(crate) local: Option<LocalDir>,
    pub(crate) prefix: Prefix,
    /// What precedes the key in a URI: `s3://bucket/`, `file:///dir/`, ….
    pub(crate) uri_base: String,
    /// The store in words, for error messages: `s3 bucket b at http://…`.
    pub(crate) describe: String,
}

pub(crate) fn build(config: &PayloadOffloadConfig, retry_timeout: Duration) -> Result<Backend> {
    match config.store_type {
        PayloadStorageType::Memory => Ok(memory(Arc::new(InMemory::new()), Prefix::default())),
        PayloadStorageType::Filesystem => filesystem(&config.filesystem.base_path),
        PayloadStorageType::S3 => {
            let s3 = config.s3.as_ref().ok_or_else(|| missing_section("s3"))?;
            s3_store(s3, retry_timeout)
        }
        PayloadStorageType::Gcs => {
            let gcs = config.gcs.as_ref().ok_or_else(|| missing_section("gcs"))?;
            gcs_store(gcs, retry_timeout)
        }
    }
}

/// Where a caller-supplied object store keeps its objects, by the
/// configured type (the store itself is not inspected).
pub(crate) fn external(
    config: &PayloadOffloadConfig,
    store: Arc<dyn ObjectStore>,
) -> Result<Backend> {
    let (uri_base, prefix, describe) = match config.store_type {
        PayloadStorageType::Memory => (
            "memory:///".to_owned(),
            Prefix::default(),
            "memory store".to_owned(),
        ),
        PayloadStorageType::Filesystem => {
            let root = absolute(&config.filesystem.base_path)?;
            (
                dir_uri(&root)?,
                Prefix::default(),
                format!("filesystem store {}", root.display()),
            )
        }
        PayloadStorageType::S3 => {
            let s3 = config.s3.as_ref().ok_or_else(|| missing_section("s3"))?;
            check_bucket(&s3.bucket, "payload_offload.s3.bucket")?;
            let prefix = Prefix::parse(&s3.prefix, "payload_offload.s3.prefix")?;
            (
                format!("s3://{}/", s3.bucket),
                prefix,
                format!("s3 bucket `{}`", s3.bucket),
            )
        }
        PayloadStorageType::Gcs => {
            let gcs = config.gcs.as_ref().ok_or_else(|| missing_section("gcs"))?;
            check_bucket(&gcs.bucket, "payload_offload.gcs.bucket")?;
            let prefix = Prefix::parse(&gcs.prefix, "payload_offload.gcs.prefix")?;
            (
                format!("gs://{}/", gcs.bucket),
                prefix,
                format!("gcs bucket `{}`", gcs.bucket),
            )
        }
    };
    Ok(Backend {
        store,
        signer: None,
        local: None,
        prefix,
        uri_base,
        describe,
    })
}

pub(crate) fn memory(store: Arc<InMemory>, prefix: Prefix) -> Backend {
    Backend {
        store,
        signer: None,
        local: None,
        prefix,
        uri_base: "memory:///".to_owned(),
        describe: "memory store".to_owned(),
    }
}

fn missing_section(section: &str) -> Error {
    Error::InvalidArgument(format!(
        "payload_offload.{section} is required when payload_offload.store_type is {section}"
    ))
}

fn check_bucket(bucket: &str, config_key: &str) -> Result<()> {
    if bucket.is_empty() || bucket.contains('/') || bucket.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "`{config_key}` = `{bucket}` is not a bucket name"
        )));
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| {
        Error::InvalidArgument(format!(
            "payload_offload.filesystem.base_path `{}` cannot be made absolute: {e}",
            path.display()
        ))
    })
}

fn dir_uri(root: &Path) -> Result<String> {
    url::Url::from_directory_path(root)
        .map(String::from)
        .map_err(|()| {
            Error::InvalidArgument(format!(
                "payload_offload.filesystem.base_path `{}` cannot be written as a file:// URI",
                root.display()
            ))
        })
}

fn filesystem(base_path: &Path) -> Result<Backend> {
    let wanted = absolute(base_path)?;
    std::fs::create_dir_all(&wanted).map_err(|e| {
        Error::Storage(format!(
            "payload_offload.filesystem.base_path: cannot create directory {}: {e}",
            wanted.display()
        ))
    })?;
    // Canonical, so the URIs name the directory the files are really in.
    let root = std::fs::canonicalize(&wanted).map_err(|e| {
        Error::Storage(format!(
            "payload_offload.filesystem.base_path: cannot resolve {}: {e}",
            wanted.display()
        ))
    })?;
    let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
        Error::Storage(format!(
            "payload_offload.filesystem.base_path {}: {}",
            root.display(),
            error_chain(&e)
        ))
    })?;
    Ok(Backend {
        store: Arc::new(store),
        signer: None,
        uri_base: dir_uri(&root)?,
        describe: format!("filesystem store {}", root.display()),
        local: Some(LocalDir::new(root)),
        prefix: Prefix::default(),
    })
}

/// HTTP client settings: object_store's own retries off (ours wrap every
/// call, and two loops would multiply), no overall request deadline (a
/// large body may take longer than one attempt's `timeout` to stream; each
/// read is bounded instead), connect and read bounded by `timeout`.
fn client_options(timeout: Duration, allow_http: bool) -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout_disabled()
        .with_connect_timeout(timeout)
        .with_read_timeout(timeout);
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 0,
        retry_timeout: timeout,
    };
    (options, retry)
}

/// reqwest's rustls is built without a bundled crypto provider (aws-lc's C
/// build is the slowest unit of the workspace); give it ring's, once per
/// process, unless the application installed one already.
fn install_tls_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn s3_store(config: &S3StoreConfig, timeout: Duration) -> Result<Backend> {
    check_bucket(&config.bucket, "payload_offload.s3.bucket")?;
    let prefix = Prefix::parse(&config.prefix, "payload_offload.s3.prefix")?;
    install_tls_provider();
    // Credentials and endpoint not in the file come from the usual AWS_*
    // environment variables.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region);
    // An endpoint from the environment (AWS_ENDPOINT_URL, AWS_ENDPOINT) is
    // taken by `from_env`; it still decides whether plain HTTP is allowed.
    let endpoint = config.endpoint.clone().or_else(|| {
        ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    });
    let named = if config.endpoint.is_some() {
        "payload_offload.s3.endpoint"
    } else {
        "the AWS endpoint variable"
    };
    let mut plain_http = false;
    if let Some(endpoint) = &endpoint {
        let url = url::Url::parse(endpoint).map_err(|e| {
            Error::InvalidArgument(format!("{named} `{endpoint}` is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{named} `{endpoint}` is not an http:// or https:// URL"
            )));
        }
        plain_http = url.scheme() == "http";
        builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
    }
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        (None, None) => {}
        _ => {
            return Err(Error::InvalidArgument(
                "payload_offload.s3: give both access_key_id and secret_access_key, or neither"
                    .into(),
            ));
        }
    }
    let (options, retry) = client_options(timeout, plain_http);
    // Over TLS the transport protects the body and every read verifies the
    // payload's hash, so the body is not hashed a second time for SigV4;
    // over plain HTTP the signature is all that protects it in transit.
    let store = builder
        .with_client_options(options)
        .with_retry(retry)
        .with_unsigned_payload(!plain_http)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("payload_offload.s3: {}", error_chain(&e))))?;
    let store = Arc::new(store);
    let at = endpoint
        .as_deref()
        .map_or_else(|| format!("AWS region {}", config.region), |e| e.to_owned());
    Ok(Backend {
        signer: Some(store.clone()),
        store,
        local: None,
        prefix,
        uri_base: format!("s3://{}/", config.bucket),
        describe: format!("s3 bucket `{}` at {at}", config.bucket),
    })
}

fn gcs_store(config: &GcsStoreConfig, timeout: Duration) -> Result<Backend> {
    check_bucket(&config.bucket, "payload_offload.gcs.bucket")?;
    let prefix = Prefix::parse(&config.prefix, "payload_offload.gcs.prefix")?;
    install_tls_provider();
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&config.bucket);
    if let Some(path) = &config.service_account_path {
        if !path.is_file() {
            return Err(Error::InvalidArgument(format!(
                "payload_offload.gcs.service_account_path `{}` is not a readable file",
                path.display()
            )));
        }
        builder = builder.with_service_account_path(path.to_string_lossy());
    }
    // GCS is reached over https unless the service-account file or
    // GOOGLE_BASE_URL names another base URL on purpose (an emulator).
    let (options, retry) = client_options(timeout, true);
    let store = builder
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("payload_offload.gcs: {}", error_chain(&e))))?;
    let store = Arc::new(store);
    Ok(Backend {
        signer: Some(store.clone()),
        store,
        local: None,
        prefix,
        uri_base: format!("gs://{}/", config.bucket),
        describe: format!("gcs bucket `{}`", config.bucket),
    })
}

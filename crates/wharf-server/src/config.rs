//! Loading the configuration: a YAML file, then `WHARF_<SECTION>__<KEY>`
//! environment overrides, then the typed [`Config`] with its defaults.
//!
//! Nested sections take one `__` per level, e.g.
//! `WHARF_PAYLOAD_OFFLOAD__ENABLED=true` or
//! `WHARF_PAYLOAD_OFFLOAD__S3__BUCKET=payloads`. A value is read as YAML
//! would read it (`true` a boolean, `5` a number), or as the plain string
//! where the key takes a string, so a bucket named `2024` stays a name.
//!
//! Errors name the file (or variable) and the key, e.g.
//! `wharf.yaml: server.grpc_listen: invalid socket address syntax`.

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};
use wharf_core::Config;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("config file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a value of the wrong shape, or is unknown.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        /// The file, or the environment variable, the value came from.
        origin: String,
        /// The dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The prefix of configuration environment variables.
const ENV_PREFIX: &str = "WHARF_";

/// Loads `path` (or the defaults when `None`), applying the overrides found
/// in `env`.
///
/// # Errors
/// A [`ConfigError`] naming the file or variable and the key.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut root = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let value: Value = serde_norway::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            match value {
                Value::Null => Value::Mapping(Mapping::new()),
                v @ Value::Mapping(_) => v,
                _ => {
                    return Err(ConfigError::Syntax {
                        path: path.to_owned(),
                        message: "the top level must be a mapping of sections".into(),
                    });
                }
            }
        }
        None => Value::Mapping(Mapping::new()),
    };
    let mut from_env = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // Only `SECTION__KEY` names configure the server; `WHARF_SERVER`,
        // `WHARF_TOKEN` and friends belong to the CLI.
        if !rest.contains("__") {
            continue;
        }
        let keys: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let typed = scalar(&value);
        let retyped = !matches!(typed, Value::String(_));
        set(&mut root, &keys, typed);
        from_env.push(EnvValue {
            key: keys.join("."),
            keys,
            var: name,
            raw: retyped.then_some(value),
        });
    }
    default_storage_type(&mut root);
    let origin_of = |from_env: &[EnvValue], key: &str| {
        from_env
            .iter()
            .find(|v| key.starts_with(v.key.as_str()) || v.key.starts_with(key))
            .map(|v| format!("environment variable {}", v.var))
            .or_else(|| path.map(|p| format!("config file {}", p.display())))
            .unwrap_or_else(|| "configuration".to_owned())
    };
    loop {
        let error = match serde_path_to_error::deserialize(root.clone()) {
            Ok(config) => return Ok(config),
            Err(e) => e,
        };
        let key = error.path().to_string();
        // A value YAML read as a number or boolean where the key takes a
        // string (`2024` as a bucket name): try it as the string it was.
        if let Some(v) = from_env
            .iter_mut()
            .find(|v| v.key == key && v.raw.is_some())
            && let Some(raw) = v.raw.take()
        {
            set(&mut root, &v.keys, Value::String(raw));
            continue;
        }
        return Err(ConfigError::Invalid {
            origin: origin_of(&from_env, &key),
            key,
            message: error.into_inner().to_string(),
        });
    }
}

/// A configuration value set by an environment variable.
struct EnvValue {
    /// The dotted key path, as deserialization errors name it.
    key: String,
    keys: Vec<String>,
    var: String,
    /// The text, while the value stands as the number or boolean YAML read.
    raw: Option<String>,
}

/// `storage.type` defaults to `embedded`, so `storage: { path: … }` (or a
/// lone `WHARF_STORAGE__PATH`) means the embedded store at that path.
fn default_storage_type(root: &mut Value) {
    if let Value::Mapping(top) = root
        && let Some(Value::Mapping(storage)) = top.get_mut("storage")
        && !storage.contains_key("type")
    {
        storage.insert(
            Value::String("type".into()),
            Value::String("embedded".into()),
        );
    }
}

/// An environment value as YAML would read it (`5` a number, `true` a
/// boolean), or a plain string when it is not a scalar.
fn scalar(text: &str) -> Value {
    match serde_norway::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

fn set(root: &mut Value, keys: &[String], value: Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut node = root;
    for key in parents {
        if !matches!(node, Value::Mapping(_)) {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            unreachable!("made a mapping above")
        };
        node = map
            .entry(Value::String(key.clone()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    if !matches!(node, Value::Mapping(_)) {
        *node = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(map) = node {
        map.insert(Value::String(last.clone()), value);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use wharf_core::{Durability, StorageConfig};

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn no_file_gives_the_documented_defaults() {
        let c = load(None, []).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn file_sets_listeners_and_storage() {
        let f = file(
            "server:\n  grpc_listen: 127.0.0.1:6000\nstorage:\n  type: embedded\n  path: /tmp/x\n  durability: relaxed\n",
        );
        let c = load(Some(f.path()), []).unwrap();
        assert_eq!(c.server.grpc_listen.port(), 6000);
        assert_eq!(c.server.http_listen.port(), 9099);
        assert_eq!(
            c.storage,
            StorageConfig::Embedded {
                path: "/tmp/x".into(),
                durability: Durability::Relaxed
            }
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = file("server:\n  grpc_listen: 127.0.0.1:6000\n");
        let env = [
            ("WHARF_SERVER__GRPC_LISTEN".into(), "127.0.0.1:7000".into()),
            ("WHARF_STORAGE__DURABILITY".into(), "relaxed".into()),
            ("WHARF_SERVER".into(), "http://ignored".into()),
        ];
        let c = load(Some(f.path()), env).unwrap();
        assert_eq!(c.server.grpc_listen.port(), 7000);
        assert!(matches!(
            c.storage,
            StorageConfig::Embedded {
                durability: Durability::Relaxed,
                ..
            }
        ));
    }

    #[test]
    fn postgres_storage_is_read_from_the_file_with_defaults() {
        let f = file("storage:\n  type: postgres\n  url: postgres://wharf@db:5432/wharf\n");
        let c = load(Some(f.path()), []).unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::Postgres(wharf_core::PostgresConfig::new(
                "postgres://wharf@db:5432/wharf"
            ))
        );
        let StorageConfig::Postgres(pg) = c.storage else {
            unreachable!()
        };
        assert_eq!((pg.pool_size, pg.schema.as_str()), (16, "wharf"));
    }

    #[test]
    fn postgres_storage_is_set_by_environment_variables() {
        let env = [
            ("WHARF_STORAGE__TYPE".into(), "postgres".into()),
            ("WHARF_STORAGE__URL".into(), "postgres://u@h/d".into()),
            ("WHARF_STORAGE__POOL_SIZE".into(), "4".into()),
            ("WHARF_STORAGE__SCHEMA".into(), "tenant_a".into()),
            ("WHARF_STORAGE__CONNECT_TIMEOUT".into(), "2s".into()),
        ];
        let StorageConfig::Postgres(pg) = load(None, env).unwrap().storage else {
            panic!("WHARF_STORAGE__TYPE=postgres selects PostgreSQL");
        };
        assert_eq!(pg.url, "postgres://u@h/d");
        assert_eq!((pg.pool_size, pg.schema.as_str()), (4, "tenant_a"));
        assert_eq!(pg.connect_timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn postgres_storage_without_a_url_or_with_a_stray_key_is_refused_by_name() {
        let f = file("storage:\n  type: postgres\n");
        let err = load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains("url"), "{err}");
        let f = file("storage:\n  type: postgres\n  url: postgres://h/d\n  path: ./x\n");
        let err = load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains("path"), "{err}");
    }

    #[test]
    fn malformed_value_names_the_key_and_the_file() {
        let f = file("server:\n  grpc_listen: not-an-address\n");
        let err = load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains("server.grpc_listen"), "{err}");
        assert!(err.contains(&f.path().display().to_string()), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let f = file("server:\n  grpc_lisen: 127.0.0.1:1\n");
        let err = load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains("grpc_lisen"), "{err}");
    }

    #[test]
    fn yaml_syntax_error_names_the_file_and_line() {
        let f = file("server: [unclosed\n");
        let err = load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let env = [("WHARF_SERVER__HTTP_LISTEN".into(), "nope".into())];
        let err = load(None, env).unwrap_err().to_string();
        assert!(err.contains("WHARF_SERVER__HTTP_LISTEN"), "{err}");
        assert!(err.contains("server.http_listen"), "{err}");
    }

    #[test]
    fn payload_offload_section_is_read_from_the_file() {
        let f = file(
            "payload_offload:\n  enabled: true\n  threshold_bytes: 65536\n  store_type: s3\n  \
             s3: { bucket: b, prefix: events/, region: eu-west-1, endpoint: http://127.0.0.1:9000 }\n  \
             compression: zstd\n  ttl_days: 7\n  reaper_interval_hours: 1\n  \
             retry: { max_attempts: 5, timeout: 10s, backoff: 50ms }\n\
             limits:\n  max_payload_bytes: 209715200\n",
        );
        let c = load(Some(f.path()), []).unwrap();
        let p = &c.payload_offload;
        assert!(p.enabled);
        assert_eq!(p.threshold_bytes, 65536);
        assert_eq!(p.store_type, wharf_core::PayloadStorageType::S3);
        let s3 = p.s3.as_ref().unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("b", "events/"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(p.ttl_days, 7);
        assert_eq!(p.retry.timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.limits.max_payload_bytes, 200 << 20);
    }

    #[test]
    fn payload_offload_keys_are_overridden_by_nested_environment_variables() {
        let f = file("payload_offload:\n  enabled: false\n  threshold_bytes: 1000\n");
        let env = [
            ("WHARF_PAYLOAD_OFFLOAD__ENABLED".into(), "true".into()),
            (
                "WHARF_PAYLOAD_OFFLOAD__THRESHOLD_BYTES".into(),
                "65536".into(),
            ),
            ("WHARF_PAYLOAD_OFFLOAD__STORE_TYPE".into(), "s3".into()),
            ("WHARF_PAYLOAD_OFFLOAD__S3__BUCKET".into(), "2024".into()),
            (
                "WHARF_PAYLOAD_OFFLOAD__S3__ACCESS_KEY_ID".into(),
                "12345".into(),
            ),
            (
                "WHARF_PAYLOAD_OFFLOAD__FILESYSTEM__BASE_PATH".into(),
                "/srv/p".into(),
            ),
            ("WHARF_PAYLOAD_OFFLOAD__RETRY__TIMEOUT".into(), "3s".into()),
        ];
        let c = load(Some(f.path()), env).unwrap();
        let p = &c.payload_offload;
        assert!(p.enabled);
        assert_eq!(p.threshold_bytes, 65536);
        let s3 = p.s3.as_ref().unwrap();
        assert_eq!(s3.bucket, "2024", "a numeric-looking bucket stays a string");
        assert_eq!(s3.access_key_id.as_deref(), Some("12345"));
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(p.filesystem.base_path, Path::new("/srv/p"));
        assert_eq!(p.retry.timeout, std::time::Duration::from_secs(3));
    }

    #[test]
    fn a_bad_payload_offload_value_names_the_variable_and_key() {
        let env = [(
            "WHARF_PAYLOAD_OFFLOAD__THRESHOLD_BYTES".into(),
            "lots".into(),
        )];
        let err = load(None, env).unwrap_err().to_string();
        assert!(
            err.contains("WHARF_PAYLOAD_OFFLOAD__THRESHOLD_BYTES")
                && err.contains("payload_offload.threshold_bytes"),
            "{err}"
        );
        let env = [("WHARF_PAYLOAD_OFFLOAD__ENABLED".into(), "7".into())];
        let err = load(None, env).unwrap_err().to_string();
        assert!(err.contains("payload_offload.enabled"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let err = load(Some(Path::new("/nonexistent/wharf.yaml")), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/wharf.yaml"), "{err}");
    }
}

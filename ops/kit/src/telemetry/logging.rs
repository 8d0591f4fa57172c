//! The `tracing` subscriber every Atoll binary installs: stderr, text or
//! JSON lines, filtered by `EnvFilter` directives.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::TelemetryError;

/// Parses `--log-level` directives in `EnvFilter` syntax: a default level
/// and per-module overrides, comma separated
/// (`info,region_server::raft=debug,sqlx=warn`).
pub fn log_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| TelemetryError::LogFilter {
            directives: directives.to_string(),
            reason: e.to_string(),
        })
}

/// A subscriber writing to `writer`: one human-readable line per event, or
/// with `json` one JSON object per line (`timestamp`, `level`, `target`,
/// `fields` with the message, `span`/`spans`). Exposed so tests can point
/// it at a buffer; binaries call [`init_logging`].
pub fn subscriber<W>(
    directives: &str,
    json: bool,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = log_filter(directives)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    Ok(if json {
        Box::new(builder.json().finish())
    } else {
        Box::new(builder.with_ansi(false).finish())
    })
}

/// Installs the process's subscriber: stderr, filtered by `level`
/// (`EnvFilter` directives, see [`log_filter`]), JSON lines when `json`.
/// Fails on directives that do not parse, or when a subscriber is installed
/// already.
pub fn init_logging(level: &str, json: bool) -> Result<(), TelemetryError> {
    subscriber(level, json, std::io::stderr)?
        .try_init()
        .map_err(|e| TelemetryError::LogInit(e.to_string()))
}

/// Best-effort text logging for tools and tests: directives from
/// `RUST_LOG` when set and valid, else `default_filter`. Does nothing when
/// a subscriber is installed already.
pub fn init_tracing(default_filter: &str) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| log_filter(d).is_ok());
    let directives = from_env.unwrap_or_else(|| default_filter.to_string());
    if init_logging(&directives, false).is_err() {
        let _ = init_logging("info", false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    fn emit() {
        tracing::debug!(target: "region_server::raft::network", peer = "s2", "raft debug line");
        tracing::debug!(target: "region_server::state", "state debug line");
        tracing::info!(target: "client_agent::agent", node = "n1", "info line");
        tracing::trace!(target: "region_server::raft", "raft trace line");
    }

    #[test]
    fn per_module_directives() {
        let buf = Buf::default();
        let sub = subscriber("info,region_server::raft=debug", false, buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, emit);
        let out = buf.text();
        assert!(out.contains("raft debug line"), "{out}");
        assert!(out.contains("info line"), "{out}");
        assert!(!out.contains("state debug line"), "{out}");
        assert!(!out.contains("raft trace line"), "{out}");
    }

    #[test]
    fn json_lines() {
        let buf = Buf::default();
        let sub = subscriber("debug", true, buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, emit);
        let out = buf.text();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 3, "{out}");
        let info = lines
            .iter()
            .find(|l| l["fields"]["message"] == "info line")
            .unwrap_or_else(|| panic!("no info line in {out}"));
        assert_eq!(info["level"], "INFO");
        assert_eq!(info["target"], "client_agent::agent");
        assert_eq!(info["fields"]["node"], "n1");
        assert!(info["timestamp"].is_string(), "{info}");
    }

    #[test]
    fn bad_directives_are_an_error() {
        let err = subscriber("info,region_server=loud", false, Buf::default())
            .err()
            .expect("an error");
        assert!(err.to_string().contains("region_server=loud"), "{err}");
    }
}

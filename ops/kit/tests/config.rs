//! Loading TOML configuration files.

use ops_kit::config::{load_toml, ConfigError};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
struct Conf {
    region: String,
    #[serde(default)]
    servers: Vec<String>,
    raft: Raft,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Raft {
    heartbeat_ms: u64,
}

#[test]
fn loads_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.toml");
    std::fs::write(
        &path,
        "region = \"eu\"\nservers = [\"a:4647\", \"b:4647\"]\n\n[raft]\nheartbeat_ms = 100\n",
    )
    .unwrap();
    let conf: Conf = load_toml(&path).expect("load");
    assert_eq!(
        conf,
        Conf {
            region: "eu".into(),
            servers: vec!["a:4647".into(), "b:4647".into()],
            raft: Raft { heartbeat_ms: 100 },
        }
    );
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = load_toml::<Conf>(&path).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn bad_toml_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "region = \"eu\n[raft\n").unwrap();
    let err = load_toml::<Conf>(&path).expect_err("bad");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    // Valid TOML of the wrong shape is a parse error too.
    std::fs::write(&path, "region = 5\n").unwrap();
    let err = load_toml::<Conf>(&path).expect_err("wrong shape");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.toml"), "{err}");
}

//! The `--config FILE.toml` of the `peer`: every setting of the command line, and
//! under `[config]` every field of [`liquid_p2p::Config`].
//!
//! The top-level keys are the flags that are not `Config` fields, named as the
//! flags with `_` for `-` (`listen`, `key_file`, `dial`, `required`, `protocol`,
//! `json`, `quiet_messages`, `priority`, `allow_file`, `psk_file`, `metrics`). The flags that
//! set a `Config` field are that field in `[config]`: `--max-peers` is
//! `config.max_peers`, `--queue-len` `config.handler_queue_len`,
//! `--send-timeout-ms` `config.pool.send_timeout`, `--max-backoff-ms` and
//! `--check-interval-ms` `config.supervisor.max_backoff` and `check_interval`,
//! `--allow` `config.allow_list`, `--seed`, `--chain` and `--min-peers`
//! `config.discovery` (`enabled`, `seeds`, `chains`, `min_peers`). Paths are
//! relative to the file's folder. The `peer` binary applies the flags over the
//! file (see its `--help`); `examples/peer/peer.toml` shows every key.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use liquid_p2p::{Config, ProtocolPriority, libp2p::Multiaddr};
use serde::{Deserialize, Serialize};

/// The `--config` file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerFile {
    /// Addresses to listen on (`--listen`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<Multiaddr>,
    /// The identity key file (`--key-file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Peers to dial at start (`--dial`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dial: Vec<Multiaddr>,
    /// Required peers, each address ending in `/p2p/<id>` (`--required`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<Multiaddr>,
    /// Protocols to receive (`--protocol`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protocol: Vec<String>,
    /// JSON lines on stdout (`--json`).
    pub json: bool,
    /// Count received messages without printing them (`--quiet-messages`).
    pub quiet_messages: bool,
    /// Send priority per protocol (`--priority PROTOCOL=LEVEL`), as a table
    /// `"/proto/1" = "high"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub priority: BTreeMap<String, ProtocolPriority>,
    /// File of allowed peer ids (`--allow-file`); joins `config.allow_list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_file: Option<PathBuf>,
    /// Private network key file (`--psk-file`). The key itself never goes in
    /// this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psk_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`--metrics ADDR`), such as
    /// `"127.0.0.1:9100"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The host's settings: every field of `liquid_p2p::Config`, durations
    /// written as `"5s"` or `"250ms"`.
    pub config: Config,
}

/// Why a `--config` file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("--config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML, has a key this version does not know, or a
    /// value of the wrong kind; the message names the key and its line.
    #[error("--config {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: Box<toml::de::Error>,
    },
}

impl PeerFile {
    /// Reads the file at `path`; relative paths in it are taken from the file's
    /// folder.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = Self::parse(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        Ok(file.relative_to(path.parent().unwrap_or_else(|| Path::new("."))))
    }

    /// Parses TOML text; paths stay as written.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The TOML text of this file.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// This file with its relative paths joined to `folder`.
    fn relative_to(mut self, folder: &Path) -> Self {
        for path in [&mut self.key_file, &mut self.allow_file, &mut self.psk_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use liquid_p2p::{EvictionStrategy, PeerId};

    use super::*;

    const EXAMPLE: &str = include_str!("../peer.toml");

    #[test]
    fn the_example_file_parses_and_its_config_is_valid() {
        let file = PeerFile::parse(EXAMPLE).expect("examples/peer/peer.toml parses");
        file.config.validate().expect("a valid config");
        assert!(file.json);
        assert_eq!(file.config.max_peers, 50);
        assert_eq!(file.config.supervisor.max_backoff, Duration::from_secs(10));
        assert_eq!(file.priority["/liquid/chat/1"], ProtocolPriority::High);
        assert_eq!(file.config.pool.idle_after, Some(Duration::from_secs(60)));
        assert_eq!(file.config.pool.idle_floor, 1);
    }

    #[test]
    fn a_peer_file_round_trips_through_toml() {
        let peer = PeerId::random();
        let file = PeerFile {
            listen: vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("address")],
            key_file: Some("a.key".into()),
            required: vec![
                format!("/ip4/127.0.0.1/tcp/4002/p2p/{peer}")
                    .parse()
                    .expect("address"),
            ],
            protocol: vec!["/a/1".into(), "/b/1".into()],
            json: true,
            priority: [("/a/1".to_owned(), ProtocolPriority::Low)].into(),
            psk_file: Some("swarm.key".into()),
            config: Config::default()
                .with_max_peers(3)
                .with_eviction(EvictionStrategy::Random)
                .with_allow_list(Some([peer].into())),
            ..PeerFile::default()
        };
        let text = file.to_toml().expect("serialize");
        assert_eq!(PeerFile::parse(&text).expect("parse"), file, "{text}");
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        for (text, key) in [
            ("listne = []\n", "listne"),
            ("[config]\nmax_peer = 3\n", "max_peer"),
            (
                "[config.pool]\nsend_timeout = \"forever\"\n",
                "send_timeout",
            ),
            ("[priority]\n\"/a/1\" = \"urgent\"\n", "urgent"),
        ] {
            let error = PeerFile::parse(text).expect_err(text).to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_file_folder() {
        let file = PeerFile {
            key_file: Some("keys/a.key".into()),
            psk_file: Some("/etc/swarm.key".into()),
            ..PeerFile::default()
        }
        .relative_to(Path::new("/srv/peer"));
        assert_eq!(file.key_file, Some(PathBuf::from("/srv/peer/keys/a.key")));
        assert_eq!(file.psk_file, Some(PathBuf::from("/etc/swarm.key")));
    }
}

//! The configuration file (TOML) and its checks.

use super::*;

/// The configuration file as written: what `chain_node --config` reads and
/// `chain_cluster` writes. The node's own settings at the top level; the host's,
/// every field of [`liquid_p2p::Config`], under `[network]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The node's name in its output. Default: the config file's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Addresses to listen on (may be empty: the node only dials out).
    pub listen: Vec<String>,
    /// The identity key: created if missing, reused otherwise.
    pub key_file: PathBuf,
    /// Peers kept connected, each address ending in `/p2p/<peer id>`.
    #[serde(default)]
    pub required_peers: Vec<String>,
    /// Names the chain and its protocols.
    pub chain_id: String,
    /// Whether this node produces blocks.
    #[serde(default)]
    pub leader: bool,
    /// Time between blocks, for the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_interval_ms: Option<u64>,
    /// The chain's nodes (peer ids), this one included: only they may send the
    /// chain's blocks, votes and sync messages, and votes need two thirds of
    /// them. Default: everyone; a quorum counts the connected peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The host's settings (`[network]`, `[network.pool]`,
    /// `[network.discovery]`, ...): every field of `liquid_p2p::Config`, each
    /// with its default when left out. Discovery (`[network.discovery]`
    /// `enabled`, `seeds`, `min_peers`) always serves this node's chain.
    #[serde(default, skip_serializing_if = "is_default")]
    pub network: Config,
}

fn is_default(config: &Config) -> bool {
    *config == Config::default()
}

/// Keys that older versions of this file had at the top level, and where they
/// are now.
const MOVED_KEYS: [(&str, &str); 3] = [
    ("seeds", "[network.discovery] seeds"),
    ("discovery", "[network.discovery] enabled"),
    ("min_peers", "[network.discovery] min_peers"),
];

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name in its output.
    pub name: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// The identity key file (relative paths resolved against the config's folder).
    pub key_file: PathBuf,
    /// Required peers.
    pub required_peers: Vec<Multiaddr>,
    /// The chain id.
    pub chain_id: String,
    /// Whether this node produces blocks.
    pub leader: bool,
    /// Time between blocks, for the leader.
    pub block_interval: Duration,
    /// The chain's members; empty: everyone.
    pub members: Vec<PeerId>,
    /// The host's settings, checked ([`Config::validate`]); with discovery on,
    /// its chains include this node's.
    pub network: Config,
}

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigFile {
    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError(format!("cannot write TOML: {e}")))
    }
}

impl NodeConfig {
    /// Reads and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into());
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &name, base).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and checks TOML text. `default_name` is used when the file sets no
    /// `name`; a relative `key_file` is resolved against `base_dir`.
    pub fn parse(text: &str, default_name: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let mut message = e.to_string().trim_end().to_owned();
            if let Some((key, now)) = MOVED_KEYS
                .iter()
                .find(|(key, _)| message.contains(&format!("unknown field `{key}`")))
            {
                message.push_str(&format!("\n(`{key}` is now {now})"));
            }
            ConfigError(message)
        })?;
        Self::from_file(file, default_name, base_dir)
    }

    /// Checks a parsed configuration.
    pub fn from_file(
        file: ConfigFile,
        default_name: &str,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let name = file.name.unwrap_or_else(|| default_name.to_owned());
        if name.is_empty() {
            return Err(ConfigError("`name` must not be empty".into()));
        }
        check_chain_id(&file.chain_id)?;
        let listen = file
            .listen
            .iter()
            .map(|a| {
                Multiaddr::from_str(a)
                    .map_err(|e| ConfigError(format!("`listen`: invalid multiaddr `{a}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let required_peers = file
            .required_peers
            .iter()
            .map(|a| parse_peer_address("required_peers", a).map(|(address, _)| address))
            .collect::<Result<Vec<_>, _>>()?;
        let interval_ms = file.block_interval_ms.unwrap_or(DEFAULT_BLOCK_INTERVAL_MS);
        if !(10..=3_600_000).contains(&interval_ms) {
            return Err(ConfigError(format!(
                "`block_interval_ms` must be between 10 and 3600000, not {interval_ms}"
            )));
        }
        if file.key_file.as_os_str().is_empty() {
            return Err(ConfigError("`key_file` must not be empty".into()));
        }
        let key_file = if file.key_file.is_relative() {
            base_dir.join(&file.key_file)
        } else {
            file.key_file
        };
        let members = file
            .members
            .iter()
            .map(|id| {
                PeerId::from_str(id)
                    .map_err(|e| ConfigError(format!("`members`: invalid peer id `{id}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut network = file.network;
        let discovery = &mut network.discovery;
        if !discovery.enabled && !discovery.seeds.is_empty() {
            return Err(ConfigError(
                "`network.discovery.seeds` are given but `network.discovery.enabled` is false"
                    .into(),
            ));
        }
        if discovery.enabled && !discovery.chains.contains(&file.chain_id) {
            discovery.chains.push(file.chain_id.clone());
        }
        network
            .validate()
            .map_err(|e| ConfigError(format!("`network`: {e}")))?;
        Ok(Self {
            name,
            listen,
            key_file,
            required_peers,
            chain_id: file.chain_id,
            leader: file.leader,
            block_interval: Duration::from_millis(interval_ms),
            members,
            network,
        })
    }
}

/// A chain id names protocols: 1 to 64 characters from `[A-Za-z0-9._-]`.
pub fn check_chain_id(id: &str) -> Result<(), ConfigError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "`chain_id` must be 1 to 64 characters from [A-Za-z0-9._-], not `{id}`"
        )))
    }
}

/// Parses a peer's address from the list `field` (`required_peers`, `seeds`),
/// which must end in `/p2p/<peer id>`.
pub fn parse_peer_address(field: &str, text: &str) -> Result<(Multiaddr, PeerId), ConfigError> {
    let address = Multiaddr::from_str(text)
        .map_err(|e| ConfigError(format!("`{field}`: invalid multiaddr `{text}`: {e}")))?;
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((address, peer)),
        _ => Err(ConfigError(format!(
            "`{field}`: `{text}` must end in /p2p/<peer id>"
        ))),
    }
}

/// The protocol ids and gossip topic of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProtocols {
    /// `/chain/<id>/blocks`: the gossip topic of new blocks.
    pub blocks: String,
    /// `/chain/<id>/consensus/1`: votes, sent to every node of the chain at once.
    pub consensus: String,
    /// `/chain/<id>/sync/1`: requests for blocks and their answers.
    pub sync: String,
}

impl ChainProtocols {
    /// The protocols of chain `chain_id`.
    pub fn new(chain_id: &str) -> Self {
        Self {
            blocks: liquid_p2p::chain_topic(chain_id, "blocks"),
            consensus: format!("/chain/{chain_id}/consensus/1"),
            sync: format!("/chain/{chain_id}/sync/1"),
        }
    }
}

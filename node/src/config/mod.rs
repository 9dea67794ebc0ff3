//! Node configuration: defaults < TOML file < environment (`NEVERUST_*`) < command-line flags.
//!
//! Each source yields a [`PartialConfig`]; [`Config::resolve`] layers them and validates the
//! result. Errors name the offending key, variable or flag (and, for files, the line).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::content::{BLOCK_SIZE_DEFAULT_BYTES, BLOCK_SIZE_MAX_BYTES, BLOCK_SIZE_MIN_BYTES};

/// Default API port, as Archivist's.
pub const API_PORT_DEFAULT: u16 = 8080;
/// Default storage quota: 20 GiB.
pub const STORAGE_QUOTA_DEFAULT_BYTES: u64 = 20 << 30;
/// Block sizes must be a multiple of this (the 2 KiB proof cell).
pub const BLOCK_SIZE_ALIGN_BYTES: u64 = 2048;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, plain lines otherwise.
    #[default]
    Auto,
    Pretty,
    Plain,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(LogFormat::Auto),
            "pretty" => Ok(LogFormat::Pretty),
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (auto, pretty, plain, json)")),
        }
    }
}

/// A size in bytes, written as a number or a string with a unit (`"20GiB"`, `"64 KiB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Number(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = String;
    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Number(n) => Ok(ByteSize(n)),
            SizeRepr::Text(text) => text.parse(),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    /// Binary units (`KiB`, `MiB`, `GiB`, `TiB`, and bare `K`, `M`, `G`, `T`), decimal units
    /// (`KB`, `MB`, `GB`, `TB`) or plain bytes (`B` or no unit).
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 =
            number.parse().map_err(|_| format!("{text:?} is not a size (e.g. 20GiB, 65536)"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => return Err(format!("unknown size unit {other:?} in {text:?}")),
        };
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The resolved configuration of a node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    pub data_dir: PathBuf,
    pub api_bindaddr: IpAddr,
    pub api_port: u16,
    /// Seconds a client has to send a request's headers (also the idle keep-alive limit).
    pub api_header_timeout: u64,
    /// Seconds an upload may pause between two pieces of its body before it is rolled back.
    pub api_upload_idle_timeout: u64,
    /// Uploads the API reads at once.
    pub api_max_uploads: usize,
    /// The access token every API request but `/health` must carry (it wins over
    /// `api_token_file`). Not printed.
    #[serde(skip_serializing)]
    pub api_token: Option<String>,
    /// A file holding the access token (readable by its owner only); the node writes a random
    /// token there when the file does not exist.
    pub api_token_file: Option<PathBuf>,
    /// Origins whose web pages may call the API (CORS), or `*` for any; none by default.
    pub api_cors_origin: Vec<String>,
    pub listen_addrs: Vec<String>,
    pub bootstrap_node: Vec<String>,
    /// Addresses announced to peers instead of the listen addresses (a port forward, say).
    pub announce_addrs: Vec<String>,
    /// Relays to hold a reservation on, so peers reach this node through them.
    pub relay_node: Vec<String>,
    /// Whether this node relays circuits for peers that cannot be dialled directly.
    pub relay_server: bool,
    /// Whether AutoNAT also confirms private and loopback addresses (a LAN or one machine).
    pub autonat_private_addrs: bool,
    /// Seconds between checks of the slots of protected datasets held here.
    pub repair_check_interval: u64,
    /// Seconds a slot may be missing before it is rebuilt on another host.
    pub repair_after: u64,
    pub storage_quota: ByteSize,
    pub block_size: ByteSize,
    pub log_level: String,
    pub log_format: LogFormat,
    /// The chain's JSON-RPC endpoint (`http://`, `ws://`); none runs the node without a chain.
    pub eth_provider: Option<String>,
    /// File holding the account's private key (hex); on a local chain the node makes one.
    pub eth_private_key: Option<PathBuf>,
    /// The marketplace contract's address.
    pub marketplace_address: Option<String>,
    /// The file `neverust deploy` wrote: chain id, token, verifier and marketplace addresses.
    pub deployment: Option<PathBuf>,
    /// A proving key file of the storage-proof circuit (made by a ceremony, or by
    /// `Prover::development_setup` for a development network).
    pub proving_key: Option<PathBuf>,
    /// A circom-compiled proving circuit instead: its constraints (`.r1cs`), witness generator
    /// (`.wasm`) and snarkjs proving key (`.zkey`), all three together.
    pub circom_r1cs: Option<PathBuf>,
    pub circom_wasm: Option<PathBuf>,
    pub circom_zkey: Option<PathBuf>,
    /// The SHA-256 (hex) the proving key file or zkey must have: the key the network's
    /// verifier was deployed with (Archivist's `zkeyHash`).
    pub proving_key_hash: Option<String>,
    /// Whether this node validates: marks missed proofs, for a share of the slashed collateral.
    pub validator: bool,
    /// Splits the slots among this many validators (2..=65535); none validates every slot.
    pub validator_groups: Option<u16>,
    /// The group this validator takes (below validator-groups).
    pub validator_group_index: u16,
    /// Slots a validator tracks at most (0 for no limit).
    pub validator_max_slots: usize,
}

/// One layer of configuration: any subset of the keys.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PartialConfig {
    pub data_dir: Option<PathBuf>,
    pub api_bindaddr: Option<IpAddr>,
    pub api_port: Option<u16>,
    pub api_header_timeout: Option<u64>,
    pub api_upload_idle_timeout: Option<u64>,
    pub api_max_uploads: Option<usize>,
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub api_cors_origin: Option<Vec<String>>,
    pub listen_addrs: Option<Vec<String>>,
    pub bootstrap_node: Option<Vec<String>>,
    pub announce_addrs: Option<Vec<String>>,
    pub relay_node: Option<Vec<String>>,
    pub relay_server: Option<bool>,
    pub autonat_private_addrs: Option<bool>,
    pub repair_check_interval: Option<u64>,
    pub repair_after: Option<u64>,
    pub storage_quota: Option<ByteSize>,
    pub block_size: Option<ByteSize>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub eth_provider: Option<String>,
    pub eth_private_key: Option<PathBuf>,
    pub marketplace_address: Option<String>,
    pub deployment: Option<PathBuf>,
    pub proving_key: Option<PathBuf>,
    pub circom_r1cs: Option<PathBuf>,
    pub circom_wasm: Option<PathBuf>,
    pub circom_zkey: Option<PathBuf>,
    pub proving_key_hash: Option<String>,
    pub validator: Option<bool>,
    pub validator_groups: Option<u16>,
    pub validator_group_index: Option<u16>,
    pub validator_max_slots: Option<usize>,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML file is unreadable or invalid; the message names the key and line.
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    /// An environment variable has a bad value.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A merged value is out of range.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

/// The fewest characters an API token has: 16 random characters of a 64-letter alphabet are
/// 96 bits, beyond guessing.
pub const API_TOKEN_MIN_CHARS: usize = 16;

/// Whether `token` may be an API token: at least [`API_TOKEN_MIN_CHARS`] visible ASCII
/// characters (it travels in an HTTP header), none of them a space.
pub fn check_api_token(token: &str) -> Result<(), String> {
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an API token is visible ASCII characters, without spaces".into());
    }
    if token.len() < API_TOKEN_MIN_CHARS {
        return Err(format!("{} characters: an API token has at least {API_TOKEN_MIN_CHARS}", token.len()));
    }
    Ok(())
}

/// The platform's data directory for the node (e.g. `~/.local/share/neverust`).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("neverust")
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: default_data_dir(),
            api_bindaddr: IpAddr::from([127, 0, 0, 1]),
            api_port: API_PORT_DEFAULT,
            api_header_timeout: 30,
            api_upload_idle_timeout: 60,
            api_max_uploads: 16,
            api_token: None,
            api_token_file: None,
            api_cors_origin: Vec::new(),
            listen_addrs: vec!["/ip4/0.0.0.0/tcp/0".into()],
            bootstrap_node: Vec::new(),
            announce_addrs: Vec::new(),
            relay_node: Vec::new(),
            relay_server: true,
            autonat_private_addrs: false,
            repair_check_interval: 60,
            repair_after: 300,
            storage_quota: ByteSize(STORAGE_QUOTA_DEFAULT_BYTES),
            block_size: ByteSize(BLOCK_SIZE_DEFAULT_BYTES as u64),
            log_level: "info".into(),
            log_format: LogFormat::Auto,
            eth_provider: None,
            eth_private_key: None,
            marketplace_address: None,
            deployment: None,
            proving_key: None,
            circom_r1cs: None,
            circom_wasm: None,
            circom_zkey: None,
            proving_key_hash: None,
            validator: false,
            validator_groups: None,
            validator_group_index: 0,
            validator_max_slots: 0,
        }
    }
}

impl PartialConfig {
    /// Parses a TOML configuration file's text.
    pub fn from_toml(path: &str, text: &str) -> Result<PartialConfig, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::File { path: path.into(), message: e.to_string().trim_end().into() })
    }

    /// Reads the `NEVERUST_*` variables among `vars`. Lists are comma-separated.
    pub fn from_env<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<PartialConfig, ConfigError> {
        let mut layer = PartialConfig::default();
        for (var, value) in vars {
            let Some(key) = var.strip_prefix("NEVERUST_") else {
                continue;
            };
            let bad = |message: String| ConfigError::Env { var: var.clone(), message };
            let list =
                || value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            match key {
                "DATA_DIR" => layer.data_dir = Some(value.clone().into()),
                "API_BINDADDR" => layer.api_bindaddr = Some(value.parse().map_err(|e| bad(format!("{e}")))?),
                "API_PORT" => layer.api_port = Some(value.parse().map_err(|e| bad(format!("{e}")))?),
                "API_HEADER_TIMEOUT" => {
                    layer.api_header_timeout = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "API_UPLOAD_IDLE_TIMEOUT" => {
                    layer.api_upload_idle_timeout = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "API_MAX_UPLOADS" => {
                    layer.api_max_uploads = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "API_TOKEN" => layer.api_token = Some(value.clone()),
                "API_TOKEN_FILE" => layer.api_token_file = Some(value.clone().into()),
                "API_CORS_ORIGIN" => layer.api_cors_origin = Some(list()),
                "LISTEN_ADDRS" => layer.listen_addrs = Some(list()),
                "BOOTSTRAP_NODE" => layer.bootstrap_node = Some(list()),
                "ANNOUNCE_ADDRS" => layer.announce_addrs = Some(list()),
                "RELAY_NODE" => layer.relay_node = Some(list()),
                "RELAY_SERVER" => layer.relay_server = Some(parse_bool(&value).map_err(bad)?),
                "AUTONAT_PRIVATE_ADDRS" => {
                    layer.autonat_private_addrs = Some(parse_bool(&value).map_err(bad)?)
                }
                "REPAIR_CHECK_INTERVAL" => {
                    layer.repair_check_interval = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "REPAIR_AFTER" => layer.repair_after = Some(value.parse().map_err(|e| bad(format!("{e}")))?),
                "STORAGE_QUOTA" => layer.storage_quota = Some(value.parse().map_err(bad)?),
                "BLOCK_SIZE" => layer.block_size = Some(value.parse().map_err(bad)?),
                "LOG_LEVEL" => layer.log_level = Some(value.clone()),
                "LOG_FORMAT" => layer.log_format = Some(value.parse().map_err(bad)?),
                "ETH_PROVIDER" => layer.eth_provider = Some(value.clone()),
                "ETH_PRIVATE_KEY" => layer.eth_private_key = Some(value.clone().into()),
                "MARKETPLACE_ADDRESS" => layer.marketplace_address = Some(value.clone()),
                "DEPLOYMENT" => layer.deployment = Some(value.clone().into()),
                "PROVING_KEY" => layer.proving_key = Some(value.clone().into()),
                "CIRCOM_R1CS" => layer.circom_r1cs = Some(value.clone().into()),
                "CIRCOM_WASM" => layer.circom_wasm = Some(value.clone().into()),
                "CIRCOM_ZKEY" => layer.circom_zkey = Some(value.clone().into()),
                "PROVING_KEY_HASH" => layer.proving_key_hash = Some(value.clone()),
                "VALIDATOR" => layer.validator = Some(parse_bool(&value).map_err(bad)?),
                "VALIDATOR_GROUPS" => {
                    layer.validator_groups = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "VALIDATOR_GROUP_INDEX" => {
                    layer.validator_group_index = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "VALIDATOR_MAX_SLOTS" => {
                    layer.validator_max_slots = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                // CONFIG names the file and is read by the caller; unknown names are reported
                // by `unknown_env_vars`, not refused, so unrelated tools can share the prefix.
                _ => {}
            }
        }
        Ok(layer)
    }

    /// The `NEVERUST_*` variables among `vars` that name no setting (likely typos).
    pub fn unknown_env_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Vec<String> {
        const KNOWN: [&str; 35] = [
            "DATA_DIR",
            "API_BINDADDR",
            "API_PORT",
            "API_HEADER_TIMEOUT",
            "API_UPLOAD_IDLE_TIMEOUT",
            "API_MAX_UPLOADS",
            "API_TOKEN",
            "API_TOKEN_FILE",
            "API_CORS_ORIGIN",
            "LISTEN_ADDRS",
            "BOOTSTRAP_NODE",
            "ANNOUNCE_ADDRS",
            "RELAY_NODE",
            "RELAY_SERVER",
            "AUTONAT_PRIVATE_ADDRS",
            "REPAIR_CHECK_INTERVAL",
            "REPAIR_AFTER",
            "STORAGE_QUOTA",
            "BLOCK_SIZE",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "ETH_PROVIDER",
            "ETH_PRIVATE_KEY",
            "MARKETPLACE_ADDRESS",
            "DEPLOYMENT",
            "PROVING_KEY",
            "CIRCOM_R1CS",
            "CIRCOM_WASM",
            "CIRCOM_ZKEY",
            "PROVING_KEY_HASH",
            "VALIDATOR",
            "VALIDATOR_GROUPS",
            "VALIDATOR_GROUP_INDEX",
            "VALIDATOR_MAX_SLOTS",
            "CONFIG",
        ];
        vars.into_iter()
            .filter_map(|(var, _)| {
                var.strip_prefix("NEVERUST_").filter(|k| !KNOWN.contains(k)).map(|_| var.clone())
            })
            .collect()
    }

    /// Overrides every key that `over` sets.
    fn overlay(&mut self, over: PartialConfig) {
        macro_rules! take {
            ($($field:ident),*) => { $( if over.$field.is_some() { self.$field = over.$field; } )* };
        }
        take!(
            data_dir,
            api_bindaddr,
            api_port,
            api_header_timeout,
            api_upload_idle_timeout,
            api_max_uploads,
            api_token,
            api_token_file,
            api_cors_origin,
            listen_addrs,
            bootstrap_node,
            announce_addrs,
            relay_node,
            relay_server,
            autonat_private_addrs,
            repair_check_interval,
            repair_after,
            storage_quota,
            block_size,
            log_level,
            log_format,
            eth_provider,
            eth_private_key,
            marketplace_address,
            deployment,
            proving_key,
            circom_r1cs,
            circom_wasm,
            circom_zkey,
            proving_key_hash,
            validator,
            validator_groups,
            validator_group_index,
            validator_max_slots
        );
    }
}

impl Config {
    /// Layers `file` < `env` < `flags` over the defaults and validates the result.
    pub fn resolve(
        file: Option<PartialConfig>,
        env: PartialConfig,
        flags: PartialConfig,
    ) -> Result<Config, ConfigError> {
        let mut merged = file.unwrap_or_default();
        merged.overlay(env);
        merged.overlay(flags);
        let d = Config::default();
        let config = Config {
            data_dir: merged.data_dir.unwrap_or(d.data_dir),
            api_bindaddr: merged.api_bindaddr.unwrap_or(d.api_bindaddr),
            api_port: merged.api_port.unwrap_or(d.api_port),
            api_header_timeout: merged.api_header_timeout.unwrap_or(d.api_header_timeout),
            api_upload_idle_timeout: merged.api_upload_idle_timeout.unwrap_or(d.api_upload_idle_timeout),
            api_max_uploads: merged.api_max_uploads.unwrap_or(d.api_max_uploads),
            api_token: merged.api_token,
            api_token_file: merged.api_token_file,
            api_cors_origin: merged.api_cors_origin.unwrap_or(d.api_cors_origin),
            listen_addrs: merged.listen_addrs.unwrap_or(d.listen_addrs),
            bootstrap_node: merged.bootstrap_node.unwrap_or(d.bootstrap_node),
            announce_addrs: merged.announce_addrs.unwrap_or(d.announce_addrs),
            relay_node: merged.relay_node.unwrap_or(d.relay_node),
            relay_server: merged.relay_server.unwrap_or(d.relay_server),
            autonat_private_addrs: merged.autonat_private_addrs.unwrap_or(d.autonat_private_addrs),
            repair_check_interval: merged.repair_check_interval.unwrap_or(d.repair_check_interval),
            repair_after: merged.repair_after.unwrap_or(d.repair_after),
            storage_quota: merged.storage_quota.unwrap_or(d.storage_quota),
            block_size: merged.block_size.unwrap_or(d.block_size),
            log_level: merged.log_level.unwrap_or(d.log_level),
            log_format: merged.log_format.unwrap_or(d.log_format),
            eth_provider: merged.eth_provider,
            eth_private_key: merged.eth_private_key,
            marketplace_address: merged.marketplace_address,
            deployment: merged.deployment,
            proving_key: merged.proving_key,
            circom_r1cs: merged.circom_r1cs,
            circom_wasm: merged.circom_wasm,
            circom_zkey: merged.circom_zkey,
            proving_key_hash: merged.proving_key_hash,
            validator: merged.validator.unwrap_or(d.validator),
            validator_groups: merged.validator_groups,
            validator_group_index: merged.validator_group_index.unwrap_or(d.validator_group_index),
            validator_max_slots: merged.validator_max_slots.unwrap_or(d.validator_max_slots),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("api-header-timeout", self.api_header_timeout),
            ("api-upload-idle-timeout", self.api_upload_idle_timeout),
            ("api-max-uploads", self.api_max_uploads as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid { key, message: "must be at least 1".into() });
            }
        }
        if self.repair_check_interval == 0 {
            return Err(ConfigError::Invalid {
                key: "repair-check-interval",
                message: "0 seconds: checks need a pause between them".into(),
            });
        }
        let block = self.block_size.0;
        if block < BLOCK_SIZE_MIN_BYTES as u64
            || block > BLOCK_SIZE_MAX_BYTES as u64
            || !block.is_multiple_of(BLOCK_SIZE_ALIGN_BYTES)
        {
            return Err(ConfigError::Invalid {
                key: "block-size",
                message: format!(
                    "{} bytes: must be a multiple of {BLOCK_SIZE_ALIGN_BYTES} between {} and {}",
                    block,
                    ByteSize(BLOCK_SIZE_MIN_BYTES as u64),
                    ByteSize(BLOCK_SIZE_MAX_BYTES as u64)
                ),
            });
        }
        if self.storage_quota.0 < block {
            return Err(ConfigError::Invalid {
                key: "storage-quota",
                message: format!("{} is smaller than one block ({})", self.storage_quota, self.block_size),
            });
        }
        for (key, addrs) in [
            ("listen-addrs", &self.listen_addrs),
            ("bootstrap-node", &self.bootstrap_node),
            ("announce-addrs", &self.announce_addrs),
            ("relay-node", &self.relay_node),
        ] {
            if let Some(bad) = addrs.iter().find(|a| !a.starts_with('/')) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{bad:?} is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/8070)"),
                });
            }
        }
        self.validate_api_access()?;
        self.validate_chain()?;
        self.validate_proving()
    }

    /// An API off loopback needs a token; a token must be hard to guess; CORS origins must
    /// be origins.
    fn validate_api_access(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.api_token {
            check_api_token(token).map_err(|message| ConfigError::Invalid { key: "api-token", message })?;
        }
        if !self.api_bindaddr.is_loopback() && self.api_token.is_none() && self.api_token_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "api-bindaddr",
                message: format!(
                    "{} is not a loopback address, so anyone who reaches it could use the API: set \
                     api-token-file (the node writes a random token there when it is missing) or api-token",
                    self.api_bindaddr
                ),
            });
        }
        if let Some(bad) = self.api_cors_origin.iter().find(|o| {
            let origin = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            *o != "*" && !origin.is_some_and(|host| !host.is_empty() && !host.contains('/'))
        }) {
            return Err(ConfigError::Invalid {
                key: "api-cors-origin",
                message: format!("{bad:?} is not an origin (e.g. https://app.example.com, or *)"),
            });
        }
        Ok(())
    }

    fn validate_proving(&self) -> Result<(), ConfigError> {
        let circom = [&self.circom_r1cs, &self.circom_wasm, &self.circom_zkey];
        let given = circom.iter().filter(|p| p.is_some()).count();
        if given != 0 && given != 3 {
            return Err(ConfigError::Invalid {
                key: "circom-r1cs",
                message: "circom-r1cs, circom-wasm and circom-zkey go together: all three or none".into(),
            });
        }
        if given == 3 && self.proving_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "proving-key",
                message: "either proving-key or the circom files, not both".into(),
            });
        }
        if let Some(hash) = &self.proving_key_hash {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid {
                    key: "proving-key-hash",
                    message: format!("{hash:?} is not a SHA-256 in hex (64 digits)"),
                });
            }
            if given == 0 && self.proving_key.is_none() {
                return Err(ConfigError::Invalid {
                    key: "proving-key-hash",
                    message: "names the hash of a key, but no proving-key or circom-zkey is set".into(),
                });
            }
        }
        Ok(())
    }

    fn validate_chain(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.eth_provider
            && !["http://", "https://", "ws://", "wss://"].iter().any(|s| endpoint.starts_with(s))
        {
            return Err(ConfigError::Invalid {
                key: "eth-provider",
                message: format!("{endpoint:?} is not an http://, https://, ws:// or wss:// URL"),
            });
        }
        if let Some(address) = &self.marketplace_address
            && address.parse::<alloy_primitives::Address>().is_err()
        {
            return Err(ConfigError::Invalid {
                key: "marketplace-address",
                message: format!("{address:?} is not an address (0x and 40 hex digits)"),
            });
        }
        let grouping = crate::market::validation::ValidatorConfig {
            groups: self.validator_groups,
            group_index: self.validator_group_index,
            max_slots: self.validator_max_slots,
        };
        if let Err(message) = grouping.check() {
            return Err(ConfigError::Invalid { key: "validator-groups", message });
        }
        let grouped = self.validator_groups.is_some() || self.validator_max_slots != 0;
        if grouped && !self.validator {
            return Err(ConfigError::Invalid {
                key: "validator-groups",
                message: "validator-groups, validator-group-index and validator-max-slots need validator"
                    .into(),
            });
        }
        if self.eth_provider.is_none() {
            for (key, set) in [
                ("validator", self.validator),
                ("marketplace-address", self.marketplace_address.is_some()),
                ("deployment", self.deployment.is_some()),
                ("eth-private-key", self.eth_private_key.is_some()),
            ] {
                if set {
                    return Err(ConfigError::Invalid {
                        key,
                        message: "needs eth-provider, the chain's endpoint".into(),
                    });
                }
            }
        }
        if self.eth_provider.is_some() && self.marketplace_address.is_none() && self.deployment.is_none() {
            return Err(ConfigError::Invalid {
                key: "eth-provider",
                message: "needs the marketplace: marketplace-address, or deployment (the file `neverust deploy` wrote)"
                    .into(),
            });
        }
        Ok(())
    }

    /// The configuration as TOML, as `neverust start --print-config` shows it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serialises")
    }

    pub fn block_size_bytes(&self) -> usize {
        self.block_size.0 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<PartialConfig, ConfigError> {
        PartialConfig::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn sizes_parse() {
        // (text, bytes)
        for (text, bytes) in [
            ("65536", 65_536),
            ("64KiB", 65_536),
            ("64 KiB", 65_536),
            ("20GiB", 20 << 30),
            ("1G", 1 << 30),
            ("5MB", 5_000_000),
            ("7b", 7),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "GiB", "12 parsecs", "-5", "99999999999999999999"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(ByteSize(20 << 30).to_string(), "20GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = PartialConfig::from_toml(
            "f.toml",
            "api-port = 1000\nblock-size = \"128KiB\"\nstorage-quota = 1073741824\nlog-level = \"warn\"",
        )
        .unwrap();
        let environment =
            env(&[("NEVERUST_API_PORT", "2000"), ("NEVERUST_LOG_LEVEL", "debug"), ("PATH", "/bin")]).unwrap();
        let flags = PartialConfig { api_port: Some(3000), ..Default::default() };
        let config = Config::resolve(Some(file), environment, flags).unwrap();
        assert_eq!(config.api_port, 3000); // flag
        assert_eq!(config.log_level, "debug"); // env over file
        assert_eq!(config.block_size, ByteSize(128 << 10)); // file
        assert_eq!(config.storage_quota, ByteSize(1 << 30));
        assert_eq!(config.api_bindaddr, IpAddr::from([127, 0, 0, 1])); // default
        let printed = config.to_toml();
        assert!(printed.contains("api-port = 3000"), "{printed}");
        assert!(printed.contains("block-size = \"128KiB\""), "{printed}");
    }

    #[test]
    fn file_errors_name_the_key_and_line() {
        let err =
            PartialConfig::from_toml("node.toml", "api-port = 1\nstorage-qouta = \"1GiB\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("node.toml") && text.contains("line 2") && text.contains("storage-qouta"),
            "{text}"
        );
        let err = PartialConfig::from_toml("node.toml", "api-port = \"eighty\"\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("api-port"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(
            matches!(env(&[("NEVERUST_API_PORT", "x")]), Err(ConfigError::Env { var, .. }) if var == "NEVERUST_API_PORT")
        );
        assert_eq!(env(&[("NEVERUST_BLOCK_SIZ", "1")]), Ok(PartialConfig::default()));
        let vars =
            [("NEVERUST_BLOCK_SIZ".to_string(), "1".to_string()), ("NEVERUST_API_PORT".into(), "1".into())];
        assert_eq!(PartialConfig::unknown_env_vars(vars), vec!["NEVERUST_BLOCK_SIZ".to_string()]);
        let small_block = PartialConfig { block_size: Some(ByteSize(1000)), ..Default::default() };
        assert!(matches!(
            Config::resolve(None, small_block, PartialConfig::default()),
            Err(ConfigError::Invalid { key: "block-size", .. })
        ));
        let bad_addr =
            PartialConfig { listen_addrs: Some(vec!["127.0.0.1:8070".into()]), ..Default::default() };
        assert!(matches!(
            Config::resolve(None, bad_addr, PartialConfig::default()),
            Err(ConfigError::Invalid { key: "listen-addrs", .. })
        ));
        let bad_relay =
            PartialConfig { relay_node: Some(vec!["relay.example".into()]), ..Default::default() };
        assert!(matches!(
            Config::resolve(None, bad_relay, PartialConfig::default()),
            Err(ConfigError::Invalid { key: "relay-node", .. })
        ));
    }

    #[test]
    fn an_api_off_loopback_needs_a_token_and_the_token_is_never_printed() {
        let resolve = |layer: PartialConfig| Config::resolve(None, layer, PartialConfig::default());
        let open = PartialConfig { api_bindaddr: Some("0.0.0.0".parse().unwrap()), ..Default::default() };
        let Err(ConfigError::Invalid { key: "api-bindaddr", message }) = resolve(open.clone()) else {
            panic!("an open API without a token was accepted")
        };
        assert!(message.contains("api-token-file"), "{message}");
        let with_file = PartialConfig { api_token_file: Some("/etc/neverust/token".into()), ..open.clone() };
        assert!(resolve(with_file.clone()).is_ok());
        let token = "0123456789abcdef-token";
        let with_token = env(&[("NEVERUST_API_BINDADDR", "::"), ("NEVERUST_API_TOKEN", token)]).unwrap();
        let config = resolve(with_token).unwrap();
        assert_eq!(config.api_token.as_deref(), Some(token));
        assert!(!config.to_toml().contains(token), "{}", config.to_toml());
        // A token given outright wins over a token file (an image may name one by default).
        let both = PartialConfig { api_token: Some(token.into()), ..with_file };
        assert_eq!(resolve(both).unwrap().api_token.as_deref(), Some(token));
        for weak in ["short", "has a space in it, long enough", "tab\tseparated-and-long-enough"] {
            let layer = PartialConfig { api_token: Some(weak.into()), ..Default::default() };
            assert!(matches!(resolve(layer), Err(ConfigError::Invalid { key: "api-token", .. })), "{weak:?}");
        }
        // Loopback needs no token; IPv6 loopback is loopback.
        assert!(
            resolve(PartialConfig { api_bindaddr: Some("::1".parse().unwrap()), ..Default::default() })
                .is_ok()
        );
    }

    #[test]
    fn cors_origins_are_origins() {
        let origins = |list: &[&str]| {
            let layer = PartialConfig {
                api_cors_origin: Some(list.iter().map(|o| o.to_string()).collect()),
                ..Default::default()
            };
            Config::resolve(None, layer, PartialConfig::default()).map(|c| c.api_cors_origin)
        };
        assert!(origins(&["https://app.example.com", "http://localhost:3000", "*"]).is_ok());
        for bad in ["app.example.com", "https://app.example.com/", "https://", "ftp://x"] {
            assert!(
                matches!(origins(&[bad]), Err(ConfigError::Invalid { key: "api-cors-origin", .. })),
                "{bad:?}"
            );
        }
        let listed = env(&[("NEVERUST_API_CORS_ORIGIN", "https://a.example, https://b.example")]).unwrap();
        assert_eq!(listed.api_cors_origin.unwrap(), ["https://a.example", "https://b.example"]);
    }

    #[test]
    fn proving_settings_are_checked_together() {
        let check = |layer: PartialConfig| Config::resolve(None, layer, PartialConfig::default());
        let hash = Some("ab".repeat(32));
        let circom = PartialConfig {
            circom_r1cs: Some("c.r1cs".into()),
            circom_wasm: Some("c.wasm".into()),
            circom_zkey: Some("c.zkey".into()),
            proving_key_hash: hash.clone(),
            ..Default::default()
        };
        assert!(check(circom.clone()).is_ok());
        assert!(check(PartialConfig { proving_key: Some("k".into()), ..Default::default() }).is_ok());
        for (layer, key) in [
            (PartialConfig { circom_wasm: None, ..circom.clone() }, "circom-r1cs"),
            (PartialConfig { proving_key: Some("k".into()), ..circom.clone() }, "proving-key"),
            (PartialConfig { proving_key_hash: Some("12".into()), ..circom.clone() }, "proving-key-hash"),
            (PartialConfig { proving_key_hash: hash, ..Default::default() }, "proving-key-hash"),
        ] {
            match check(layer) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("expected an error for {key}, got {other:?}"),
            }
        }
        let layer = env(&[("NEVERUST_CIRCOM_ZKEY", "/z.zkey")]).unwrap();
        assert_eq!(layer.circom_zkey, Some(PathBuf::from("/z.zkey")));
    }

    #[test]
    fn chain_settings_are_checked_together() {
        let check = |layer: PartialConfig| Config::resolve(None, layer, PartialConfig::default());
        let provider = || Some("http://127.0.0.1:8545".to_string());
        let address = Some("0x5FbDB2315678afecb367f032d93F642f64180aa3".to_string());
        let ok = check(PartialConfig {
            eth_provider: provider(),
            marketplace_address: address.clone(),
            ..Default::default()
        });
        assert!(ok.is_ok(), "{ok:?}");
        for (layer, key) in [
            (
                PartialConfig { eth_provider: Some("127.0.0.1:8545".into()), ..Default::default() },
                "eth-provider",
            ),
            (PartialConfig { eth_provider: provider(), ..Default::default() }, "eth-provider"),
            (PartialConfig { marketplace_address: address, ..Default::default() }, "marketplace-address"),
            (
                PartialConfig {
                    eth_provider: provider(),
                    marketplace_address: Some("0x12".into()),
                    ..Default::default()
                },
                "marketplace-address",
            ),
            (PartialConfig { deployment: Some("d.json".into()), ..Default::default() }, "deployment"),
        ] {
            match check(layer) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("expected an error for {key}, got {other:?}"),
            }
        }
        let layer =
            env(&[("NEVERUST_ETH_PROVIDER", "ws://localhost:8545"), ("NEVERUST_DEPLOYMENT", "/d.json")])
                .unwrap();
        assert_eq!(layer.eth_provider.as_deref(), Some("ws://localhost:8545"));
        assert_eq!(layer.deployment, Some(PathBuf::from("/d.json")));
    }

    #[test]
    fn booleans_parse_from_the_environment() {
        let layer =
            env(&[("NEVERUST_RELAY_SERVER", "off"), ("NEVERUST_AUTONAT_PRIVATE_ADDRS", "1")]).unwrap();
        assert_eq!((layer.relay_server, layer.autonat_private_addrs), (Some(false), Some(true)));
        let err = env(&[("NEVERUST_RELAY_SERVER", "maybe")]).unwrap_err().to_string();
        assert!(err.contains("NEVERUST_RELAY_SERVER") && err.contains("not a boolean"), "{err}");
        let config = Config::resolve(None, PartialConfig::default(), PartialConfig::default()).unwrap();
        assert!(config.relay_server && !config.autonat_private_addrs);
    }
}

//! Helpers shared by the end-to-end tests: node processes on free loopback ports.
#![allow(dead_code)] // each test file uses a different subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod chain;

pub const BIN: &str = env!("CARGO_BIN_EXE_neverust");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `len` bytes of seeded random data (no block repeats, so nothing deduplicates).
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// Polls `condition` every 50 ms for up to 20 s.
pub fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the binary to completion (not `start`).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("NEVERUST_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// A node process with its own data directory, API and peer ports; killed on drop.
pub struct Node {
    child: Child,
    pub api_port: u16,
    pub p2p_port: u16,
    log: PathBuf,
    pub data_dir: PathBuf,
    /// Sends the API's access token with every request, when the node has one.
    pub client: reqwest::blocking::Client,
}

impl Node {
    /// Starts a node on ports the OS picks (API and peer), learning them from the node itself,
    /// so concurrent tests never race for a port. With `--api-token-file F` among `extra`, the
    /// helpers send the token the node wrote there.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let log = data_dir.with_extension("log");
        let mut child = Command::new(BIN)
            .args(["start", "--log-format", "plain", "--data-dir"])
            .arg(data_dir)
            .args(["--api-port", "0", "--listen-addrs", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .env_remove("NEVERUST_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the node");
        let deadline = Instant::now() + Duration::from_secs(30);
        let api_port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text
                .lines()
                .find_map(|l| l.split("API listening on http://").nth(1))
                .and_then(|rest| rest.split('/').next()?.rsplit(':').next()?.parse::<u16>().ok());
            if let Some(port) = port {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "node did not come up:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = extra.iter().position(|a| *a == "--api-token-file").map(|i| {
            std::fs::read_to_string(extra[i + 1]).expect("the node wrote its token").trim().to_string()
        });
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let client = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut node = Node { child, api_port, p2p_port: 0, log, data_dir: data_dir.to_path_buf(), client };
        wait_for(|| reqwest::blocking::get(node.url("/health")).is_ok(), "the API");
        wait_for(
            || !node.json("/debug/info")["addrs"].as_array().unwrap().is_empty(),
            "a peer listen address",
        );
        let address = node.json("/debug/info")["addrs"][0].as_str().unwrap().to_string();
        node.p2p_port =
            address.split("/tcp/").nth(1).and_then(|r| r.split('/').next()?.parse().ok()).unwrap();
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn v1(&self, path: &str) -> String {
        self.url(&format!("/api/archivist/v1{path}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn json(&self, path: &str) -> Value {
        self.client.get(self.v1(path)).send().unwrap().json().unwrap()
    }

    pub fn upload(&self, data: &[u8]) -> String {
        let response = self.client.post(self.v1("/data")).body(data.to_vec()).send().unwrap();
        assert!(response.status().is_success(), "upload: {}", response.text().unwrap());
        response.text().unwrap()
    }

    pub fn download(&self, cid: &str) -> Vec<u8> {
        let response = self.client.get(self.v1(&format!("/data/{cid}"))).send().unwrap();
        assert!(response.status().is_success(), "download: {}", response.status());
        response.bytes().unwrap().to_vec()
    }

    /// The dataset's bytes fetched from other nodes (rebuilding what none of them serves); the
    /// copy is stored here once the stream ends.
    pub fn stream_from_network(&self, cid: &str) -> Vec<u8> {
        let response = self.client.get(self.v1(&format!("/data/{cid}/network/stream"))).send().unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.bytes().unwrap().to_vec()
    }

    pub fn delete(&self, cid: &str) {
        let response = self.client.delete(self.v1(&format!("/data/{cid}"))).send().unwrap();
        let status = response.status();
        assert_eq!(status, 204, "deleting {cid}: {}", response.text().unwrap());
    }

    pub fn lists(&self, cid: &str) -> bool {
        self.json("/data")["content"].as_array().unwrap().iter().any(|d| d["cid"] == cid)
    }

    pub fn metric(&self, name: &str) -> u64 {
        let metrics = self.client.get(self.url("/metrics")).send().unwrap().text().unwrap();
        let prefix = format!("{name} ");
        let value = metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        value.unwrap_or_else(|| panic!("no metric {name}")).parse().unwrap()
    }

    pub fn peer_id(&self) -> String {
        self.json("/debug/info")["id"].as_str().unwrap().to_string()
    }

    /// The multiaddr other nodes bootstrap from.
    pub fn address(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p_port, self.peer_id())
    }

    /// Peer IDs of the connected peers.
    pub fn peers(&self) -> Vec<String> {
        let info = self.json("/debug/info");
        info["table"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["peerId"].as_str().unwrap().to_string())
            .collect()
    }

    /// Kills the node with SIGKILL, then runs the store checker on its data directory, which
    /// must find nothing wrong; returns the checker's report.
    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap(); // SIGKILL on unix
        self.child.wait().unwrap();
        let checked = run(&["check", "--data-dir", self.data_dir.to_str().unwrap()], &[]);
        let report = String::from_utf8_lossy(&checked.stdout).into_owned();
        assert!(
            checked.status.success(),
            "after SIGKILL the store checker found damage in {}:\n{report}{}",
            self.data_dir.display(),
            String::from_utf8_lossy(&checked.stderr)
        );
        report
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

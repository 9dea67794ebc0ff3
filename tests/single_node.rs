//! End-to-end tests of the real `neverust` binary: separate processes, real LMDB files, real
//! HTTP on loopback, SIGKILL.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_neverust");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node process on a free port with its own data directory; killed on drop.
struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Node {
    fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let port = free_port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let child = Command::new(BIN)
            .args(["start", "--data-dir"])
            .arg(data_dir)
            .args([
                "--api-port",
                &port.to_string(),
                "--log-format",
                "plain",
                "--listen-addrs",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .args(extra)
            .env_remove("NEVERUST_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the node");
        let node = Node { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(node.url("/health")).is_err() {
            assert!(Instant::now() < deadline, "node did not come up:\n{}", node.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn v1(&self, path: &str) -> String {
        self.url(&format!("/api/archivist/v1{path}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn upload(&self, data: &[u8]) -> String {
        let response =
            reqwest::blocking::Client::new().post(self.v1("/data")).body(data.to_vec()).send().unwrap();
        assert!(response.status().is_success(), "upload: {}", response.text().unwrap());
        response.text().unwrap()
    }

    fn download(&self, cid: &str) -> Vec<u8> {
        let response = reqwest::blocking::get(self.v1(&format!("/data/{cid}"))).unwrap();
        assert!(response.status().is_success(), "download: {}", response.status());
        response.bytes().unwrap().to_vec()
    }

    fn json(&self, path: &str) -> Value {
        reqwest::blocking::get(self.v1(path)).unwrap().json().unwrap()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on unix
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("NEVERUST_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn round_trips_at_boundary_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("a"), &[]);
    // (size, why)
    for (size, seed) in [
        (0, 1),                    // empty file
        (1, 2),                    // one byte
        (65_535, 3),               // one byte short of a block
        (65_536, 4),               // exactly one block
        (65_537, 5),               // one byte into a second block
        (20 * 1024 * 1024 + 7, 6), // several upload batches
    ] {
        let data = random(size, seed);
        let cid = node.upload(&data);
        assert_eq!(node.download(&cid), data, "size {size}");
    }
    assert_eq!(node.json("/data")["content"].as_array().unwrap().len(), 6);
}

#[test]
fn kill_9_mid_upload_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("n");
    let node = Node::start(&data_dir, &[]);
    let kept = random(3 * 1024 * 1024 + 11, 7);
    let kept_cid = node.upload(&kept);
    let space_before = node.json("/space");
    let used_before = space_before["quotaUsedBytes"].as_u64().unwrap();

    // Announce 1 GiB and stream 96 MiB of it: several batches are committed to LMDB.
    let mut socket = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    write!(
        socket,
        "POST /api/archivist/v1/data HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    )
    .unwrap();
    for i in 0..96 {
        socket.write_all(&random(1 << 20, 1000 + i)).unwrap(); // distinct blocks: nothing dedupes
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.json("/space")["quotaUsedBytes"].as_u64().unwrap() < used_before + (32 << 20) {
        assert!(Instant::now() < deadline, "the partial upload never reached the disk");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill9();
    drop(socket);

    let node = Node::start(&data_dir, &[]);
    assert!(node.log_text().contains("rolled back uploads interrupted by a crash"), "{}", node.log_text());
    let listed = node.json("/data");
    let listed = listed["content"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "only the complete dataset is listed: {listed:?}");
    assert_eq!(listed[0]["cid"], kept_cid.as_str());
    assert_eq!(node.json("/space"), space_before, "space accounting is back to what the kept dataset uses");
    assert_eq!(node.download(&kept_cid), kept);
    // The store still takes new data after the crash.
    let more = random(1 << 20, 9);
    let more_cid = node.upload(&more);
    assert_eq!(node.download(&more_cid), more);
}

#[test]
fn cli_upload_and_download_through_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("c"), &[]);
    let input = dir.path().join("in.bin");
    let data = random(700_000, 10);
    std::fs::write(&input, &data).unwrap();
    let api = node.url("");
    let up = run(
        &["upload", input.to_str().unwrap(), "--api-url", &api, "--mime-type", "application/x-test"],
        &[],
    );
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let cid = String::from_utf8(up.stdout).unwrap().trim().to_string();
    let item = &node.json("/data")["content"][0];
    assert_eq!(item["cid"], cid.as_str());
    assert_eq!(item["manifest"]["filename"], "in.bin");
    assert_eq!(item["manifest"]["mimetype"], "application/x-test");

    let output = dir.path().join("out.bin");
    let down = run(&["download", &cid, "-o", output.to_str().unwrap(), "--api-url", &api], &[]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), data);
    assert!(!dir.path().join("out.bin.part").exists());

    let missing =
        run(&["download", "zDvZRwzm1NupFAhAYJoPbRHFzhteH6omdGWzY2Ppw881VkWtjYYM", "--api-url", &api], &[]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn configuration_layers_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "api-port = 1111\nblock-size = \"128KiB\"\nlog-level = \"warn\"\n").unwrap();
    let out = run(
        &["start", "--config", file.to_str().unwrap(), "--api-port", "3333", "--print-config"],
        &[("NEVERUST_API_PORT", "2222"), ("NEVERUST_LOG_LEVEL", "debug"), ("NEVERUST_STORAGE_QUOTA", "5GiB")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    for line in [
        "api-port = 3333",
        "log-level = \"debug\"",
        "block-size = \"128KiB\"",
        "storage-quota = \"5GiB\"",
        "api-bindaddr = \"127.0.0.1\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} not in\n{printed}");
    }

    std::fs::write(&file, "api-port = 1111\n\nstorage-qouta = \"1GiB\"\n").unwrap();
    let out = run(&["start", "--config", file.to_str().unwrap(), "--print-config"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 3") && err.contains("storage-qouta"), "{err}");

    let out = run(&["start", "--block-size", "1000", "--print-config"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("block-size"));

    let version = run(&["--version"], &[]);
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("neverust {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn restart_keeps_identity_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("r");
    let node = Node::start(&data_dir, &["--block-size", "512KiB"]);
    let peer = reqwest::blocking::get(node.v1("/peerid")).unwrap().text().unwrap();
    let data = random(2 * 524_288 + 5, 11);
    let cid = node.upload(&data);
    let second = run(
        &["start", "--data-dir", data_dir.to_str().unwrap(), "--api-port", &free_port().to_string()],
        &[],
    );
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already using the data dir"));
    drop(node);
    let node = Node::start(&data_dir, &[]); // another block size for new uploads; old data still reads
    assert_eq!(reqwest::blocking::get(node.v1("/peerid")).unwrap().text().unwrap(), peer);
    assert_eq!(node.download(&cid), data);
    assert_eq!(node.json("/data")["content"][0]["manifest"]["blockSize"], 524_288);
}

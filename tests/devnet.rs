//! `neverust devnet` as a person runs it: the real binary starts Anvil, deploys the contracts and
//! five nodes; the README's tour works against it (upload on the bootstrap node, a storage
//! request that three hosts fill with proofs, two requests at once, a dataset too small to prove
//! refused, the data back byte for byte); SIGTERM stops every
//! process it started; started again from the same `--dir`, the network comes back with its
//! data, its chain and its purchase.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, random};
use serde_json::{Value, json};

/// A base port with `count` free ports from it (the devnet checks again and says if one is taken).
fn free_ports(count: u16) -> u16 {
    loop {
        let base = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base < u16::MAX - count && (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

struct Devnet {
    child: Child,
    output: std::sync::mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Devnet {
    fn start(dir: &std::path::Path, api_port: u16, chain_port: u16) -> Devnet {
        let mut child = Command::new(BIN)
            .args(["devnet", "--nodes", "5", "--proof-samples", "1", "--dir"])
            .arg(dir)
            .args(["--api-port", &api_port.to_string(), "--chain-port", &chain_port.to_string()])
            .env_remove("NEVERUST_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, output) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
        }
        let mut devnet = Devnet { child, output, printed: Vec::new() };
        devnet.wait_for_line("devnet ready", Duration::from_secs(180));
        devnet
    }

    fn wait_for_line(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.printed.iter().any(|l| l.contains(text)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) => self.printed.push(line),
                Err(_) => panic!("no {text:?} within {limit:?}; printed:\n{}", self.printed.join("\n")),
            }
        }
    }

    /// SIGTERM, as a service manager or `kill` sends it; the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the devnet did not stop within a minute");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn get(url: &str) -> Value {
    reqwest::blocking::get(url).unwrap().json().unwrap()
}

fn purchase_state(api: &str, id: &str) -> String {
    get(&format!("{api}/storage/purchases/{id}"))["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn devnet_comes_up_serves_the_tour_stops_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, chain_port) = (free_ports(5), free_ports(1));
    let devnet = Devnet::start(dir.path(), api_port, chain_port);

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("devnet.json")).unwrap()).unwrap();
    let nodes = summary["nodes"].as_array().unwrap();
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["bootstrap", "host", "host", "host", "validator"]);
    let api = nodes[0]["api"].as_str().unwrap().to_string();
    assert_eq!(api, format!("http://127.0.0.1:{api_port}/api/archivist/v1"));
    for node in nodes {
        let info = get(&format!("{}/debug/info", node["api"].as_str().unwrap()));
        assert_eq!(info["id"], node["peerId"]);
        let page = reqwest::blocking::get(node["ui"].as_str().unwrap()).unwrap();
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
    for host in &nodes[1..4] {
        let offers = get(&format!("{}/sales/availability", host["api"].as_str().unwrap()));
        assert_eq!(offers.as_array().unwrap().len(), 1, "each host offers space: {offers}");
    }

    // The README's tour: store a file, request storage for it, watch the request start.
    let data = random(300_000, 9);
    let client = reqwest::blocking::Client::new();
    let upload =
        |data: &[u8]| client.post(format!("{api}/data")).body(data.to_vec()).send().unwrap().text().unwrap();
    let cid = upload(&data);
    let request = json!({"duration": 3600, "pricePerBytePerSecond": "1", "proofProbability": "1",
                         "collateralPerByte": "1", "expiry": 300, "nodes": 3, "tolerance": 1});
    let request_storage =
        |cid: &str| client.post(format!("{api}/storage/request/{cid}")).json(&request).send().unwrap();

    // A dataset too small to give each data slot two blocks cannot be proven: refused at once.
    let response = request_storage(&upload(&random(100_000, 10)));
    assert_eq!(response.status().as_u16(), 422);
    assert!(response.text().unwrap().contains("too few"));

    // Two requests at once (of the same price): both are submitted and start.
    let other = random(300_000, 11);
    let other_cid = upload(&other);
    let ids: Vec<String> = std::thread::scope(|scope| {
        let requests = [&cid, &other_cid].map(|cid| scope.spawn(|| request_storage(cid)));
        requests
            .into_iter()
            .map(|r| {
                let response = r.join().unwrap();
                assert!(response.status().is_success(), "{}", response.text().unwrap());
                response.text().unwrap()
            })
            .collect()
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    for id in &ids {
        while purchase_state(&api, id) != "started" {
            assert!(Instant::now() < deadline, "request {id} did not start: {}", purchase_state(&api, id));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let id = ids[0].clone();
    for host in &nodes[1..4] {
        let sales = get(&format!("{}/sales/slots", host["api"].as_str().unwrap()));
        assert_eq!(sales.as_array().unwrap().len(), 2, "each host filled one slot of each request: {sales}");
    }
    let copy = client.get(format!("{api}/data/{cid}")).send().unwrap().bytes().unwrap();
    assert!(copy == data, "the file downloads byte for byte");

    // SIGTERM stops the whole network: every port is free again.
    let status = devnet.stop();
    assert!(status.success(), "{status}");
    for port in (api_port..api_port + 5).chain([chain_port]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} still taken after the devnet stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Started again from the same directory: same contracts, same data, same purchase.
    let mut devnet = Devnet::start(dir.path(), api_port, chain_port);
    devnet.wait_for_line("contracts already deployed", Duration::from_secs(1));
    assert_eq!(purchase_state(&api, &id), "started");
    let copy = client.get(format!("{api}/data/{cid}")).send().unwrap().bytes().unwrap();
    assert!(copy == data, "the file survives the restart");
    assert!(devnet.stop().success());
}

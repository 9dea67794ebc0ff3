//! End-to-end tests of the real `neverust` binary: separate processes, real LMDB files, real
//! HTTP on loopback, SIGKILL.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Node, free_port, random, run, wait_for};

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
    let mut socket = TcpStream::connect(("127.0.0.1", node.api_port)).unwrap();
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
    // The store checker finds nothing wrong: the half upload is pending, not damage.
    let report = node.kill9();
    drop(socket);
    assert!(report.contains("1 datasets") && report.contains("1 interrupted uploads"), "{report}");

    let node = Node::start(&data_dir, &[]);
    assert!(node.log_text().contains("rolled back uploads interrupted by a crash"), "{}", node.log_text());
    // A running node's store is not checked.
    let busy = run(&["check", "--data-dir", data_dir.to_str().unwrap()], &[]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("already using"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
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

    // A UTF-8 name goes up as RFC 8187 and comes back whole; `-o DIR` keeps it.
    let euro = dir.path().join("\u{20ac} rates.txt");
    std::fs::write(&euro, b"1.08").unwrap();
    let up = run(&["upload", euro.to_str().unwrap(), "--api-url", &api], &[]);
    let euro_cid = String::from_utf8(up.stdout).unwrap().trim().to_string();
    let into = dir.path().join("downloads");
    std::fs::create_dir(&into).unwrap();
    let down = run(&["download", &euro_cid, "-o", into.to_str().unwrap(), "--api-url", &api], &[]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(std::fs::read(into.join("\u{20ac} rates.txt")).unwrap(), b"1.08");

    // A hostile stored name (manifests come from anyone) never becomes a path.
    let hostile = reqwest::blocking::Client::new()
        .post(node.v1("/data"))
        .header("Content-Disposition", "attachment; filename=\"../../escaped.txt\"")
        .body("gotcha")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let down = run(&["download", &hostile, "-o", into.to_str().unwrap(), "--api-url", &api], &[]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(std::fs::read(into.join("escaped.txt")).unwrap(), b"gotcha");
    assert!(
        !dir.path().join("escaped.txt").exists()
            && !dir.path().parent().unwrap().join("escaped.txt").exists()
    );

    let missing =
        run(&["download", "zDvZRwzm1NupFAhAYJoPbRHFzhteH6omdGWzY2Ppw881VkWtjYYM", "--api-url", &api], &[]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// An API bound off loopback needs an access token: without one the node does not start; with
/// a token file it writes a random token there (its owner's only) and answers 401 to anything
/// but /health that does not carry it; the CLI sends it from a file or NEVERUST_API_TOKEN.
#[test]
fn an_api_off_loopback_needs_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    let data_arg = data.to_str().unwrap();
    let open = run(&["start", "--data-dir", data_arg, "--api-bindaddr", "0.0.0.0", "--api-port", "0"], &[]);
    assert!(!open.status.success());
    let err = String::from_utf8_lossy(&open.stderr);
    assert!(err.contains("api-bindaddr") && err.contains("api-token-file"), "{err}");

    let token_file = dir.path().join("api.token");
    let token_arg = token_file.to_str().unwrap();
    let node = Node::start(&data, &["--api-bindaddr", "0.0.0.0", "--api-token-file", token_arg]);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    assert!(token.len() >= 32, "{token:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let anonymous = reqwest::blocking::Client::new();
    assert_eq!(anonymous.get(node.v1("/space")).send().unwrap().status(), 401);
    assert_eq!(anonymous.get(node.url("/metrics")).send().unwrap().status(), 401);
    assert_eq!(anonymous.get(node.url("/health")).send().unwrap().status(), 200);
    assert!(node.json("/space")["quotaMaxBytes"].as_u64().unwrap() > 0);

    let input = dir.path().join("in.bin");
    std::fs::write(&input, random(100_000, 12)).unwrap();
    let api = node.url("");
    let refused = run(&["upload", input.to_str().unwrap(), "--api-url", &api], &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let up = run(&["upload", input.to_str().unwrap(), "--api-url", &api, "--api-token-file", token_arg], &[]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let cid = String::from_utf8(up.stdout).unwrap().trim().to_string();
    let output = dir.path().join("out.bin");
    let down = run(
        &["download", &cid, "-o", output.to_str().unwrap(), "--api-url", &api],
        &[("NEVERUST_API_TOKEN", &token)],
    );
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), std::fs::read(&input).unwrap());
    drop(node);

    // The same token at the next start; a token file others can read is refused.
    let again = Node::start(&data, &["--api-token-file", token_arg]);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert!(again.json("/data")["content"].as_array().unwrap().len() == 1);
    drop(again);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out =
            run(&["start", "--data-dir", data_arg, "--api-port", "0", "--api-token-file", token_arg], &[]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

/// A node started with a circom circuit (`--circom-r1cs/--circom-wasm/--circom-zkey`) loads
/// and checks it at start; a zkey of the wrong hash or a missing file stops it with the reason.
#[test]
fn start_loads_a_circom_circuit() {
    let circuit = |file: &str| format!("{}/../circuits/test/{file}", env!("CARGO_MANIFEST_DIR"));
    let (r1cs, wasm, zkey) = (circuit("circuit.r1cs"), circuit("circuit.wasm"), circuit("circuit.zkey"));
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &dir.path().join("node"),
        &["--circom-r1cs", &r1cs, "--circom-wasm", &wasm, "--circom-zkey", &zkey],
    );
    wait_for(|| node.log_text().contains("proving circuit loaded"), "the circuit loaded");
    assert!(node.log_text().contains("circom circuit of 9 constraints"), "{}", node.log_text());
    drop(node);

    let data_dir = dir.path().join("other");
    let data_dir = data_dir.to_str().unwrap();
    let wrong_hash = "00".repeat(32);
    let out = run(
        &[
            "start",
            "--data-dir",
            data_dir,
            "--api-port",
            "0",
            "--circom-r1cs",
            &r1cs,
            "--circom-wasm",
            &wasm,
            "--circom-zkey",
            &zkey,
            "--proving-key-hash",
            &wrong_hash,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("expected {wrong_hash}")));
    let out = run(&["start", "--data-dir", data_dir, "--circom-r1cs", &r1cs, "--print-config"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("all three or none"));
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

#[test]
fn protect_encodes_a_stored_dataset_into_slots() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("a"), &[]);
    let data = random(3 * 1024 * 1024 + 5, 21); // 49 blocks of 64 KiB
    let cid = node.upload(&data);
    let client = reqwest::blocking::Client::new();
    let protect =
        |cid: &str, query: &str| client.post(node.v1(&format!("/data/{cid}/protect{query}"))).send().unwrap();

    let response = protect(&cid, "?k=3&m=2");
    assert_eq!(response.status(), 201);
    let item: serde_json::Value = response.json().unwrap();
    let protected = item["cid"].as_str().unwrap().to_owned();
    let manifest = &item["manifest"];
    assert_eq!((manifest["ecK"].as_u64(), manifest["ecM"].as_u64()), (Some(3), Some(2)));
    assert_eq!(manifest["originalDatasetSize"].as_u64(), Some(data.len() as u64));
    assert_eq!(manifest["datasetSize"].as_u64(), Some(85 * 65_536), "51 data and padding + 34 parity blocks");
    assert_eq!(manifest["slotRoots"].as_array().unwrap().len(), 5);
    assert!(manifest["verifyRoot"].as_str().unwrap().starts_with('z'));
    assert_eq!(node.download(&protected), data);
    assert_eq!(node.metric("datasets_protected_total"), 1);

    // The protected dataset stands alone: deleting the original leaves it readable.
    assert_eq!(client.delete(node.v1(&format!("/data/{cid}"))).send().unwrap().status(), 204);
    assert_eq!(node.download(&protected), data);

    let fresh = node.upload(&random(100_000, 22));
    for (query, says) in [
        ("?k=1&m=1", "K (data slots) must be at least 2"),
        ("?k=2&m=3", "must not exceed K"),
        ("?k=3", "query parameter m is required"),
        ("?k=x&m=1", "k=x is not a whole number"),
    ] {
        let response = protect(&fresh, query);
        assert_eq!(response.status(), 400, "{query}");
        assert!(response.text().unwrap().contains(says), "{query}");
    }
    assert_eq!(protect(&protected, "?k=3&m=2").status(), 409, "already protected");
}

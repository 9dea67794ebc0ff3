//! The marketplace end to end on a real Anvil, every actor its own `neverust` process on
//! loopback: a client requests storage for a file (K = 3, M = 1); four hosts with
//! availabilities fill the four slots with real Groth16 proofs of the storage-proof circuit
//! and prove period after period; the client drops its own copy; one host is SIGKILLed; the
//! validator marks its missed proofs until the slot is freed; another host repairs the slot,
//! rebuilding it from the three others; the request finishes; the hosts collect payouts and
//! collateral, the client what is left; every token balance is checked to the unit against the
//! marketplace's rules (`chain::walk::rule_deltas`, a model independent of the contract's
//! arithmetic); the file downloads byte-identical from the hosts throughout.
//!
//! The chain runs six times faster than the clock (a block every 500 ms, 3 s apart), with
//! 60-second proof periods; proofs sample one cell (a development key made for the test).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use common::chain::{Miner, dev_key_file};
use common::{Node, random, run};
use neverust::chain::anvil::Anvil;
use neverust::chain::contracts::Marketplace::MarketplaceEvents;
use neverust::chain::deploy::Deployment;
use neverust::chain::events::market_event;
use neverust::chain::market::{Marketplace, slot_id};
use neverust::chain::rpc::RpcChain;
use neverust::chain::walk::{Happened, rule_deltas};
use neverust::chain::{Chain, LogFilter};
use serde_json::{Value, json};

const PERIOD: u64 = 60;
const DURATION: u64 = 1200;
const PRICE: u64 = 1000; // tokens per byte per second
const COLLATERAL: u64 = 2_000_000; // tokens per byte

fn post(node: &Node, path: &str, body: Value) -> (u16, String) {
    let response = reqwest::blocking::Client::new().post(node.v1(path)).json(&body).send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// Polls `condition` every 250 ms for up to `limit`.
fn wait(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A node's sales, by slot id: (slot index, state, repair).
fn sales(node: &Node) -> BTreeMap<String, (u64, String, bool)> {
    let mut out = BTreeMap::new();
    for id in node.json("/sales/slots").as_array().unwrap() {
        let id = id.as_str().unwrap();
        let sale = node.json(&format!("/sales/slots/{id}"));
        out.insert(
            id.to_string(),
            (
                sale["slotIndex"].as_u64().unwrap(),
                sale["state"].as_str().unwrap().to_string(),
                sale["repair"] == true,
            ),
        );
    }
    out
}

#[test]
fn a_storage_request_is_filled_proven_repaired_and_paid_on_anvil() {
    let began = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let anvil = Anvil::spawn(&["--no-mining", "--hardfork", "prague"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(dir.path().to_path_buf());
    let miner_chain = runtime.block_on(async {
        let key = PrivateKeySigner::from_bytes(&anvil.dev_keys()[0]).unwrap();
        Arc::new(RpcChain::connect(&anvil.endpoint(), key, Some(31337)).await.unwrap())
    });
    let _miner = runtime.block_on(async { Miner::start(miner_chain.clone(), Duration::from_millis(500), 3) });

    // A development proving key (one sampled cell), and the marketplace verifying with it.
    let key = dir.path().join("proving.key");
    let out = run(&["proving-key", "--samples", "1", "--seed", "7", "-o", key.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let accounts: Vec<Address> =
        (1..=6).map(|i| PrivateKeySigner::from_bytes(&anvil.dev_keys()[i]).unwrap().address()).collect();
    let deployment_file = dir.path().join("deployment.json");
    let mut args = vec![
        "deploy".to_string(),
        "--eth-provider".into(),
        anvil.endpoint(),
        "-o".into(),
        deployment_file.to_str().unwrap().into(),
        "--proving-key".into(),
        key.to_str().unwrap().into(),
        "--proof-period".into(),
        PERIOD.to_string(),
        "--proof-timeout".into(),
        (PERIOD / 2).to_string(),
    ];
    for account in &accounts {
        args.extend(["--fund".to_string(), account.to_string()]);
    }
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deployment: Deployment =
        serde_json::from_str(&std::fs::read_to_string(&deployment_file).unwrap()).unwrap();

    let start = |name: &str, index: usize, extra: &[&str], bootstrap: Option<&Node>| {
        let key_file = dev_key_file(dir.path(), &anvil, index);
        let mut args = vec![
            "--eth-provider",
            &anvil.endpoint(),
            "--deployment",
            deployment_file.to_str().unwrap(),
            "--eth-private-key",
            key_file.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(boot) = bootstrap {
            args.extend(["--bootstrap-node".to_string(), boot.address()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Node::start(&dir.path().join(name), &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let client = start("client", 1, &[], None);
    let mut hosts: Vec<Option<Node>> = (0..4)
        .map(|i| {
            Some(start(&format!("host{i}"), 2 + i, &["--proving-key", key.to_str().unwrap()], Some(&client)))
        })
        .collect();
    let validator = start("validator", 6, &["--validator"], Some(&client));
    let host_accounts: Vec<Address> = accounts[1..5].to_vec();
    let (client_account, validator_account) = (accounts[0], accounts[5]);

    // Hosts offer space; bad offers are refused with the reason.
    for host in hosts.iter().flatten() {
        let offer = json!({
            "totalSize": 8 << 20,
            "maximumDuration": 3600,
            "minimumPricePerBytePerSecond": "1",
            "maximumCollateralPerByte": COLLATERAL.to_string(),
        });
        let (status, body) = post(host, "/sales/availability", offer);
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = post(
        hosts[0].as_ref().unwrap(),
        "/sales/availability",
        json!({"totalSize": 1u64 << 50, "maximumDuration": 60, "minimumPricePerBytePerSecond": "1", "maximumCollateralPerByte": "1"}),
    );
    assert_eq!(status, 422, "an availability larger than the free space: {body}");
    assert!(body.contains("larger than"), "{body}");

    let data = random(6 * (64 << 10) - 1000, 42); // two blocks a slot
    let cid = client.upload(&data);
    let (status, body) = post(
        &client,
        &format!("/storage/request/{cid}"),
        json!({"duration": 600, "pricePerBytePerSecond": "1", "proofProbability": "1", "collateralPerByte": "1", "expiry": 600}),
    );
    assert_eq!(status, 422, "expiry not before the end: {body}");
    let terms = |price: &str| json!({"duration": 600, "pricePerBytePerSecond": price, "proofProbability": "1", "collateralPerByte": "1", "expiry": 300, "nodes": 4, "tolerance": 1});
    let unknown = "zDvZRwzm5S5sm5LRrGokpxYcRXVU4Pt9FTmktKFzpDUFkTzxMnTB";
    let (status, body) = post(&client, &format!("/storage/request/{unknown}"), terms("1"));
    assert_eq!(status, 404, "an unknown CID: {body}");
    let (status, body) =
        post(&client, &format!("/storage/request/{cid}"), terms("1000000000000000000000000"));
    assert_eq!(status, 422, "more than the client's tokens: {body}");
    assert!(body.contains("costs") && body.contains("has"), "{body}");
    let (status, body) = post(
        &client,
        "/sales/availability",
        json!({"maximumDuration": 60, "minimumPricePerBytePerSecond": "1", "maximumCollateralPerByte": "1"}),
    );
    assert_eq!(status, 422, "a node without a proving circuit cannot sell: {body}");
    let response = reqwest::blocking::Client::new()
        .post(client.v1("/sales/availability"))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let markets: Vec<Marketplace> = runtime.block_on(async {
        let mut out = Vec::new();
        for i in 1..=6 {
            let key = PrivateKeySigner::from_bytes(&anvil.dev_keys()[i]).unwrap();
            let chain: Arc<dyn Chain> =
                Arc::new(RpcChain::connect(&anvil.endpoint(), key, Some(31337)).await.unwrap());
            out.push(Marketplace::connect(chain, deployment.marketplace).await.unwrap());
        }
        out
    });
    let market = markets[0].clone();
    let balance = |who: Address| runtime.block_on(market.token_balance(who)).unwrap();
    let everyone: Vec<Address> = accounts.iter().copied().chain([deployment.marketplace]).collect();
    let before: BTreeMap<Address, U256> = everyone.iter().map(|a| (*a, balance(*a))).collect();

    let requested = Instant::now();
    let (status, id) = post(
        &client,
        &format!("/storage/request/{cid}"),
        json!({
            "duration": DURATION,
            "pricePerBytePerSecond": PRICE.to_string(),
            "proofProbability": "1",
            "collateralPerByte": COLLATERAL.to_string(),
            "expiry": 300,
            "nodes": 4,
            "tolerance": 1,
        }),
    );
    assert_eq!(status, 200, "{id}");
    let request_id: B256 = id.parse().unwrap();
    wait(Duration::from_secs(240), "the request to start", || {
        client.json(&format!("/storage/purchases/{id}"))["state"] == "started"
    });
    println!("request to started on Anvil: {:.1} s", requested.elapsed().as_secs_f64());
    assert_eq!(client.download(&cid), data);

    // Each host filled one slot and proves it.
    let mut slot_of_host = BTreeMap::new();
    wait(Duration::from_secs(120), "every host proving", || {
        hosts.iter().flatten().all(|h| sales(h).values().any(|(_, state, _)| state == "SaleProving"))
    });
    for (i, host) in hosts.iter().enumerate() {
        let held = sales(host.as_ref().unwrap());
        assert_eq!(held.len(), 1, "host {i} sells {held:?}");
        slot_of_host.insert(i, held.values().next().unwrap().0);
    }
    wait(Duration::from_secs(120), "two proofs from every host", || {
        hosts.iter().flatten().all(|h| h.metric("market_proofs_submitted_total") >= 2)
    });

    // The client keeps nothing: from now on the hosts' slots are the only copies, so a repair
    // must rebuild the lost slot from the others. Downloads go through the validator, which
    // drops each copy it fetched.
    let protected = client.json(&format!("/storage/purchases/{id}"))["request"]["content"]["cid"]
        .as_str()
        .unwrap()
        .to_owned();
    client.delete(&protected);
    client.delete(&cid);
    let download = || {
        let bytes = validator.stream_from_network(&protected);
        wait(Duration::from_secs(20), "the downloaded copy listed", || validator.lists(&protected));
        validator.delete(&protected);
        bytes
    };
    assert!(download() == data, "the hosts serve the file");

    // A host dies: its proofs are marked missing until the slot is freed, and another host
    // repairs it.
    let victim = 3;
    let lost_slot = slot_of_host[&victim];
    hosts[victim].take().unwrap().kill9();
    let lost_id = slot_id(request_id, lost_slot).to_string();
    wait(Duration::from_secs(300), "the lost slot repaired", || {
        hosts.iter().flatten().any(|h| {
            h.json(&format!("/sales/slots/{lost_id}")).get("state").is_some_and(|s| s == "SaleProving")
        })
    });
    // The host proving the lost slot now (others may have tried and lost the race).
    let repairer = (0..3)
        .find(|&i| {
            let sale = hosts[i].as_ref().unwrap().json(&format!("/sales/slots/{lost_id}"));
            sale["repair"] == true && sale["state"] == "SaleProving"
        })
        .unwrap();
    let repairer_node = hosts[repairer].as_ref().unwrap();
    assert!(repairer_node.metric("blocks_recovered_total") > 0, "the lost slot was rebuilt, not fetched");
    assert!(download() == data, "the file after the repair");

    wait(Duration::from_secs(600), "the request to finish", || {
        client.json(&format!("/storage/purchases/{id}"))["state"] == "finished"
    });
    wait(Duration::from_secs(120), "payouts collected", || {
        hosts.iter().flatten().all(|h| h.json("/sales/slots").as_array().unwrap().is_empty())
    });
    wait(Duration::from_secs(60), "the client's withdrawal", || {
        runtime.block_on(market.request_state(request_id)).is_ok()
            && std::fs::read_to_string(dir.path().join("client.log")).unwrap().contains("withdrew")
    });

    // The balances, to the unit, against the rules.
    let config = market.config().clone();
    let request = runtime.block_on(market.request(request_id)).unwrap();
    let end = runtime.block_on(market.request_end(request_id)).unwrap();
    let mut events: Vec<(u64, Happened)> = Vec::new();
    let head = runtime.block_on(market.chain().head()).unwrap().number;
    let logs = runtime
        .block_on(market.chain().logs(LogFilter {
            address: deployment.marketplace,
            from_block: 0,
            to_block: head,
        }))
        .unwrap();
    let mut filled_once = std::collections::BTreeSet::new();
    for log in &logs {
        if let Some(MarketplaceEvents::SlotFilled(e)) = market_event(log)
            && e.requestId == request_id
        {
            let at = runtime.block_on(block_timestamp(&miner_chain, log.block));
            let repair = !filled_once.insert(e.slotIndex);
            let sid = slot_id(request_id, e.slotIndex);
            let host = runtime.block_on(host_at(&miner_chain, deployment.marketplace, sid, log.block));
            assert!(host_accounts.contains(&host), "slot {} filled by {host}", e.slotIndex);
            if repair {
                assert_eq!(host, host_accounts[repairer], "the repair's host");
            } else {
                assert_eq!(
                    e.slotIndex,
                    slot_of_host[&host_accounts.iter().position(|h| *h == host).unwrap()]
                );
            }
            events.push((log.block, Happened::Fill { slot: e.slotIndex, host, at, repair }));
        }
    }
    let marks = std::fs::read_to_string(dir.path().join("validator.log")).unwrap();
    for line in marks.lines().filter(|l| l.contains("marked a missed proof")) {
        let slot = slot_of_line(line, request_id);
        // Slashes happen between the fills they follow; the block is the order that matters.
        let block = block_of_line(line);
        events.push((block, Happened::Slash { slot, validator: validator_account }));
    }
    events.sort_by_key(|(block, _)| *block);
    let deltas = rule_deltas(client_account, &request.ask, &config, &events, end).unwrap();
    for account in &everyone {
        let expected = before[account].to::<i128>() + deltas.get(account).copied().unwrap_or(0);
        assert_eq!(balance(*account).to::<i128>(), expected, "balance of {account} ({events:?})");
    }
    let slashes = events.iter().filter(|(_, e)| matches!(e, Happened::Slash { .. })).count();
    assert!(slashes >= 2, "the dead host was slashed out: {events:?}");
    drop(validator);
    println!(
        "market walk on Anvil: {:.0} s, {} slashes, repaired by host {repairer}",
        began.elapsed().as_secs_f64(),
        slashes
    );
}

/// The slot's host as of block `number` (the host a fill in that block made).
async fn host_at(chain: &RpcChain, marketplace: Address, slot: B256, number: u64) -> Address {
    use alloy_sol_types::SolCall;
    let call = neverust::chain::contracts::Marketplace::getHostCall { slotId: slot };
    let tx = json!({ "to": marketplace, "data": alloy::primitives::Bytes::from(call.abi_encode()) });
    let out: alloy::primitives::Bytes = chain.raw("eth_call", (tx, format!("{number:#x}"))).await.unwrap();
    neverust::chain::contracts::Marketplace::getHostCall::abi_decode_returns(&out).unwrap()
}

async fn block_timestamp(chain: &RpcChain, number: u64) -> u64 {
    let block: Value = chain.raw("eth_getBlockByNumber", (format!("{number:#x}"), false)).await.unwrap();
    u64::from_str_radix(block["timestamp"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// The slot index a validator's "marked a missed proof" line names.
fn slot_of_line(line: &str, request: B256) -> u64 {
    let id: B256 = field(line, "slot=").parse().unwrap();
    (0..4).find(|&i| slot_id(request, i) == id).expect("a slot of the request")
}

fn block_of_line(line: &str) -> u64 {
    field(line, "block=").parse().unwrap()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(name)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

/// Prints the end of every node's log when the test fails.
struct LogsOnFailure(std::path::PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("==== {} (last 60 lines)", path.display());
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

//! The chain end to end on a real Anvil: a request's whole life through the production
//! adapter (alloy over JSON-RPC) with real Groth16 proofs of the stand-in circuit, typed
//! reverts, `neverust deploy`, and a node's start against a chain that is wrong in each way
//! it can be.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use common::chain::{Miner, dev_key_file};
use common::run;
use neverust::chain::anvil::Anvil;
use neverust::chain::contracts::Marketplace::MarketplaceEvents;
use neverust::chain::contracts::{Groth16Verifier, Marketplace as M};
use neverust::chain::deploy::{self, Deployment};
use neverust::chain::events::{EventFollower, market_event};
use neverust::chain::market::{Ask, Content, Marketplace, Request, public_inputs, slot_id};
use neverust::chain::rpc::{RpcChain, RpcSettings};
use neverust::chain::walk::{ProofMaker, StandInProofs, Walk};
use neverust::chain::{Chain, ChainError, Transaction};
use neverust::proofs::stand_in::StandInProver;

const TOKENS: u128 = 1_000_000_000_000;

async fn account(anvil: &Anvil, index: usize) -> Arc<dyn Chain> {
    let key = PrivateKeySigner::from_bytes(&anvil.dev_keys()[index]).unwrap();
    Arc::new(RpcChain::connect(&anvil.endpoint(), key, Some(31337)).await.unwrap())
}

/// The first development account, past block 256.
async fn deployer(anvil: &Anvil) -> Arc<RpcChain> {
    let key = PrivateKeySigner::from_bytes(&anvil.dev_keys()[0]).unwrap();
    let deployer = Arc::new(RpcChain::connect(&anvil.endpoint(), key, Some(31337)).await.unwrap());
    deployer.raw::<_, serde_json::Value>("anvil_mine", ("0x12c",)).await.unwrap();
    deployer
}

/// A marketplace with the stand-in circuit's verifier.
async fn deployed(deployer: &RpcChain, prover: &StandInProver, period: u64) -> Deployment {
    let mut config = deploy::default_config();
    config.proofs.period = period;
    config.proofs.timeout = period / 2;
    deploy::deploy(deployer, &config, prover.verifier().to_chain(), None).await.unwrap()
}

fn request(client: Address, nonce: u8) -> Request {
    Request {
        client,
        ask: Ask {
            proofProbability: U256::from(1),
            pricePerBytePerSecond: U256::from(10),
            collateralPerByte: U256::from(1_000),
            slots: 3,
            slotSize: 1024,
            duration: 400,
            maxSlotLoss: 1,
        },
        content: Content {
            cid: Bytes::from_static(b"zDvZRwzm-stand-in"),
            merkleRoot: B256::from(U256::from(0x0da7_a5e7_u64).to_le_bytes::<32>()),
        },
        expiry: 120,
        nonce: B256::repeat_byte(nonce),
    }
}

/// A request's whole life through the production adapter on a real Anvil: requested, three
/// slots filled with Groth16 proofs, proofs in every period they are required, a silent host
/// slashed by a validator (who is paid) until its slot is freed, the slot repaired by a
/// spare host, the request finished, payouts and the refund; every balance checked to the
/// unit (the walk compares them with the marketplace's rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_walks_through_its_life_on_anvil() {
    let anvil = Anvil::spawn(&["--no-mining", "--hardfork", "prague"]).unwrap();
    let prover = StandInProver::setup(7);
    let deployer = deployer(&anvil).await;
    let _miner = Miner::start(deployer.clone(), Duration::from_millis(100), 2);
    let deployment = deployed(&deployer, &prover, 20).await;
    let market = Marketplace::connect(deployer.clone(), deployment.marketplace).await.unwrap();
    let mut actors = Vec::new();
    for index in 1..=6 {
        let chain = account(&anvil, index).await;
        deploy::mint(&*deployer, deployment.token, chain.account(), U256::from(TOKENS)).await.unwrap();
        actors.push(market.with_chain(chain));
    }
    let validator = actors.pop().unwrap();
    let client = actors.remove(0);
    let walk =
        Walk { request: request(client.account(), 1), client, hosts: actors, validator, silent_slot: 1 };
    let report = walk.run(Arc::new(StandInProofs::new(prover))).await.unwrap();
    println!("walk: {report:?}");
    assert_eq!((report.fills, report.repairs), (3, 1));
    assert!(report.slashes >= 2, "the silent host was slashed until its slot was freed");
    assert!(report.proofs > 0);
    assert_eq!(
        report.balances.get(&deployment.marketplace),
        Some(&U256::ZERO),
        "the marketplace owes nothing"
    );

    // Following the marketplace's events from its deployment reads the whole story back.
    let mut follower = EventFollower::new(deployer.clone(), deployment.marketplace, deployment.block, 0);
    let head = deployer.head().await.unwrap();
    let mut names = std::collections::BTreeMap::<&str, usize>::new();
    while follower.next_block() <= head.number {
        let (_, logs) = follower.next().await.unwrap();
        for event in logs.iter().filter_map(market_event) {
            let name = match event {
                MarketplaceEvents::StorageRequested(_) => "requested",
                MarketplaceEvents::SlotFilled(_) => "filled",
                MarketplaceEvents::SlotFreed(_) => "freed",
                MarketplaceEvents::RequestFulfilled(_) => "started",
                MarketplaceEvents::ProofSubmitted(_) => "proof",
                _ => "other",
            };
            *names.entry(name).or_default() += 1;
        }
    }
    // With confirmations, the newest blocks wait until that many are built on them.
    let mut confirmed = EventFollower::new(deployer.clone(), deployment.marketplace, deployment.block, 3);
    let (last, _) = confirmed.next().await.unwrap();
    assert!(last + 3 <= deployer.head().await.unwrap().number, "read block {last} unconfirmed");
    let counts = (names["requested"], names["filled"], names["freed"], names["started"]);
    assert_eq!(counts, (1, 4, 1, 1), "{names:?}");
    assert_eq!(names["proof"] as u64, report.proofs + 4, "each fill carries a proof too");
}

/// Every kind of revert reaches the caller as a typed error naming the contract's error:
/// the marketplace's own, the token's (passed through), the verifier's at deployment, and a
/// transaction that reverts only once mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverts_reach_the_caller_as_named_errors() {
    let anvil = Anvil::spawn(&["--hardfork", "prague"]).unwrap();
    let prover = StandInProver::setup(7);
    let deployer = deployer(&anvil).await;
    let deployment = deployed(&deployer, &prover, 60).await;
    let client = Marketplace::connect(account(&anvil, 1).await, deployment.marketplace).await.unwrap();
    let host = client.with_chain(account(&anvil, 2).await);
    let request = request(client.account(), 2);

    // The token's error: no tokens, so the approval is there but the transfer fails.
    let error = client.request_storage(&request).await.unwrap_err();
    assert_eq!(error.revert().map(|r| r.name()), Some("ERC20InsufficientBalance"), "{error}");
    deploy::mint(&*deployer, deployment.token, client.account(), U256::from(TOKENS)).await.unwrap();
    let id = client.request_storage(&request).await.unwrap();

    // The marketplace's: filling without a reservation, marking a period not ended.
    let proof = M::Groth16Proof::default();
    let error = host.fill_slot(id, 0, proof).await.unwrap_err();
    assert!(error.is(M::Marketplace_ReservationRequired {}), "{error}");
    assert_eq!(error.to_string(), "Marketplace_ReservationRequired");
    let error = host.view(M::getRequestCall { requestId: B256::ZERO }).await.unwrap_err();
    assert!(error.is(M::Marketplace_UnknownRequest {}), "{error}");
    let error = host.can_mark_proof_as_missing(slot_id(id, 0), 1).await.unwrap_err();
    assert!(error.is(M::Marketplace_SlotNotAcceptingProofs {}), "a free slot: {error}");

    // The verifier's, at deployment.
    let mut key = prover.verifier().to_chain();
    key.ic.clear();
    let code = [
        Groth16Verifier::BYTECODE.as_ref(),
        &alloy_sol_types::SolConstructor::abi_encode(&Groth16Verifier::constructorCall { key }),
    ]
    .concat();
    let error = deployer
        .send(Transaction { to: None, data: code.into(), gas_padding_percent: 20 })
        .await
        .unwrap_err();
    assert_eq!(error.revert().map(|r| r.name()), Some("Groth16_InvalidVerifyingKey"), "{error}");

    // Reverted once mined: two hosts fill one slot in the same block. Both estimates pass
    // (the slot is free in the newest block); the second transaction reverts in the block.
    let other = client.with_chain(account(&anvil, 3).await);
    let collateral = neverust::chain::market::collateral_per_slot(&request.ask);
    for h in [&host, &other] {
        deploy::mint(&*deployer, deployment.token, h.account(), U256::from(TOKENS)).await.unwrap();
        h.approve(collateral).await.unwrap();
        h.reserve_slot(id, 0).await.unwrap();
    }
    let proofs = Arc::new(StandInProofs::new(prover));
    let fill = |m: Marketplace| {
        let (root, proofs) = (request.content.merkleRoot, proofs.clone());
        async move {
            let challenge = m.challenge(slot_id(id, 0)).await?;
            let proof = proofs.prove(public_inputs(challenge, root, 0));
            m.transact(M::fillSlotCall { requestId: id, slotIndex: 0, proof }, 10).await
        }
    };
    // The proofs prove the challenge of the newest block, which moves when the period turns
    // or the pointer wraps: keep the racing block in the newest block's period and away from
    // the wrap, so that what decides the race is the slot, not the challenge.
    let start = host.period_end(host.period_of(deployer.head().await.unwrap().timestamp));
    let mine_at = |timestamp: u64| {
        let deployer = deployer.clone();
        async move {
            deployer.raw::<_, serde_json::Value>("evm_setNextBlockTimestamp", (timestamp,)).await.unwrap();
            deployer.raw::<_, serde_json::Value>("evm_mine", ()).await.unwrap();
        }
    };
    mine_at(start).await;
    if host.view(M::getPointerCall { id: slot_id(id, 0) }).await.unwrap() == u8::MAX {
        mine_at(start + 1).await;
    }
    deployer.raw::<_, serde_json::Value>("evm_setNextBlockTimestamp", (start + 2,)).await.unwrap();
    deployer.raw::<_, serde_json::Value>("evm_setAutomine", (false,)).await.unwrap();
    let racing = [tokio::spawn(fill(host.clone())), tokio::spawn(fill(other.clone()))];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pool: serde_json::Value = deployer.raw("txpool_status", ()).await.unwrap();
        if pool["pending"].as_str() == Some("0x2") || pool["pending"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the two fills never reached the pool: {pool}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deployer.raw::<_, serde_json::Value>("evm_mine", ()).await.unwrap();
    let mut results = Vec::new();
    for task in racing {
        results.push(task.await.unwrap());
    }
    let errors: Vec<&ChainError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "one fill wins: {results:?}");
    assert!(errors[0].is(M::Marketplace_SlotNotFree {}), "the loser learns why: {}", errors[0]);
}

/// `neverust deploy` mines past block 256, deploys, funds, and writes the deployment a node
/// starts from.
#[test]
fn deploy_then_start_a_node() {
    let began = Instant::now();
    let anvil = Anvil::spawn(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployment.json");
    let funded = "0x000000000000000000000000000000000000f00d";
    let out = run(
        &["deploy", "--eth-provider", &anvil.endpoint(), "-o", file.to_str().unwrap(), "--fund", funded],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("mined 257 blocks"), "{stdout}");
    println!("Anvil start to contracts deployed: {:?}", began.elapsed());
    let deployment: Deployment = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(deployment.chain_id, 31337);
    let key = dev_key_file(dir.path(), &anvil, 4);
    let node = common::Node::start(
        &dir.path().join("node"),
        &[
            "--eth-provider",
            &anvil.ws_endpoint(),
            "--deployment",
            file.to_str().unwrap(),
            "--eth-private-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(node.log_text().contains("marketplace connected"), "{}", node.log_text());
    assert!(stdout.contains(&format!("funded {}", funded.parse::<Address>().unwrap())), "{stdout}");
}

/// A node given a chain that is wrong in any way stops at once with an error that says so.
#[test]
fn a_node_refuses_a_wrong_chain_at_start() {
    let anvil = Anvil::spawn(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployment.json");
    let out = run(&["deploy", "--eth-provider", &anvil.endpoint(), "-o", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deployment: Deployment = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let key = dev_key_file(dir.path(), &anvil, 5);
    let key = key.to_str().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let start = |extra: &[&str]| {
        let began = Instant::now();
        let mut args =
            vec!["start", "--data-dir", data, "--api-port", "0", "--listen-addrs", "/ip4/127.0.0.1/tcp/0"];
        args.extend_from_slice(extra);
        let out = run(&args, &[]);
        assert!(!out.status.success(), "started with {extra:?}");
        (String::from_utf8_lossy(&out.stderr).to_string(), began.elapsed())
    };
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let market = deployment.marketplace.to_string();
    let (error, took) =
        start(&["--eth-provider", &closed, "--marketplace-address", &market, "--eth-private-key", key]);
    assert!(error.contains("unreachable"), "{error}");
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");

    let mut wrong = deployment.clone();
    wrong.chain_id = 1;
    let wrong_file = dir.path().join("wrong.json");
    std::fs::write(&wrong_file, serde_json::to_string(&wrong).unwrap()).unwrap();
    let (error, _) = start(&[
        "--eth-provider",
        &anvil.endpoint(),
        "--deployment",
        wrong_file.to_str().unwrap(),
        "--eth-private-key",
        key,
    ]);
    assert!(error.contains("on chain 31337, not the configured chain 1"), "{error}");

    let token = deployment.token.to_string();
    let (error, _) = start(&[
        "--eth-provider",
        &anvil.endpoint(),
        "--marketplace-address",
        &token,
        "--eth-private-key",
        key,
    ]);
    assert!(error.contains(&format!("the contract at {token} is not the one expected")), "{error}");
    let nothing = "0x00000000000000000000000000000000000000aa";
    let (error, _) = start(&[
        "--eth-provider",
        &anvil.endpoint(),
        "--marketplace-address",
        nothing,
        "--eth-private-key",
        key,
    ]);
    assert!(error.to_lowercase().contains(&format!("no contract at {nothing}")), "{error}");

    // No key given on a local chain: the node makes one, which has no ether.
    let (error, _) = start(&["--eth-provider", &anvil.endpoint(), "--deployment", file.to_str().unwrap()]);
    assert!(
        error.contains("has no ether on chain 31337") && error.contains("neverust deploy --fund"),
        "{error}"
    );
    assert!(dir.path().join("data").join("eth.key").exists(), "the key was kept for next time");
}

/// Archivist's example proof verifies under Archivist's deployed key in our verifier on a
/// real Anvil, and a changed public signal does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archivist_proof_verifies_on_anvil() {
    use neverust::proofs::groth16::{Verifier, fr_to_u256, proof_from_snarkjs, public_inputs_from_snarkjs};
    let anvil = Anvil::spawn(&[]).unwrap();
    let deployer = deployer(&anvil).await;
    let key =
        Verifier::from_snarkjs(include_str!("../node/src/proofs/fixtures/proof_main_verification_key.json"))
            .unwrap();
    let code = [
        Groth16Verifier::BYTECODE.as_ref(),
        &alloy_sol_types::SolConstructor::abi_encode(&Groth16Verifier::constructorCall {
            key: key.to_chain(),
        }),
    ]
    .concat();
    let receipt =
        deployer.send(Transaction { to: None, data: code.into(), gas_padding_percent: 20 }).await.unwrap();
    let verifier = receipt.contract_address.unwrap();
    let proof = proof_to_chain_verifier(
        &proof_from_snarkjs(include_str!("../node/src/proofs/fixtures/proof.json")).unwrap(),
    );
    let inputs: Vec<U256> =
        public_inputs_from_snarkjs(include_str!("../node/src/proofs/fixtures/public.json"))
            .unwrap()
            .iter()
            .map(fr_to_u256)
            .collect();
    let verify = |signals: Vec<U256>| {
        let call = Groth16Verifier::verifyCall { proof: proof.clone(), pubSignals: signals };
        let deployer = deployer.clone();
        async move { neverust::chain::market::view(&*deployer, verifier, call).await.unwrap() }
    };
    assert!(verify(inputs.clone()).await, "Archivist's proof under Archivist's key");
    let mut changed = inputs.clone();
    changed[0] += U256::from(1);
    assert!(!verify(changed).await, "a changed entropy");
}

fn proof_to_chain_verifier(proof: &ark_groth16::Proof<ark_bn254::Bn254>) -> Groth16Verifier::Groth16Proof {
    neverust::proofs::groth16::proof_to_chain(proof).into()
}

/// A transaction the pool forgets is sent again, with higher fees, and mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_sent_again() {
    let anvil = Anvil::spawn(&["--no-mining"]).unwrap();
    let deployer = deployer(&anvil).await;
    let sender = account(&anvil, 1).await;
    let to = Address::repeat_byte(0x42);
    let send = tokio::spawn(async move {
        sender.send(Transaction { to: Some(to), data: Bytes::new(), gas_padding_percent: 0 }).await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pool: serde_json::Value = deployer.raw("txpool_status", ()).await.unwrap();
        if pool["pending"].as_str() == Some("0x1") {
            break;
        }
        assert!(Instant::now() < deadline, "the transaction never reached the pool");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deployer.raw::<_, serde_json::Value>("anvil_dropAllTransactions", ()).await.unwrap();
    let _miner = Miner::start(deployer.clone(), Duration::from_millis(100), 1);
    let receipt = send.await.unwrap().expect("sent again and mined");
    let tx: serde_json::Value = deployer.raw("eth_getTransactionByHash", (receipt.tx_hash,)).await.unwrap();
    assert_eq!(tx["nonce"].as_str(), Some("0x0"), "the same nonce");
}

/// A transaction given up on as not mined (no blocks came, so the time limit ended each
/// wait) is not left in the pool to hold up the account: the next transaction takes its
/// nonce, with higher fees, and only that one is mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_given_up_on_is_replaced_by_the_next() {
    let anvil = Anvil::spawn(&["--no-mining"]).unwrap();
    let deployer = deployer(&anvil).await;
    let key = PrivateKeySigner::from_bytes(&anvil.dev_keys()[1]).unwrap();
    let settings = RpcSettings {
        replace_after_blocks: 1_000,
        replace_after_time: Duration::from_millis(300),
        replacements_max: 1,
        ..RpcSettings::for_endpoint(&anvil.endpoint())
    };
    let sender = RpcChain::connect_with(&anvil.endpoint(), key, Some(31337), settings).await.unwrap();
    let (first, second) = (Address::repeat_byte(0x41), Address::repeat_byte(0x42));
    let error =
        sender.send(Transaction { to: Some(first), data: Bytes::new(), gas_padding_percent: 0 }).await;
    assert!(matches!(error, Err(ChainError::NotMined { nonce: 0, attempts: 2 })), "{error:?}");

    let sender = Arc::new(sender);
    let next = sender.clone();
    let send = tokio::spawn(async move {
        next.send(Transaction { to: Some(second), data: Bytes::new(), gas_padding_percent: 0 }).await
    });
    // Mining starts once the next transaction has taken the first one's place in the pool.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pool: serde_json::Value = deployer.raw("txpool_content", ()).await.unwrap();
        if pool.to_string().to_lowercase().contains(&format!("{second:#x}")) {
            break;
        }
        assert!(Instant::now() < deadline, "the next transaction never reached the pool: {pool}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _miner = Miner::start(deployer.clone(), Duration::from_millis(100), 1);
    let receipt = send.await.unwrap().expect("the next transaction is mined");
    let tx: serde_json::Value = deployer.raw("eth_getTransactionByHash", (receipt.tx_hash,)).await.unwrap();
    assert_eq!(tx["nonce"].as_str(), Some("0x0"), "it took the nonce given up on");
    assert_eq!(tx["to"].as_str().map(str::to_lowercase), Some(format!("{second:#x}")));
    let count: String = deployer.raw("eth_getTransactionCount", (sender.account(), "latest")).await.unwrap();
    assert_eq!(count, "0x1", "the one given up on was never mined");
}

//! The contract tests' harness: the committed contracts deployed on a `ModeledChain` (revm,
//! in process), typed calls that mine a block each, views, time, and stand-in Groth16 proofs
//! of the current challenge.
#![allow(dead_code)] // each test file uses its part

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Bytes, Log, U256};
use alloy_sol_types::{SolCall, SolConstructor};
use neverust::chain::Revert;
use neverust::chain::contracts::{Groth16Verifier, Marketplace as M, TestToken};
use neverust::proofs::groth16::{fr_from_u256, proof_to_chain};
use neverust::proofs::stand_in::{StandInInputs, StandInProver};
use neverust_sim::evm::{CallOutcome, ChainParams, ModeledChain, Receipt, TxRequest};

pub use M::{Ask, Content, MarketplaceConfig, Request};
#[allow(unused_imports)] // each test file uses its part
pub use neverust::chain::market::{
    collateral_per_slot, max_price, price_per_slot_per_second, public_inputs, request_id, slot_id,
};

pub const DEPLOYER: Address = Address::repeat_byte(0xde);
pub const ETHER: u128 = 1_000_000_000_000_000_000;
/// Gas limit of every transaction: high, so that reverts happen on chain, not at estimation.
const GAS_LIMIT: u64 = 10_000_000;
/// Seed of the stand-in circuit's setup.
pub const SETUP_SEED: u64 = 42;

/// Request states and slot states, as the contract numbers them.
pub mod state {
    pub const NEW: u8 = 0;
    pub const STARTED: u8 = 1;
    pub const CANCELLED: u8 = 2;
    pub const FINISHED: u8 = 3;
    pub const FAILED: u8 = 4;

    pub const FREE: u8 = 0;
    pub const FILLED: u8 = 1;
    pub const SLOT_FINISHED: u8 = 2;
    pub const SLOT_FAILED: u8 = 3;
    pub const PAID: u8 = 4;
    pub const SLOT_CANCELLED: u8 = 5;
    pub const REPAIR: u8 = 6;
}

/// The i-th test account (clients, hosts, validators), funded with ether at genesis.
pub fn account(i: u8) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xac;
    bytes[19] = i;
    Address::from(bytes)
}

/// Archivist's defaults, but for proofs: every period challenges (probability 1) and no
/// downtime, so a test knows when a proof is required.
pub fn config() -> MarketplaceConfig {
    let mut config = neverust::chain::deploy::default_config();
    config.proofs.period = 60;
    config.proofs.downtime = 0;
    config
}

/// A valid ask: 3 slots of 1 KiB for an hour.
pub fn ask() -> Ask {
    Ask {
        proofProbability: U256::from(1),
        pricePerBytePerSecond: U256::from(10),
        collateralPerByte: U256::from(1_000),
        slots: 3,
        slotSize: 1024,
        duration: 3600,
        maxSlotLoss: 1,
    }
}

pub struct Harness {
    pub chain: ModeledChain,
    pub token: Address,
    pub verifier: Address,
    pub market: Address,
    pub prover: StandInProver,
    pub config: MarketplaceConfig,
    /// Gas used by successful marketplace transactions, per function signature.
    pub gas: BTreeMap<&'static str, Vec<u64>>,
    proofs_made: u64,
    nonces: u64,
}

impl Harness {
    /// The token, the verifier (with the stand-in circuit's key) and a marketplace with
    /// `config`, deployed after 256 blocks, as a deployment script does.
    pub fn new(config: MarketplaceConfig) -> Harness {
        Harness::try_new(config).unwrap_or_else(|revert| panic!("deployment reverted: {revert}"))
    }

    pub fn try_new(config: MarketplaceConfig) -> Result<Harness, Revert> {
        let mut harness = Harness::bare();
        harness.chain.mine_many(256, 1);
        let token =
            harness.create(TestToken::BYTECODE.as_ref(), TestToken::constructorCall {}.abi_encode())?;
        let key = harness.prover.verifier().to_chain();
        let verifier = harness.create(
            Groth16Verifier::BYTECODE.as_ref(),
            Groth16Verifier::constructorCall { key }.abi_encode(),
        )?;
        let market = harness.create(
            M::BYTECODE.as_ref(),
            M::constructorCall { config: config.clone(), token_: token, verifier }.abi_encode(),
        )?;
        harness.token = token;
        harness.verifier = verifier;
        harness.market = market;
        harness.config = config;
        Ok(harness)
    }

    /// A chain with funded accounts and nothing deployed.
    pub fn bare() -> Harness {
        let mut alloc = vec![(DEPLOYER, U256::from(1_000 * ETHER))];
        alloc.extend((0..=40).map(|i| (account(i), U256::from(1_000 * ETHER))));
        Harness {
            chain: ModeledChain::new(ChainParams::default(), &alloc),
            token: Address::ZERO,
            verifier: Address::ZERO,
            market: Address::ZERO,
            prover: StandInProver::setup(SETUP_SEED),
            config: config(),
            gas: BTreeMap::new(),
            proofs_made: 0,
            nonces: 0,
        }
    }

    /// Deploys `code ++ args`; the created address, or the constructor's revert.
    pub fn create(&mut self, code: &[u8], args: Vec<u8>) -> Result<Address, Revert> {
        let data = [code, &args].concat();
        let receipt = self.transact(DEPLOYER, None, data.into())?;
        Ok(receipt.contract_address.expect("a successful creation has an address"))
    }

    pub fn now(&self) -> u64 {
        self.chain.head().timestamp
    }

    /// The period the head block is in.
    pub fn period(&self) -> u64 {
        self.now() / self.config.proofs.period
    }

    /// Lets time pass: mines an empty block `seconds` later.
    pub fn advance(&mut self, seconds: u64) {
        let next = self.now() + seconds;
        self.chain.mine(next);
    }

    /// Mines empty blocks until the head is at the start of the next period.
    pub fn next_period(&mut self) {
        let period = self.config.proofs.period;
        let next = (self.now() / period + 1) * period;
        self.chain.mine(next);
    }

    /// Sends a transaction and mines it in a block one second after the head.
    pub fn transact(&mut self, from: Address, to: Option<Address>, data: Bytes) -> Result<Receipt, Revert> {
        let tx = TxRequest {
            from,
            to,
            data,
            value: U256::ZERO,
            nonce: self.chain.pending_nonce(from),
            gas_limit: GAS_LIMIT,
            max_fee_per_gas: 2 * u128::from(self.chain.next_base_fee()) + 1,
            max_priority_fee_per_gas: 1,
        };
        let hash = self.chain.submit(tx).expect("the pool takes the harness's transactions");
        self.advance(1);
        let receipt = self.chain.receipt(&hash).expect("mined in the next block").clone();
        if receipt.success { Ok(receipt) } else { Err(Revert::decode(&receipt.output)) }
    }

    /// Calls the marketplace in a transaction; its logs, or its revert.
    pub fn send<C: SolCall>(&mut self, from: Address, call: C) -> Result<Vec<Log>, Revert> {
        let receipt = self.transact(from, Some(self.market), call.abi_encode().into())?;
        self.gas.entry(C::SIGNATURE).or_default().push(receipt.gas_used);
        Ok(receipt.logs)
    }

    /// Calls another contract (the token) in a transaction.
    pub fn send_to<C: SolCall>(&mut self, to: Address, from: Address, call: C) -> Result<Vec<Log>, Revert> {
        Ok(self.transact(from, Some(to), call.abi_encode().into())?.logs)
    }

    /// A view of the marketplace, in the head block.
    pub fn view<C: SolCall>(&mut self, from: Address, call: C) -> Result<C::Return, Revert> {
        self.view_of(self.market, from, call)
    }

    pub fn view_of<C: SolCall>(&mut self, to: Address, from: Address, call: C) -> Result<C::Return, Revert> {
        match self.chain.call(from, to, call.abi_encode().into()) {
            CallOutcome::Success(data) => {
                Ok(C::abi_decode_returns(&data).expect("the ABI decodes its own returns"))
            }
            CallOutcome::Revert(data) => Err(Revert::decode(&data)),
            CallOutcome::Halt(reason) => panic!("{} halted: {reason}", C::SIGNATURE),
        }
    }

    pub fn balance(&mut self, who: Address) -> U256 {
        self.view_of(self.token, DEPLOYER, TestToken::balanceOfCall { account: who }).unwrap()
    }

    pub fn total_supply(&mut self) -> U256 {
        self.view_of(self.token, DEPLOYER, TestToken::totalSupplyCall {}).unwrap()
    }

    pub fn mint(&mut self, who: Address, amount: U256) {
        self.send_to(self.token, DEPLOYER, TestToken::mintCall { holder: who, amount }).unwrap();
    }

    pub fn approve(&mut self, who: Address, amount: U256) {
        self.send_to(self.token, who, TestToken::approveCall { spender: self.market, value: amount })
            .unwrap();
    }

    /// A request from `client` with a fresh nonce (not yet submitted).
    pub fn request(&mut self, client: Address, ask: Ask) -> Request {
        self.nonces += 1;
        Request {
            client,
            ask,
            content: Content {
                cid: Bytes::from_static(b"zDvZRwzm-stand-in-manifest-cid"),
                // A field element, little-endian, as dataset roots are.
                merkleRoot: B256::from(U256::from(0x1234_5678u64 + self.nonces).to_le_bytes::<32>()),
            },
            expiry: 600,
            nonce: B256::from(U256::from(self.nonces)),
        }
    }

    /// Mints and approves the request's price, and submits it.
    pub fn submit(&mut self, request: &Request) -> Result<B256, Revert> {
        let price = max_price(&request.ask);
        self.mint(request.client, price);
        self.approve(request.client, price);
        self.send(request.client, M::requestStorageCall { request: request.clone() })?;
        Ok(request_id(request))
    }

    /// A stand-in proof of the challenge `slot` will have in a block made at `timestamp`.
    pub fn proof_at(&mut self, request: &Request, slot: u64, timestamp: u64) -> M::Groth16Proof {
        let id = slot_id(request_id(request), slot);
        let call = M::getChallengeCall { id };
        let challenge =
            match self.chain.call_in_next_block(timestamp, DEPLOYER, self.market, call.abi_encode().into()) {
                CallOutcome::Success(data) => M::getChallengeCall::abi_decode_returns(&data).unwrap(),
                other => panic!("getChallenge: {other:?}"),
            };
        let [entropy, root, slot] = public_inputs(challenge, request.content.merkleRoot, slot)
            .map(|v| fr_from_u256(v).expect("test roots are field elements"));
        let inputs = StandInInputs { entropy, root, slot };
        self.proofs_made += 1;
        proof_to_chain(&self.prover.prove(inputs, self.proofs_made))
    }

    /// A proof for a transaction mined next (one second after the head).
    pub fn proof(&mut self, request: &Request, slot: u64) -> M::Groth16Proof {
        let next = self.now() + 1;
        self.proof_at(request, slot, next)
    }

    /// Approves the collateral, reserves and fills the slot.
    pub fn fill(&mut self, host: Address, request: &Request, slot: u64) -> Result<Vec<Log>, Revert> {
        let collateral = collateral_per_slot(&request.ask);
        self.mint(host, collateral);
        self.approve(host, collateral);
        let id = request_id(request);
        self.send(host, M::reserveSlotCall { requestId: id, slotIndex: slot })?;
        let proof = self.proof(request, slot);
        self.send(host, M::fillSlotCall { requestId: id, slotIndex: slot, proof })
    }

    pub fn submit_proof(&mut self, host: Address, request: &Request, slot: u64) -> Result<Vec<Log>, Revert> {
        let proof = self.proof(request, slot);
        self.send(host, M::submitProofCall { slotId: slot_id(request_id(request), slot), proof })
    }

    pub fn request_state(&mut self, id: B256) -> u8 {
        self.view(DEPLOYER, M::requestStateCall { requestId: id }).unwrap()
    }

    pub fn slot_state(&mut self, id: B256) -> u8 {
        self.view(DEPLOYER, M::slotStateCall { slotId: id }).unwrap()
    }
}

//! `AnvilBackend`: a real Anvil, stepped block by block like [`super::ModeledChain`], for
//! `cargo sim run --chain anvil`, the check that the in-process chain is faithful.
//!
//! Anvil runs without automatic mining, takes transactions in arrival order (`--order
//! fifo`) from any sender (`--auto-impersonate`: the simulator's accounts sign nothing), and
//! each block is mined with the timestamp the simulator gives (`evm_mine`). Requests go over
//! plain blocking HTTP on one kept-alive connection, so nothing here needs a runtime or a thread:
//! the simulator calls it from inside its virtual time, where no real time passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use revm::primitives::{Address, B256, Bytes, Log, LogData, U256};
use serde_json::{Value, json};

use super::{Block, CallOutcome, ChainParams, EvmBackend, Receipt, TxRequest, next_base_fee};

/// The Anvil arguments that make it behave as the simulator's chain.
pub fn anvil_args(params: &ChainParams) -> Vec<String> {
    ["--no-mining", "--order", "fifo", "--auto-impersonate", "--hardfork", "prague", "--accounts", "1"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--chain-id".into(),
            params.chain_id.to_string(),
            "--timestamp".into(),
            params.genesis_timestamp.to_string(),
            "--gas-limit".into(),
            params.block_gas_limit.to_string(),
            "--base-fee".into(),
            params.genesis_base_fee.to_string(),
        ])
        .collect()
}

pub struct AnvilBackend {
    port: u16,
    /// One keep-alive connection, opened again if Anvil closes it.
    stream: Option<BufReader<TcpStream>>,
    params: ChainParams,
    head: Block,
    /// Requests made, for the run's statistics.
    pub requests: u64,
}

impl AnvilBackend {
    /// Connects to an Anvil started with [`anvil_args`] on `port`.
    pub fn connect(port: u16, params: ChainParams) -> Result<AnvilBackend, String> {
        let mut backend = AnvilBackend { port, stream: None, params, head: Block::default(), requests: 0 };
        backend.head = backend.block_at("latest")?;
        Ok(backend)
    }

    fn request(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.requests += 1;
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string();
        let text = match self.exchange(&body) {
            Ok(text) => text,
            // A connection Anvil closed: once more on a new one.
            Err(_) => {
                self.stream = None;
                self.exchange(&body)
                    .unwrap_or_else(|e| panic!("Anvil on port {} stopped answering: {e}", self.port))
            }
        };
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("Anvil answered {method} with no JSON ({e}): {text}"));
        match value.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(value["result"].clone()),
        }
    }

    /// One HTTP request on the kept-alive connection; the response's body.
    fn exchange(&mut self, body: &str) -> std::io::Result<String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected");
        write!(
            reader.get_mut(),
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut length = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length = length.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        let mut response = vec![0; length];
        reader.read_exact(&mut response)?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        self.request(method, params).unwrap_or_else(|e| panic!("Anvil refused {method}: {e}"))
    }

    fn block_at(&mut self, tag: &str) -> Result<Block, String> {
        let block = self.request("eth_getBlockByNumber", json!([tag, false])).map_err(|e| e.to_string())?;
        Ok(Block {
            number: hex_u64(&block["number"]),
            timestamp: hex_u64(&block["timestamp"]),
            hash: block["hash"].as_str().and_then(|h| h.parse().ok()).unwrap_or_default(),
            base_fee: hex_u64(&block["baseFeePerGas"]),
            gas_used: hex_u64(&block["gasUsed"]),
            transactions: serde_json::from_value(block["transactions"].clone()).unwrap_or_default(),
        })
    }

    fn tx_json(tx: &TxRequest) -> Value {
        let mut value = json!({
            "from": tx.from,
            "data": tx.data,
            "value": tx.value,
            "nonce": format!("{:#x}", tx.nonce),
            "gas": format!("{:#x}", tx.gas_limit),
            "maxFeePerGas": format!("{:#x}", tx.max_fee_per_gas),
            "maxPriorityFeePerGas": format!("{:#x}", tx.max_priority_fee_per_gas),
        });
        if let Some(to) = tx.to {
            value["to"] = json!(to);
        }
        value
    }

    fn receipt(&mut self, hash: B256) -> Receipt {
        let r = self.ok("eth_getTransactionReceipt", json!([hash]));
        let success = hex_u64(&r["status"]) == 1;
        let output = if success {
            Bytes::new()
        } else {
            // Why it reverted: the call trace's output (the revert data).
            let trace = self.ok("debug_traceTransaction", json!([hash, { "tracer": "callTracer" }]));
            trace["output"].as_str().and_then(|o| o.parse().ok()).unwrap_or_default()
        };
        let logs = r["logs"].as_array().cloned().unwrap_or_default().iter().map(log_from_json).collect();
        Receipt {
            tx_hash: hash,
            block_number: hex_u64(&r["blockNumber"]),
            from: r["from"].as_str().and_then(|a| a.parse().ok()).unwrap_or_default(),
            to: r["to"].as_str().and_then(|a| a.parse().ok()),
            contract_address: r["contractAddress"].as_str().and_then(|a| a.parse().ok()),
            success,
            gas_used: hex_u64(&r["gasUsed"]),
            effective_gas_price: hex_u64(&r["effectiveGasPrice"]) as u128,
            logs,
            output,
        }
    }

    fn at_head(&self) -> String {
        format!("{:#x}", self.head.number)
    }
}

impl EvmBackend for AnvilBackend {
    fn head(&self) -> Block {
        self.head.clone()
    }

    fn next_base_fee(&self) -> u64 {
        next_base_fee(&self.head, self.params.block_gas_limit)
    }

    fn pending_nonce(&mut self, who: Address) -> u64 {
        hex_u64(&self.ok("eth_getTransactionCount", json!([who, "pending"])))
    }

    fn mined_nonce(&mut self, who: Address) -> u64 {
        let head = self.at_head();
        hex_u64(&self.ok("eth_getTransactionCount", json!([who, head])))
    }

    fn balance(&mut self, who: Address) -> U256 {
        let head = self.at_head();
        serde_json::from_value(self.ok("eth_getBalance", json!([who, head]))).unwrap_or_default()
    }

    fn code(&mut self, at: Address) -> Bytes {
        let head = self.at_head();
        serde_json::from_value(self.ok("eth_getCode", json!([at, head]))).unwrap_or_default()
    }

    fn set_balance(&mut self, who: Address, balance: U256) {
        self.ok("anvil_setBalance", json!([who, balance]));
    }

    fn submit(&mut self, tx: TxRequest) -> Result<B256, String> {
        let value =
            self.request("eth_sendTransaction", json!([Self::tx_json(&tx)])).map_err(|e| e.to_string())?;
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    fn mine(&mut self, timestamp: u64) -> (Block, Vec<Receipt>) {
        self.ok("evm_mine", json!([timestamp]));
        let block = self.block_at("latest").expect("a mined block");
        assert_eq!(
            (block.number, block.timestamp),
            (self.head.number + 1, timestamp),
            "Anvil mined another block"
        );
        let receipts = block.transactions.iter().map(|hash| self.receipt(*hash)).collect();
        self.head = block.clone();
        (block, receipts)
    }

    fn call(&mut self, from: Address, to: Address, data: Bytes) -> CallOutcome {
        let head = self.at_head();
        match self.request("eth_call", json!([{ "from": from, "to": to, "data": data }, head])) {
            Ok(value) => CallOutcome::Success(serde_json::from_value(value).unwrap_or_default()),
            Err(error) => revert_of(&error),
        }
    }

    fn estimate_gas(&mut self, tx: &TxRequest) -> Result<u64, CallOutcome> {
        let mut call = json!({ "from": tx.from, "data": tx.data, "value": tx.value });
        if let Some(to) = tx.to {
            call["to"] = json!(to);
        }
        let head = self.at_head();
        match self.request("eth_estimateGas", json!([call, head])) {
            Ok(value) => Ok(hex_u64(&value)),
            Err(error) => Err(revert_of(&error)),
        }
    }

    fn logs(&mut self, address: Address, from: u64, to: u64) -> Vec<(u64, Log)> {
        let filter =
            json!({ "address": address, "fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}") });
        let logs = self.ok("eth_getLogs", json!([filter]));
        logs.as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|l| (hex_u64(&l["blockNumber"]), log_from_json(l)))
            .collect()
    }
}

/// A JSON-RPC error as a call's outcome: a revert with its data, or a halt.
fn revert_of(error: &Value) -> CallOutcome {
    let message = error["message"].as_str().unwrap_or_default();
    match error["data"].as_str().and_then(|d| d.parse::<Bytes>().ok()) {
        Some(data) => CallOutcome::Revert(data),
        None if message.contains("revert") => CallOutcome::Revert(Bytes::new()),
        None => CallOutcome::Halt(message.to_string()),
    }
}

fn log_from_json(log: &Value) -> Log {
    let address = log["address"].as_str().and_then(|a| a.parse().ok()).unwrap_or_default();
    let topics: Vec<B256> = serde_json::from_value(log["topics"].clone()).unwrap_or_default();
    let data: Bytes = log["data"].as_str().and_then(|d| d.parse().ok()).unwrap_or_default();
    Log { address, data: LogData::new_unchecked(topics, data) }
}

fn hex_u64(value: &Value) -> u64 {
    value.as_str().and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()).unwrap_or_default()
}

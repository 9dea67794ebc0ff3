//! The proving loop's driver: storage proofs of slots held here, answering the chain's
//! challenges.
//!
//! For each challenge it reads the slot's sampled blocks from the store, builds the proof
//! input ([`super::input`]) and proves ([`super::prover`]), both through the compute port: on
//! the blocking pool in production, so a node that is proving keeps answering its API and
//! serving blocks; inline in the simulator, with the proving time charged to the virtual
//! clock from the circuit's constraint count ([`Compute::run_proving`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use ark_bn254::Bn254;
use ark_groth16::Proof;
use bytes::Bytes;
use cid::Cid;

use super::circuit::{InputError, Params, ProofInput};
use super::input::{build_input, entropy_from_challenge, sampled_blocks};
use super::prover::{Prover, ProverError};
use crate::content::Manifest;
use crate::dataset::{erasure_layout, slot_roots};
use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, F, SlotTree};
use crate::runtime::Compute;
use crate::store::{SharedStore, StoreError};

/// Why a slot could not be proven.
#[derive(Debug, thiserror::Error)]
pub enum ProvingError {
    #[error("the manifest is not of a protected, verifiable dataset: {0}")]
    NotVerifiable(String),
    #[error("slot {slot} of a dataset of {slots} slots")]
    NoSuchSlot { slot: u32, slots: usize },
    #[error("block {index} of the slot is not held here")]
    MissingBlock { index: u64 },
    #[error("the slot's blocks here give slot root {found}, the manifest names {expected}")]
    WrongSlotRoot { expected: String, found: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Prover(#[from] ProverError),
}

/// A slot held here, ready to prove: where its blocks are and its tree (64 bytes a block,
/// built once from the blocks and kept for every later challenge).
#[derive(Clone, Debug)]
pub struct ProvableSlot {
    tree_cid: Cid,
    /// The slot's first block in the dataset's tree.
    first_block: u64,
    block_size: usize,
    slot_index: u32,
    slot_roots: Arc<Vec<F>>,
    tree: Arc<SlotTree>,
}

impl ProvableSlot {
    pub fn slot_index(&self) -> u32 {
        self.slot_index
    }

    pub fn slot_root(&self) -> F {
        self.tree.root()
    }

    pub fn dataset_root(&self) -> F {
        poseidon2::Poseidon2Tree::build(self.slot_roots.to_vec()).expect("a dataset has slots").root()
    }
}

/// Proof inputs of the slots held in one store, for a circuit's parameters.
#[derive(Clone)]
pub struct SlotInputs {
    store: SharedStore,
    compute: Compute,
    params: Params,
}

/// Storage proofs of the slots held in one store.
#[derive(Clone)]
pub struct SlotProofs {
    inputs: SlotInputs,
    prover: Arc<Prover>,
    /// Constraints of the prover's circuit: what a proof costs under [`Compute::Modeled`].
    constraints: u64,
}

impl SlotProofs {
    pub fn new(store: SharedStore, compute: Compute, prover: Arc<Prover>) -> Result<SlotProofs, ProverError> {
        let (constraints, _, _) = super::prover::circuit_size(*prover.params())?;
        let inputs = SlotInputs { store, compute, params: *prover.params() };
        Ok(SlotProofs { inputs, prover, constraints: constraints as u64 })
    }

    pub fn prover(&self) -> &Prover {
        &self.prover
    }

    pub fn inputs(&self) -> &SlotInputs {
        &self.inputs
    }

    /// See [`SlotInputs::slot`].
    pub async fn slot(&self, manifest: &Manifest, slot: u32) -> Result<ProvableSlot, ProvingError> {
        self.inputs.slot(manifest, slot).await
    }

    /// See [`SlotInputs::input`].
    pub async fn input(&self, slot: &ProvableSlot, challenge: &[u8; 32]) -> Result<ProofInput, ProvingError> {
        self.inputs.input(slot, challenge).await
    }

    /// A proof that this node holds `slot`, for the chain's `challenge`; `randomness` blinds
    /// it (32 fresh random bytes).
    pub async fn prove(
        &self,
        slot: &ProvableSlot,
        challenge: &[u8; 32],
        randomness: [u8; 32],
    ) -> Result<(ProofInput, Proof<Bn254>), ProvingError> {
        let input = self.inputs.input(slot, challenge).await?;
        let prover = self.prover.clone();
        let proof_input = input.clone();
        let proof = self
            .inputs
            .compute
            .run_proving(self.constraints, move || prover.prove(&proof_input, randomness))
            .await?;
        Ok((input, proof))
    }
}

impl SlotInputs {
    pub fn new(store: SharedStore, compute: Compute, params: Params) -> SlotInputs {
        SlotInputs { store, compute, params }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// Slot `slot` of the protected dataset `manifest`, from its blocks in the store; its
    /// tree must give the slot root the manifest names.
    pub async fn slot(&self, manifest: &Manifest, slot: u32) -> Result<ProvableSlot, ProvingError> {
        let not_verifiable = |what: &str| ProvingError::NotVerifiable(what.to_owned());
        let layout = erasure_layout(manifest).map_err(|e| not_verifiable(&e.to_string()))?;
        let verification = manifest
            .erasure
            .as_ref()
            .and_then(|e| e.verification.as_ref())
            .ok_or_else(|| not_verifiable("no verification roots"))?;
        if verification.cell_size_bytes as usize != CELL_SIZE_BYTES {
            return Err(not_verifiable(&format!("{}-byte cells", verification.cell_size_bytes)));
        }
        let slot_roots =
            slot_roots(manifest).ok_or_else(|| not_verifiable("a slot root is not a Poseidon2 digest"))?;
        let expected = *slot_roots
            .get(slot as usize)
            .ok_or(ProvingError::NoSuchSlot { slot, slots: slot_roots.len() })?;

        let first_block = layout.slot_blocks(slot).start;
        let block_size = manifest.block_size_bytes as usize;
        let blocks = self.store.get_tree_blocks(manifest.tree_cid, first_block, layout.steps).await?;
        // An empty block is padding of the layout; any other must be a whole block.
        if let Some(odd) = blocks.iter().find(|b| !b.is_empty() && b.len() != block_size) {
            return Err(not_verifiable(&format!(
                "a {}-byte block in a slot of {block_size}-byte blocks",
                odd.len()
            )));
        }
        let bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        let tree = self
            .compute
            .run_hashing(bytes, move || SlotTree::from_stored_blocks(&blocks, block_size, CELL_SIZE_BYTES))
            .await;
        if tree.root() != expected {
            return Err(ProvingError::WrongSlotRoot {
                expected: expected.to_string(),
                found: tree.root().to_string(),
            });
        }
        Ok(ProvableSlot {
            tree_cid: manifest.tree_cid,
            first_block,
            block_size,
            slot_index: slot,
            slot_roots: Arc::new(slot_roots),
            tree: Arc::new(tree),
        })
    }

    /// The proof input for the chain's `challenge`, from the sampled blocks in the store.
    pub async fn input(&self, slot: &ProvableSlot, challenge: &[u8; 32]) -> Result<ProofInput, ProvingError> {
        let params = self.params;
        let entropy = entropy_from_challenge(challenge);
        let mut blocks = BTreeMap::new();
        for index in sampled_blocks(&params, &entropy, &slot.tree) {
            let block = self.store.get_tree_blocks(slot.tree_cid, slot.first_block + index, 1).await?;
            let block = match block.into_iter().next() {
                Some(b) if b.is_empty() => Bytes::from(vec![0u8; slot.block_size]),
                Some(b) => b,
                None => return Err(ProvingError::MissingBlock { index }),
            };
            blocks.insert(index, block);
        }
        let slot = slot.clone();
        let input = self
            .compute
            .run(move || {
                build_input(&params, entropy, &slot.slot_roots, slot.slot_index.into(), &slot.tree, &blocks)
            })
            .await?;
        Ok(input)
    }
}

#[cfg(test)]
mod tests;

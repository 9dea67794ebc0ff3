//! How a host proves the slots it sells: the [`SlotProver`] port.
//!
//! | prover | where |
//! |---|---|
//! | [`CircuitProver`] | production: the storage-proof circuit (Groth16 over BN254), proving on the blocking pool with all cores |
//! | [`ModeledProver`] | the simulator: the proof input built from the slot's real sampled cells and checked natively (a host without the cells cannot make one), then a proof of the stand-in circuit with the same public inputs; the real circuit's proving time charged to the virtual clock |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::B256;
use async_trait::async_trait;

use crate::chain::market::Groth16Proof;
use crate::content::{Cid, Manifest};
use crate::proofs::groth16::proof_to_chain;
use crate::proofs::proving::{ProvableSlot, ProvingError, SlotInputs, SlotProofs};
use crate::runtime::NodeRng;

/// Makes storage proofs of slots held in this node's store.
#[async_trait]
pub trait SlotProver: Send + Sync {
    /// Checks that the slot is held here whole: its blocks give the slot root the manifest
    /// names. Remembered until [`SlotProver::forget`].
    async fn check(&self, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> Result<(), ProvingError>;

    /// A proof that this node holds the slot, for the chain's `challenge`.
    async fn prove(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        slot: u32,
        challenge: B256,
    ) -> Result<Groth16Proof, ProvingError>;

    /// Forgets what was checked of a slot (dropped, or fetched again).
    fn forget(&self, manifest_cid: Cid, slot: u32);
}

/// Slots checked, with their trees.
#[derive(Default)]
struct Checked(Mutex<BTreeMap<(Cid, u32), ProvableSlot>>);

impl Checked {
    async fn get(
        &self,
        inputs: &SlotInputs,
        manifest_cid: Cid,
        manifest: &Manifest,
        slot: u32,
    ) -> Result<ProvableSlot, ProvingError> {
        if let Some(found) = self.0.lock().expect("checked slots").get(&(manifest_cid, slot)) {
            return Ok(found.clone());
        }
        let provable = inputs.slot(manifest, slot).await?;
        self.0.lock().expect("checked slots").insert((manifest_cid, slot), provable.clone());
        Ok(provable)
    }

    fn forget(&self, manifest_cid: Cid, slot: u32) {
        self.0.lock().expect("checked slots").remove(&(manifest_cid, slot));
    }
}

/// 32 fresh bytes to blind a proof with.
fn randomness(rng: &Mutex<NodeRng>) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(rng.lock().expect("prover rng").rng(), &mut bytes);
    bytes
}

/// Proofs of the storage-proof circuit.
pub struct CircuitProver {
    proofs: SlotProofs,
    checked: Checked,
    rng: Mutex<NodeRng>,
}

impl CircuitProver {
    pub fn new(proofs: SlotProofs, rng: NodeRng) -> CircuitProver {
        CircuitProver { proofs, checked: Checked::default(), rng: Mutex::new(rng) }
    }
}

#[async_trait]
impl SlotProver for CircuitProver {
    async fn check(&self, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> Result<(), ProvingError> {
        self.checked.get(self.proofs.inputs(), manifest_cid, manifest, slot).await.map(drop)
    }

    async fn prove(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        slot: u32,
        challenge: B256,
    ) -> Result<Groth16Proof, ProvingError> {
        let provable = self.checked.get(self.proofs.inputs(), manifest_cid, manifest, slot).await?;
        let (_, proof) = self.proofs.prove(&provable, &challenge.0, randomness(&self.rng)).await?;
        Ok(proof_to_chain(&proof))
    }

    fn forget(&self, manifest_cid: Cid, slot: u32) {
        self.checked.forget(manifest_cid, slot)
    }
}

/// The simulator's prover (modeled): the proof input is built from the cells really held and
/// checked natively, as the circuit would; the Groth16 proof is of the stand-in circuit (the
/// simulated deployment's verifier), with the same public inputs, and the real circuit's
/// proving time (`constraints`) is charged through the compute port.
pub struct ModeledProver {
    inputs: SlotInputs,
    constraints: u64,
    stand_in: Arc<crate::proofs::stand_in::StandInProver>,
    checked: Checked,
    made: Mutex<u64>,
}

impl ModeledProver {
    pub fn new(
        inputs: SlotInputs,
        constraints: u64,
        stand_in: Arc<crate::proofs::stand_in::StandInProver>,
    ) -> ModeledProver {
        ModeledProver { inputs, constraints, stand_in, checked: Checked::default(), made: Mutex::new(0) }
    }
}

#[async_trait]
impl SlotProver for ModeledProver {
    async fn check(&self, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> Result<(), ProvingError> {
        self.checked.get(&self.inputs, manifest_cid, manifest, slot).await.map(drop)
    }

    async fn prove(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        slot: u32,
        challenge: B256,
    ) -> Result<Groth16Proof, ProvingError> {
        use crate::proofs::stand_in::StandInInputs;
        let provable = self.checked.get(&self.inputs, manifest_cid, manifest, slot).await?;
        let input = self.inputs.input(&provable, &challenge.0).await?;
        input.check(self.inputs.params())?;
        let [entropy, root, slot] = input.public_inputs();
        let seed = {
            let mut made = self.made.lock().expect("proof counter");
            *made += 1;
            *made
        };
        let stand_in = self.stand_in.clone();
        let proof = self
            .inputs
            .compute()
            .run_proving(self.constraints, move || {
                Ok::<_, ProvingError>(stand_in.prove(StandInInputs { entropy, root, slot }, seed))
            })
            .await?;
        Ok(proof_to_chain(&proof))
    }

    fn forget(&self, manifest_cid: Cid, slot: u32) {
        self.checked.forget(manifest_cid, slot)
    }
}

/// Proofs of a circom-compiled storage-proof circuit (Archivist's `proof_main`): the proof
/// input in Archivist's JSON layout for the circuit's parameters, the witness from its
/// `.wasm`, the proof with its `.zkey`.
#[cfg(feature = "circom")]
pub struct CircomSlotProver {
    prover: Arc<crate::proofs::circom::CircomProver>,
    inputs: SlotInputs,
    checked: Checked,
    rng: Mutex<NodeRng>,
}

#[cfg(feature = "circom")]
impl CircomSlotProver {
    /// `inputs` carries the circuit's parameters (Archivist's, `Params::ARCHIVIST`, for its
    /// deployed circuit).
    pub fn new(
        prover: Arc<crate::proofs::circom::CircomProver>,
        inputs: SlotInputs,
        rng: NodeRng,
    ) -> CircomSlotProver {
        CircomSlotProver { prover, inputs, checked: Checked::default(), rng: Mutex::new(rng) }
    }
}

#[cfg(feature = "circom")]
#[async_trait]
impl SlotProver for CircomSlotProver {
    async fn check(&self, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> Result<(), ProvingError> {
        self.checked.get(&self.inputs, manifest_cid, manifest, slot).await.map(drop)
    }

    async fn prove(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        slot: u32,
        challenge: B256,
    ) -> Result<Groth16Proof, ProvingError> {
        use crate::proofs::prover::ProverError;
        let provable = self.checked.get(&self.inputs, manifest_cid, manifest, slot).await?;
        let input = self.inputs.input(&provable, &challenge.0).await?;
        let value: serde_json::Value =
            serde_json::from_str(&input.to_json()).map_err(|e| ProverError::Synthesis(e.to_string()))?;
        let randomness = randomness(&self.rng);
        let prover = self.prover.clone();
        let constraints = prover.constraints() as u64;
        let (_, proof) = self
            .inputs
            .compute()
            .run_proving(constraints, move || prover.prove(&value, randomness))
            .await
            .map_err(|e| ProverError::Synthesis(e.to_string()))?;
        Ok(proof_to_chain(&proof))
    }

    fn forget(&self, manifest_cid: Cid, slot: u32) {
        self.checked.forget(manifest_cid, slot)
    }
}

//! The storage-proof circuit: Archivist's `SampleAndProve` statement as constraints.
//!
//! Public inputs, in the verifier's order: the entropy of the challenge, the dataset root and
//! the slot index. The prover shows that it knows, for the slot with that index:
//!
//! - the slot root, and a path folding it into the dataset root (the dataset tree's bottom and
//!   odd-node keys driven by the slot index's bits and by `slots − 1`);
//! - for each sample `counter = 1..=samples`, the cell at index
//!   `sponge(entropy, slot root, counter) mod cells` (the low bits of a canonical bit
//!   decomposition; the cell count must be a power of two), its field elements, and a path
//!   folding the cell's digest (the sponge over its elements) through its block's cell tree and
//!   then the slot tree to the slot root.
//!
//! Every shape is fixed by [`Params`] so one proving key serves every slot: a path always has
//! `max_depth` nodes, and the root is read at the level the private cell count selects (the
//! nodes above it are ignored). Each part mirrors Archivist's circom circuit
//! (`sample_cells.circom`, `single_cell.circom`, `merkle.circom`), so its proof inputs satisfy
//! this circuit unchanged; the constraints are ours. As in Archivist's, a dataset of a single
//! slot cannot be proven (its tree has no level to read the root from).

use ark_bn254::Fr;
use ark_ff::{AdditiveGroup, BigInteger, Field, PrimeField};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use serde::{Deserialize, Serialize};

use super::poseidon2_gadget::{Num, compress, sponge};
use crate::merkle::poseidon2::{self, CellProof, Poseidon2, sample_cells};
use crate::merkle::tree::{fold, path_len};

/// The circuit's shape, named as Archivist names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Params {
    /// Depth of a slot's cell tree (blocks' cell trees and the slot tree above them): at most
    /// `2^max_depth` cells in a slot.
    #[serde(rename = "maxDepth")]
    pub max_depth: usize,
    /// Depth of the dataset tree over slot roots: at most `2^max_log2_slots` slots.
    #[serde(rename = "maxLog2NSlots")]
    pub max_log2_slots: usize,
    /// Depth of a block's cell tree (64 KiB blocks of 2 KiB cells: 5).
    #[serde(rename = "blockTreeDepth")]
    pub block_tree_depth: usize,
    /// Field elements a cell is encoded in (2048 bytes, 31 a field element, padded: 67).
    #[serde(rename = "nFieldElemsPerCell")]
    pub cell_elements: usize,
    /// Cells sampled and proven per proof.
    #[serde(rename = "nSamples")]
    pub samples: usize,
}

impl Params {
    /// Archivist's deployed circuit, `SampleAndProve(32, 8, 5, 67, 5)`.
    pub const ARCHIVIST: Params =
        Params { max_depth: 32, max_log2_slots: 8, block_tree_depth: 5, cell_elements: 67, samples: 5 };

    /// The same circuit proving `samples` cells.
    pub fn with_samples(self, samples: usize) -> Params {
        Params { samples, ..self }
    }

    /// Whether the shape can be built: bit widths a `u64` index holds, the block tree inside
    /// the slot tree, at least one sample and one element a cell.
    pub fn check(&self) -> Result<(), InputError> {
        let fits = (1..=63).contains(&self.max_depth)
            && (1..=63).contains(&self.max_log2_slots)
            && self.block_tree_depth <= self.max_depth
            && self.cell_elements > 0
            && self.samples > 0;
        fits.then_some(()).ok_or(InputError::Params(*self))
    }
}

impl Default for Params {
    fn default() -> Params {
        Params::ARCHIVIST
    }
}

/// Why a proof input does not fit a circuit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("circuit parameters {0:?} are out of range")]
    Params(Params),
    #[error("{what}: expected {expected}, got {got}")]
    Shape { what: &'static str, expected: usize, got: usize },
    #[error("malformed proof input: {0}")]
    Format(String),
    /// The input has the circuit's shape but not its statement: no proof can be made from it.
    #[error("the proof input does not hold: {0}")]
    Statement(String),
}

/// Everything the prover feeds the circuit: the public inputs and the private witness, in
/// Archivist's proof-input layout (its JSON field names; paths zero-padded to the maximum
/// depths).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofInput {
    #[serde(with = "decimal")]
    pub entropy: Fr,
    #[serde(rename = "dataSetRoot", with = "decimal")]
    pub dataset_root: Fr,
    pub slot_index: u64,
    #[serde(with = "decimal")]
    pub slot_root: Fr,
    #[serde(rename = "nCellsPerSlot")]
    pub cells_per_slot: u64,
    #[serde(rename = "nSlotsPerDataSet")]
    pub slots_per_dataset: u64,
    /// The slot root's path to the dataset root, `max_log2_slots` nodes.
    #[serde(with = "decimal::vec")]
    pub slot_proof: Vec<Fr>,
    /// The sampled cells' field elements, `samples × cell_elements`.
    #[serde(rename = "cellData", with = "decimal::vec_vec")]
    pub cells: Vec<Vec<Fr>>,
    /// Each sampled cell's path to the slot root (its block's cell tree first), `max_depth`
    /// nodes each.
    #[serde(rename = "merklePaths", with = "decimal::vec_vec")]
    pub paths: Vec<Vec<Fr>>,
}

impl ProofInput {
    /// Reads Archivist's proof-input JSON (what its node hands the circom witness generator).
    pub fn from_json(text: &str) -> Result<ProofInput, InputError> {
        serde_json::from_str(text).map_err(|e| InputError::Format(e.to_string()))
    }

    /// Archivist's proof-input JSON, the input of a circom witness generator.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a proof input serializes")
    }

    /// The public inputs in the verifier's order: entropy, dataset root, slot index.
    pub fn public_inputs(&self) -> [Fr; 3] {
        [self.entropy, self.dataset_root, Fr::from(self.slot_index)]
    }

    /// Whether every list has the length `params` fixes.
    pub fn check_shape(&self, params: &Params) -> Result<(), InputError> {
        params.check()?;
        let expect = |what, expected, got| {
            (expected == got).then_some(()).ok_or(InputError::Shape { what, expected, got })
        };
        expect("slot proof nodes", params.max_log2_slots, self.slot_proof.len())?;
        expect("sampled cells", params.samples, self.cells.len())?;
        expect("cell paths", params.samples, self.paths.len())?;
        for cell in &self.cells {
            expect("field elements of a cell", params.cell_elements, cell.len())?;
        }
        for path in &self.paths {
            expect("nodes of a cell path", params.max_depth, path.len())?;
        }
        Ok(())
    }
}

impl ProofInput {
    /// Checks the circuit's statement natively (milliseconds, against seconds of proving),
    /// naming the first part that does not hold: the cells are the ones the entropy samples,
    /// each path leads from its cell to the slot root, and the slot root's path to the
    /// dataset root.
    pub fn check(&self, params: &Params) -> Result<(), InputError> {
        self.check_shape(params)?;
        let fails = |what: String| Err(InputError::Statement(what));
        let (cells, slots) = (self.cells_per_slot, self.slots_per_dataset);
        let cells_per_block = 1u64 << params.block_tree_depth;
        if !cells.is_power_of_two()
            || cells <= cells_per_block
            || cells.trailing_zeros() as usize > params.max_depth
        {
            return fails(format!(
                "{cells} cells a slot: a power of two above one block's {cells_per_block}, at most 2^{}",
                params.max_depth
            ));
        }
        if slots < 2 || slots > 1 << params.max_log2_slots || self.slot_index >= slots {
            return fails(format!(
                "slot {} of {slots}: a dataset of 2 to 2^{} slots",
                self.slot_index, params.max_log2_slots
            ));
        }
        let depth = path_len(slots);
        if fold::<Poseidon2>(self.slot_index, slots, &self.slot_root, &self.slot_proof[..depth])
            != self.dataset_root
        {
            return fails("the slot root's path does not lead to the dataset root".into());
        }
        let sampled = sample_cells(&self.entropy, &self.slot_root, params.samples as u64, cells);
        let slot_blocks = cells / cells_per_block;
        for (sample, ((cell, elements), path)) in sampled.iter().zip(&self.cells).zip(&self.paths).enumerate()
        {
            let proof = CellProof::from_path(*cell, cells_per_block, slot_blocks, path);
            if !proof.verify(&poseidon2::sponge(elements), &self.slot_root) {
                return fails(format!(
                    "sample {}: cell {cell}'s data and path do not lead to the slot root",
                    sample + 1
                ));
            }
        }
        Ok(())
    }
}

/// The storage-proof circuit for one shape, with a proof input when proving (none for a setup,
/// which only needs the shape).
#[derive(Clone, Copy, Debug)]
pub struct StorageProofCircuit<'a> {
    params: Params,
    input: Option<&'a ProofInput>,
}

impl<'a> StorageProofCircuit<'a> {
    /// The circuit without values, for a setup or counting constraints.
    pub fn shape(params: Params) -> StorageProofCircuit<'static> {
        StorageProofCircuit { params, input: None }
    }

    /// The circuit assigned from `input`, which must fit `params`.
    pub fn assigned(params: Params, input: &'a ProofInput) -> Result<StorageProofCircuit<'a>, InputError> {
        input.check_shape(&params)?;
        Ok(StorageProofCircuit { params, input: Some(input) })
    }
}

impl ConstraintSynthesizer<Fr> for StorageProofCircuit<'_> {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let StorageProofCircuit { params: p, input } = self;
        p.check().map_err(|_| SynthesisError::Unsatisfiable)?;
        let witness = |value: Option<Fr>| Num::witness(&cs, value);
        let witnesses = |values: Option<&Vec<Fr>>, count: usize| -> Result<Vec<Num>, SynthesisError> {
            (0..count).map(|k| witness(values.map(|v| v[k]))).collect()
        };

        let entropy = Num::input(&cs, input.map(|i| i.entropy))?;
        let dataset_root = Num::input(&cs, input.map(|i| i.dataset_root))?;
        let slot_index = Num::input(&cs, input.map(|i| Fr::from(i.slot_index)))?;
        let slot_root = witness(input.map(|i| i.slot_root))?;
        let cells_per_slot = witness(input.map(|i| Fr::from(i.cells_per_slot)))?;
        let slots = witness(input.map(|i| Fr::from(i.slots_per_dataset)))?;
        let slot_proof = witnesses(input.map(|i| &i.slot_proof), p.max_log2_slots)?;

        // The slot root is the leaf at `slot_index` of the dataset tree.
        let index_bits = to_bits(&cs, &slot_index, p.max_log2_slots)?;
        let (last_bits, mask) = ceiling_log2(&cs, &slots, p.max_log2_slots)?;
        let root = root_from_path(&cs, &slot_root, &index_bits, &last_bits, &mask, &slot_proof)?;
        root.enforce_equal(&cs, &dataset_root)?;

        // The cell count is a power of two: its mask is also the bits of `cells − 1`.
        let mask = log2_mask(&cs, &cells_per_slot, p.max_depth)?;
        let last_bits = &mask[..p.max_depth];
        let zero = Num::constant(Fr::ZERO);
        let block_mask: Vec<Num> = mask[..p.block_tree_depth].iter().cloned().chain([zero]).collect();
        let d = p.block_tree_depth;
        for sample in 0..p.samples {
            let counter = Num::constant(Fr::from(sample as u64 + 1));
            let digest = sponge(&cs, &[entropy.clone(), slot_root.clone(), counter])?;
            let low = low_bits(&cs, &digest, p.max_depth)?;
            let bits =
                low.iter().zip(&mask).map(|(bit, m)| bit.mul(&cs, m)).collect::<Result<Vec<_>, _>>()?;

            let elements = witnesses(input.map(|i| &i.cells[sample]), p.cell_elements)?;
            let path = witnesses(input.map(|i| &i.paths[sample]), p.max_depth)?;
            let leaf = sponge(&cs, &elements)?;
            let block_root =
                root_from_path(&cs, &leaf, &bits[..d], &last_bits[..d], &block_mask, &path[..d])?;
            let root = root_from_path(&cs, &block_root, &bits[d..], &last_bits[d..], &mask[d..], &path[d..])?;
            root.enforce_equal(&cs, &slot_root)?;
        }
        Ok(())
    }
}

fn one() -> Num {
    Num::constant(Fr::ONE)
}

/// A new witness required to be 0 or 1.
fn boolean(cs: &ConstraintSystemRef<Fr>, value: Option<bool>) -> Result<Num, SynthesisError> {
    let bit = Num::witness(cs, value.map(Fr::from))?;
    bit.mul(cs, &one().sub(&bit))?.enforce_equal(cs, &Num::constant(Fr::ZERO))?;
    Ok(bit)
}

/// The little-endian bits of `x`, which must be below `2^n`: n + 1 constraints.
fn to_bits(cs: &ConstraintSystemRef<Fr>, x: &Num, n: usize) -> Result<Vec<Num>, SynthesisError> {
    let value = x.value().map(|v| v.into_bigint());
    let bits = (0..n).map(|i| boolean(cs, value.map(|v| v.get_bit(i)))).collect::<Result<Vec<_>, _>>()?;
    weighted_sum(&bits).enforce_equal(cs, x)?;
    Ok(bits)
}

/// `Σ 2^i · bits[i]`.
fn weighted_sum(bits: &[Num]) -> Num {
    let mut power = Fr::ONE;
    let mut sum = Num::constant(Fr::ZERO);
    for bit in bits {
        sum = sum.add(&bit.scale(power));
        power.double_in_place();
    }
    sum
}

/// The low `n` bits of the canonical decomposition of `x`. All 254 bits are taken and
/// required to spell a number below the field's modulus, or a second decomposition
/// (x + r) would let the prover choose other low bits.
fn low_bits(cs: &ConstraintSystemRef<Fr>, x: &Num, n: usize) -> Result<Vec<Num>, SynthesisError> {
    let width = Fr::MODULUS_BIT_SIZE as usize;
    let bits = to_bits(cs, x, width)?;
    // Walking down from the top bit: `equal` says the bits so far equal the modulus's. Where
    // the modulus has a 0, an equal prefix must not have a 1; where it has a 1, a 0 makes the
    // number smaller for good. At the end the number must be smaller, not equal.
    let modulus = Fr::MODULUS;
    let mut equal = one();
    for i in (0..width).rev() {
        if modulus.get_bit(i) {
            equal = equal.mul(cs, &bits[i])?;
        } else {
            equal.mul(cs, &bits[i])?.enforce_equal(cs, &Num::constant(Fr::ZERO))?;
        }
    }
    equal.enforce_equal(cs, &Num::constant(Fr::ZERO))?;
    Ok(bits[..n].to_vec())
}

/// For `x = 2^k` with `1 ≤ k ≤ n`, the mask `[1; k] ++ [0; n + 1 − k]` (which is also the
/// bits of `x − 1`); unsatisfiable for any other `x`.
fn log2_mask(cs: &ConstraintSystemRef<Fr>, x: &Num, n: usize) -> Result<Vec<Num>, SynthesisError> {
    let value = x.value().map(|v| v.into_bigint());
    // 2^i < x: below x's top bit, or at it when x has lower bits too.
    let below = |i: usize| {
        value.map(|v| {
            let top = v.num_bits() as usize;
            i + 1 < top || (i + 1 == top && (0..i).any(|b| v.get_bit(b)))
        })
    };
    let mut mask = Vec::with_capacity(n + 1);
    for i in 0..=n {
        // mask[i] = 1 when 2^i < x.
        mask.push(boolean(cs, below(i))?);
    }
    mask[0].enforce_equal(cs, &one())?;
    mask[n].enforce_equal(cs, &Num::constant(Fr::ZERO))?;
    // Falling only (a 1 never follows a 0), so it changes exactly once, at k; then x = 2^k.
    let mut sum = Num::constant(Fr::ZERO);
    for i in 0..n {
        mask[i + 1].mul(cs, &one().sub(&mask[i]))?.enforce_equal(cs, &Num::constant(Fr::ZERO))?;
        sum = sum.add(&mask[i].sub(&mask[i + 1]).scale(Fr::from(2u64).pow([i as u64 + 1])));
    }
    sum.enforce_equal(cs, x)?;
    Ok(mask)
}

/// For `1 ≤ x ≤ 2^n`: the bits of `x − 1` and the mask of `ceil(log2 x)` (`[1; k] ++ [0; n + 1 − k]`).
fn ceiling_log2(
    cs: &ConstraintSystemRef<Fr>,
    x: &Num,
    n: usize,
) -> Result<(Vec<Num>, Vec<Num>), SynthesisError> {
    let bits = to_bits(cs, &x.add_constant(-Fr::ONE), n)?;
    // above[i] = 1 when every bit from i up is 0; the mask is its complement.
    let mut mask = vec![Num::constant(Fr::ZERO); n + 1];
    let mut above = one();
    for i in (0..n).rev() {
        above = above.mul(cs, &one().sub(&bits[i]))?;
        mask[i] = one().sub(&above);
    }
    Ok((bits, mask))
}

/// The root a leaf and its path imply, in a tree of a size only known to the prover:
/// `index_bits` place the leaf, `last_bits` are the bits of the last leaf's index (a node
/// that is last in its layer with no right sibling is compressed with the odd key), and
/// `mask` (one longer than the path) selects the level the root is read at: where it falls
/// from 1 to 0.
fn root_from_path(
    cs: &ConstraintSystemRef<Fr>,
    leaf: &Num,
    index_bits: &[Num],
    last_bits: &[Num],
    mask: &[Num],
    path: &[Num],
) -> Result<Num, SynthesisError> {
    let depth = path.len();
    debug_assert!(index_bits.len() == depth && last_bits.len() == depth && mask.len() == depth + 1);
    // is_last[i]: the leaf's index and the last index agree from bit i up, so the node at
    // level i is the last of its layer.
    let mut is_last = vec![one(); depth + 1];
    for i in (0..depth).rev() {
        let (a, b) = (&index_bits[i], &last_bits[i]);
        // For bits, a == b is 1 − a − b + 2ab.
        let both = a.mul(cs, b)?;
        let same = one().sub(a).sub(b).add(&both.scale(Fr::from(2u64)));
        is_last[i] = is_last[i + 1].mul(cs, &same)?;
    }
    let mut node = leaf.clone();
    let mut root = Num::constant(Fr::ZERO);
    for i in 0..depth {
        let bit = &index_bits[i];
        let odd = is_last[i].mul(cs, &one().sub(bit))?;
        let key = odd.scale(Fr::from(2u64)).add_constant(if i == 0 { Fr::ONE } else { Fr::ZERO });
        // A right child (bit 1) swaps the pair.
        let swap = path[i].sub(&node).mul(cs, bit)?;
        node = compress(cs, &node.add(&swap), &path[i].sub(&swap), &key)?;
        root = root.add(&mask[i].sub(&mask[i + 1]).mul(cs, &node)?);
    }
    Ok(root)
}

/// Field elements as decimal strings (numbers accepted too), as proof inputs write them.
mod decimal {
    use super::Fr;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Number(u64),
    }

    fn parse<E: Error>(text: Text) -> Result<Fr, E> {
        match text {
            Text::Number(n) => Ok(Fr::from(n)),
            Text::String(s) => crate::merkle::poseidon2::from_decimal(&s)
                .ok_or_else(|| E::custom(format!("{s:?} is not a decimal field element"))),
        }
    }

    pub fn serialize<S: Serializer>(value: &Fr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fr, D::Error> {
        parse(Text::deserialize(d)?)
    }

    pub mod vec {
        use super::*;
        use serde::Serialize;

        pub fn serialize<S: Serializer>(values: &[Fr], s: S) -> Result<S::Ok, S::Error> {
            values.iter().map(|v| v.to_string()).collect::<Vec<_>>().serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Fr>, D::Error> {
            Vec::<Text>::deserialize(d)?.into_iter().map(parse).collect()
        }
    }

    pub mod vec_vec {
        use super::*;
        use serde::Serialize;

        pub fn serialize<S: Serializer>(values: &[Vec<Fr>], s: S) -> Result<S::Ok, S::Error> {
            let text: Vec<Vec<String>> =
                values.iter().map(|row| row.iter().map(|v| v.to_string()).collect()).collect();
            text.serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<Fr>>, D::Error> {
            Vec::<Vec<Text>>::deserialize(d)?
                .into_iter()
                .map(|row| row.into_iter().map(parse).collect())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests;

//! Systematic Reed-Solomon erasure coding over blocks, in Archivist's layout.
//!
//! A dataset of `blocks` blocks protected with `K` data and `M` parity slots is laid out as a
//! grid of `K + M` rows ("slots") by `steps` columns ("steps"):
//!
//! ```text
//! rounded = roundUp(blocks, K)      data blocks plus zero padding blocks
//! steps   = rounded / K             columns; block i sits in column i mod steps
//! total   = rounded + steps · M     parity blocks follow the data
//!
//!            step 0      step 1     …  step steps-1
//! slot 0     block 0     block 1    …                  ┐
//! …                                                    │ data (rows 0..K)
//! slot K-1                                             ┘
//! slot K     parity      parity     …                  ┐ parity (rows K..K+M), each column's
//! slot K+M-1                                           ┘ M parity blocks encode its K data blocks
//! ```
//!
//! So slot `r` holds the contiguous blocks `r·steps .. (r+1)·steps`, and any `K` of a column's
//! `K + M` blocks rebuild the rest of that column. Blocks `blocks .. rounded` are all-zero
//! padding: never stored by anyone, known to every reader.
//!
//! The code is the Vandermonde-derived systematic Reed-Solomon code over GF(2⁸) of the
//! `reed-solomon-erasure` crate (SIMD multiplication in C), chosen over `reed-solomon-simd` by
//! benchmark (`cargo bench -p neverust-benches --bench durability`; figures and reasons in
//! `benches/README.md`): encoding is on a par, and decoding a few lost blocks, the repair path,
//! is ten times faster. GF(2⁸) bounds a dataset to 256 slots. Parity bytes are this code's, not
//! Leopard's: another implementation rebuilds our slots only with this code.
//!
//! Accepted parameters are Archivist's: `K ≥ 2`, `1 ≤ M ≤ K` (a dataset with more parity than
//! data would not decode on Archivist nodes), and at most [`MAX_SLOTS`] slots in all, since each
//! slot needs a host of its own.

use std::ops::Range;

use reed_solomon_erasure::galois_8::ReedSolomon;

/// The most slots (`K + M`) a dataset may be split into.
pub const MAX_SLOTS: u32 = 256;

/// Validated erasure-coding parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    k: u32,
    m: u32,
}

/// Why `K` and `M` are refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    #[error("K (data slots) must be at least 2, got {0}")]
    KTooSmall(u32),
    #[error("M (parity slots) must be at least 1, got 0")]
    NoParity,
    #[error("M ({m}) must not exceed K ({k}): Archivist cannot decode more parity than data")]
    MoreParityThanData { k: u32, m: u32 },
    #[error("K + M = {0} slots exceeds the limit of {MAX_SLOTS}")]
    TooManySlots(u64),
}

impl Params {
    pub fn new(k: u32, m: u32) -> Result<Params, ParamsError> {
        if k < 2 {
            return Err(ParamsError::KTooSmall(k));
        }
        if m == 0 {
            return Err(ParamsError::NoParity);
        }
        if m > k {
            return Err(ParamsError::MoreParityThanData { k, m });
        }
        let slots = u64::from(k) + u64::from(m);
        if slots > u64::from(MAX_SLOTS) {
            return Err(ParamsError::TooManySlots(slots));
        }
        Ok(Params { k, m })
    }

    pub fn k(self) -> u32 {
        self.k
    }

    pub fn m(self) -> u32 {
        self.m
    }

    pub fn slots(self) -> u32 {
        self.k + self.m
    }
}

/// Where every block of a protected dataset sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub params: Params,
    /// Blocks of the original dataset.
    pub blocks: u64,
    /// `blocks` rounded up to a multiple of `K`.
    pub rounded: u64,
    /// Columns of the grid; also the number of blocks in each slot.
    pub steps: u64,
    /// Blocks of the protected dataset, parity included.
    pub total: u64,
}

impl Layout {
    pub fn new(params: Params, blocks: u64) -> Layout {
        let k = u64::from(params.k);
        let rounded = blocks.div_ceil(k) * k;
        let steps = rounded / k;
        Layout { params, blocks, rounded, steps, total: rounded + steps * u64::from(params.m) }
    }

    /// The slot (row) block `index` belongs to.
    pub fn slot_of(&self, index: u64) -> u32 {
        u32::try_from(index / self.steps).expect("slot count fits u32")
    }

    /// The step (column) block `index` belongs to.
    pub fn step_of(&self, index: u64) -> u64 {
        index % self.steps
    }

    /// The blocks slot `slot` holds.
    pub fn slot_blocks(&self, slot: u32) -> Range<u64> {
        let start = u64::from(slot) * self.steps;
        start..start + self.steps
    }

    /// The block at `row` of column `step`.
    pub fn index(&self, step: u64, row: u32) -> u64 {
        u64::from(row) * self.steps + step
    }

    /// The blocks of column `step`, by row: `K` data blocks, then `M` parity blocks.
    pub fn column(&self, step: u64) -> impl Iterator<Item = u64> + '_ {
        (0..self.params.slots()).map(move |row| self.index(step, row))
    }

    /// Whether block `index` is zero padding (never stored; all zeroes).
    pub fn is_padding(&self, index: u64) -> bool {
        (self.blocks..self.rounded).contains(&index)
    }

    /// The blocks that can rebuild block `index`: the others of its column, padding left out.
    pub fn rebuild_sources(&self, index: u64) -> Vec<u64> {
        self.column(self.step_of(index)).filter(|&i| i != index && !self.is_padding(i)).collect()
    }
}

/// Errors of encoding and decoding.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodingError {
    #[error("only {present} of the {needed} blocks needed to decode this column are available")]
    Unrecoverable { present: usize, needed: usize },
    #[error("block of {got} bytes where the dataset's blocks have {block_size_bytes}")]
    WrongBlockSize { got: usize, block_size_bytes: usize },
    #[error("expected {expected} shards, got {got}")]
    WrongShardCount { expected: usize, got: usize },
    #[error("block size {0} is not a positive even number of bytes")]
    OddBlockSize(usize),
    #[error("Reed-Solomon failure: {0}")]
    Library(String),
}

fn library(error: reed_solomon_erasure::Error) -> CodingError {
    CodingError::Library(error.to_string())
}

/// Encodes and decodes the columns of one dataset (its tables are built once, so one coder
/// should serve a whole dataset).
#[derive(Debug)]
pub struct Coder {
    params: Params,
    block_size_bytes: usize,
    code: ReedSolomon,
}

impl Coder {
    pub fn new(params: Params, block_size_bytes: usize) -> Result<Coder, CodingError> {
        if block_size_bytes == 0 || !block_size_bytes.is_multiple_of(2) {
            return Err(CodingError::OddBlockSize(block_size_bytes));
        }
        let code = ReedSolomon::new(params.k as usize, params.m as usize).map_err(library)?;
        Ok(Coder { params, block_size_bytes, code })
    }

    pub fn params(&self) -> Params {
        self.params
    }

    fn check_size(&self, shard: &[u8]) -> Result<(), CodingError> {
        if shard.len() == self.block_size_bytes {
            Ok(())
        } else {
            Err(CodingError::WrongBlockSize { got: shard.len(), block_size_bytes: self.block_size_bytes })
        }
    }

    /// The `M` parity blocks of a column whose `K` data blocks are `data`.
    pub fn encode<B: AsRef<[u8]>>(&mut self, data: &[B]) -> Result<Vec<Vec<u8>>, CodingError> {
        let k = self.params.k as usize;
        if data.len() != k {
            return Err(CodingError::WrongShardCount { expected: k, got: data.len() });
        }
        for shard in data {
            self.check_size(shard.as_ref())?;
        }
        let mut parity = vec![vec![0u8; self.block_size_bytes]; self.params.m as usize];
        self.code.encode_sep(data, &mut parity).map_err(library)?;
        Ok(parity)
    }

    /// Block `index` of a dataset laid out as `layout`, rebuilt from the other blocks of its
    /// column that `found` gives (padding is known to be zeroes).
    pub fn rebuild(
        &mut self,
        layout: &Layout,
        index: u64,
        mut found: impl FnMut(u64) -> Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CodingError> {
        let mut column: Vec<Option<Vec<u8>>> = layout
            .column(layout.step_of(index))
            .map(|i| match i {
                _ if layout.is_padding(i) => Some(vec![0u8; self.block_size_bytes]),
                _ if i == index => None,
                _ => found(i),
            })
            .collect();
        self.reconstruct(&mut column)?;
        Ok(column[layout.slot_of(index) as usize].take().expect("reconstructed"))
    }

    /// Fills in every missing block of a column (`K + M` entries by row, `None` where a block
    /// is missing) from any `K` present ones. Fewer than `K` present is
    /// [`CodingError::Unrecoverable`], and the column is left as it was.
    pub fn reconstruct(&mut self, column: &mut [Option<Vec<u8>>]) -> Result<(), CodingError> {
        let (k, m) = (self.params.k as usize, self.params.m as usize);
        if column.len() != k + m {
            return Err(CodingError::WrongShardCount { expected: k + m, got: column.len() });
        }
        let present = column.iter().filter(|shard| shard.is_some()).count();
        if present < k {
            return Err(CodingError::Unrecoverable { present, needed: k });
        }
        for shard in column.iter().flatten() {
            self.check_size(shard)?;
        }
        self.code.reconstruct(column).map_err(library)
    }
}

#[cfg(test)]
mod tests;

//! A streaming chunker: cuts a byte stream into fixed-size blocks without holding the stream.

use bytes::{Bytes, BytesMut};

/// Cuts incoming byte chunks into blocks of exactly `block_size_bytes`.
///
/// Feed it with [`Chunker::push`] as bytes arrive; it emits every completed block. At the end,
/// [`Chunker::finish`] returns the last block zero-padded to full size (Archivist pads too, so
/// the same bytes give the same tree) and the true byte count. An empty stream yields one
/// all-zero block, so every dataset has a tree; the manifest's dataset size (0) says how many
/// bytes are real.
#[derive(Debug)]
pub struct Chunker {
    block_size_bytes: usize,
    partial: BytesMut,
    total_bytes: u64,
    blocks_emitted: u64,
}

impl Chunker {
    pub fn new(block_size_bytes: usize) -> Chunker {
        assert!(block_size_bytes > 0, "block size must be positive");
        Chunker { block_size_bytes, partial: BytesMut::new(), total_bytes: 0, blocks_emitted: 0 }
    }

    /// Bytes received so far.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Adds `data`, appending each block it completes to `out`. Whole blocks at an aligned
    /// position are sliced out of `data` without copying.
    pub fn push(&mut self, mut data: Bytes, out: &mut Vec<Bytes>) {
        self.total_bytes += data.len() as u64;
        let size = self.block_size_bytes;
        if !self.partial.is_empty() {
            let need = size - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data.split_to(take));
            if self.partial.len() < size {
                return;
            }
            out.push(self.take_partial());
        }
        while data.len() >= size {
            out.push(data.split_to(size));
            self.blocks_emitted += 1;
        }
        if !data.is_empty() {
            self.partial.reserve(size);
            self.partial.extend_from_slice(&data);
        }
    }

    /// Ends the stream: returns the padded last block (if the stream did not end on a block
    /// boundary, or was empty) and the total number of real bytes.
    pub fn finish(mut self) -> (Option<Bytes>, u64) {
        if self.partial.is_empty() && self.blocks_emitted > 0 {
            return (None, self.total_bytes);
        }
        self.partial.resize(self.block_size_bytes, 0);
        (Some(self.take_partial()), self.total_bytes)
    }

    fn take_partial(&mut self) -> Bytes {
        self.blocks_emitted += 1;
        self.partial.split().freeze()
    }
}

/// The number of blocks a dataset of `size_bytes` occupies (at least one).
pub fn blocks_count(size_bytes: u64, block_size_bytes: u64) -> u64 {
    size_bytes.div_ceil(block_size_bytes).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk_all(input: &[u8], pieces: &[usize], block_size: usize) -> (Vec<Bytes>, u64) {
        let mut chunker = Chunker::new(block_size);
        let mut blocks = Vec::new();
        let mut rest = Bytes::copy_from_slice(input);
        for &piece in pieces {
            let piece = piece.min(rest.len());
            chunker.push(rest.split_to(piece), &mut blocks);
        }
        chunker.push(rest, &mut blocks);
        let (last, total) = chunker.finish();
        blocks.extend(last);
        (blocks, total)
    }

    #[test]
    fn boundary_sizes() {
        const B: usize = 16;
        // (input length, expected block count)
        for (len, want_blocks) in [
            (0, 1),     // empty: one zero block
            (1, 1),     // one byte, padded
            (B - 1, 1), // just under a block
            (B, 1),     // exactly one block, no padding block
            (B + 1, 2), // one byte spills into a second block
            (3 * B, 3), // whole blocks only
        ] {
            let input: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
            let (blocks, total) = chunk_all(&input, &[], B);
            assert_eq!(blocks.len(), want_blocks, "len {len}");
            assert_eq!(total, len as u64);
            assert_eq!(blocks_count(len as u64, B as u64), want_blocks as u64);
        }
    }

    proptest! {
        #[test]
        fn blocks_reassemble_to_input(
            input in proptest::collection::vec(any::<u8>(), 0..2000),
            pieces in proptest::collection::vec(0usize..300, 0..20),
            block_size in 1usize..200,
        ) {
            let (blocks, total) = chunk_all(&input, &pieces, block_size);
            prop_assert_eq!(total, input.len() as u64);
            prop_assert_eq!(blocks.len() as u64, blocks_count(total, block_size as u64));
            prop_assert!(blocks.iter().all(|b| b.len() == block_size));
            let joined: Vec<u8> = blocks.concat();
            prop_assert_eq!(&joined[..input.len()], &input[..]);
            prop_assert!(joined[input.len()..].iter().all(|&b| b == 0), "padding is zeros");
        }
    }
}

use proptest::prelude::*;
use rand::{Rng, SeedableRng, seq::index::sample};
use rand_chacha::ChaCha8Rng;

use super::*;

#[test]
fn parameters_follow_archivist() {
    assert_eq!(Params::new(1, 1), Err(ParamsError::KTooSmall(1)));
    assert_eq!(Params::new(3, 0), Err(ParamsError::NoParity));
    assert_eq!(Params::new(2, 3), Err(ParamsError::MoreParityThanData { k: 2, m: 3 }));
    assert_eq!(Params::new(200, 100), Err(ParamsError::TooManySlots(300)));
    let params = Params::new(3, 2).unwrap();
    assert_eq!((params.k(), params.m(), params.slots()), (3, 2, 5));
}

#[test]
fn layout_matches_archivist_formulas() {
    // 10 blocks, K = 3: rounded 12, 4 steps, 4·2 parity blocks.
    let layout = Layout::new(Params::new(3, 2).unwrap(), 10);
    assert_eq!((layout.rounded, layout.steps, layout.total), (12, 4, 20));
    assert_eq!(layout.slot_blocks(0), 0..4);
    assert_eq!(layout.slot_blocks(4), 16..20);
    assert_eq!(layout.column(1).collect::<Vec<_>>(), vec![1, 5, 9, 13, 17]);
    assert_eq!((layout.slot_of(13), layout.step_of(13)), (3, 1));
    assert!(!layout.is_padding(9) && layout.is_padding(10) && layout.is_padding(11));
    assert!(!layout.is_padding(12));
}

#[test]
fn wrong_sizes_are_refused() {
    assert_eq!(Coder::new(Params::new(2, 1).unwrap(), 63).unwrap_err(), CodingError::OddBlockSize(63));
    let mut coder = Coder::new(Params::new(2, 1).unwrap(), 64).unwrap();
    assert_eq!(
        coder.encode(&[vec![0u8; 64], vec![0u8; 32]]).unwrap_err(),
        CodingError::WrongBlockSize { got: 32, block_size_bytes: 64 }
    );
    assert_eq!(
        coder.encode(&[vec![0u8; 64]]).unwrap_err(),
        CodingError::WrongShardCount { expected: 2, got: 1 }
    );
}

/// A protected dataset as a grid: every block of `layout`, data first, by index.
fn protect(layout: &Layout, coder: &mut Coder, data: &[u8], block: usize) -> Vec<Vec<u8>> {
    let mut blocks: Vec<Vec<u8>> = (0..layout.total).map(|_| vec![0u8; block]).collect();
    for (i, chunk) in data.chunks(block).enumerate() {
        blocks[i][..chunk.len()].copy_from_slice(chunk);
    }
    for step in 0..layout.steps {
        let rows: Vec<u64> = layout.column(step).collect();
        let k = layout.params.k() as usize;
        let column: Vec<&[u8]> = rows[..k].iter().map(|&i| blocks[i as usize].as_slice()).collect();
        let parity = coder.encode(&column).unwrap();
        for (&i, shard) in rows[k..].iter().zip(parity) {
            blocks[i as usize] = shard;
        }
    }
    blocks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Erasing any ≤ M blocks of every column decodes to the original bytes; erasing M + 1 of
    /// one column is reported as unrecoverable, never answered with wrong data.
    #[test]
    fn any_m_erasures_per_column_decode(
        k in 2u32..12,
        m_fraction in 0.0f64..1.0,
        size in 0usize..40_000,
        block_half in 1usize..300,
        seed in any::<u64>(),
    ) {
        let m = 1 + ((f64::from(k - 1)) * m_fraction) as u32;
        let params = Params::new(k, m).unwrap();
        let block = block_half * 2;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        let layout = Layout::new(params, (size.div_ceil(block)).max(1) as u64);
        let mut coder = Coder::new(params, block).unwrap();
        let blocks = protect(&layout, &mut coder, &data, block);

        let slots = params.slots() as usize;
        let mut restored = Vec::with_capacity(data.len());
        for step in 0..layout.steps {
            let rows: Vec<u64> = layout.column(step).collect();
            let erase = rng.random_range(0..=m as usize);
            let lost = sample(&mut rng, slots, erase).into_vec();
            let mut column: Vec<Option<Vec<u8>>> = rows.iter().enumerate()
                .map(|(row, &i)| (!lost.contains(&row)).then(|| blocks[i as usize].clone()))
                .collect();
            coder.reconstruct(&mut column).unwrap();
            for (row, &i) in rows.iter().enumerate() {
                prop_assert_eq!(column[row].as_ref().unwrap(), &blocks[i as usize]);
            }

            let lost = sample(&mut rng, slots, m as usize + 1).into_vec();
            let mut column: Vec<Option<Vec<u8>>> = rows.iter().enumerate()
                .map(|(row, &i)| (!lost.contains(&row)).then(|| blocks[i as usize].clone()))
                .collect();
            let before = column.clone();
            prop_assert_eq!(
                coder.reconstruct(&mut column),
                Err(CodingError::Unrecoverable { present: slots - m as usize - 1, needed: k as usize })
            );
            prop_assert_eq!(column, before);
        }
        for i in 0..layout.blocks {
            restored.extend_from_slice(&blocks[i as usize]);
        }
        restored.truncate(size);
        prop_assert_eq!(restored, data);
    }
}

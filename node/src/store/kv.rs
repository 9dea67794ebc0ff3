//! The small transactional key-value interface the store adapters provide.

use super::StoreError;

/// The tables of the store. Keys and values are bytes; the layouts are in [`super::engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// block CID → block bytes
    Blocks,
    /// block CID → reference count (u64 LE)
    Refs,
    /// tree CID ‖ index (u64 BE) → leaf entry (block CID, proof)
    Leaves,
    /// manifest CID → encoded manifest
    Manifests,
    /// tree CID → tree record (manifests, writers, leaves)
    Trees,
    /// upload id (u64 BE) → upload record
    Uploads,
    /// upload id ‖ index (both u64 BE) → block CID held by the upload
    Pending,
    /// name → u64 LE counters (used bytes, blocks, next upload id, ...)
    Meta,
    /// manifest CID ‖ slot (u32 BE) → first leaf (u64 LE) ‖ leaf count (u64 LE) ‖ encoded manifest
    Slots,
    /// record key → record (the marketplace's availabilities, reservations, sales, purchases)
    Records,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Blocks,
        Table::Refs,
        Table::Leaves,
        Table::Manifests,
        Table::Trees,
        Table::Uploads,
        Table::Pending,
        Table::Meta,
        Table::Slots,
        Table::Records,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Blocks => "blocks",
            Table::Refs => "refs",
            Table::Leaves => "leaves",
            Table::Manifests => "manifests",
            Table::Trees => "trees",
            Table::Uploads => "uploads",
            Table::Pending => "pending",
            Table::Meta => "meta",
            Table::Slots => "slots",
            Table::Records => "records",
        }
    }
}

/// Reads inside a transaction.
pub trait KvRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits the entries whose key starts with `prefix`, in key order, while `visit` says so.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
}

/// Writes inside a transaction; nothing is visible to others until the transaction commits.
pub trait KvWrite: KvRead {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes a key; `false` if it was absent.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError>;
}

/// A database with read and write transactions.
///
/// `write` commits (durably, for a disk engine) when `f` returns `Ok`, and leaves no trace when
/// `f` returns `Err`.
pub trait KvEngine: Send + Sync + 'static {
    fn read<T>(&self, f: impl FnOnce(&dyn KvRead) -> Result<T, StoreError>) -> Result<T, StoreError>;
    fn write<T>(&self, f: impl FnOnce(&mut dyn KvWrite) -> Result<T, StoreError>) -> Result<T, StoreError>;
}

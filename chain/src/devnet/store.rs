//! On-disk persistence of the devnet: an append-only block file and the set of blocks
//! invalidated with `invalidateblock`. On start the blocks are replayed through full
//! validation (like `-reindex-chainstate`), so the UTXO set never needs its own file.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::{Block, BlockHash};

/// Failure reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The block file holds bytes that are not a block (truncated or corrupted).
    #[error("{path}: corrupt record at offset {offset}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
    },
}

/// The data directory: `blocks.dat` (records of `u32` little-endian length + consensus
/// encoded block) and `invalidated.txt` (one block hash per line).
#[derive(Debug)]
pub struct BlockStore {
    dir: PathBuf,
    blocks: BufWriter<File>,
}

const BLOCKS_FILE: &str = "blocks.dat";
const INVALIDATED_FILE: &str = "invalidated.txt";
const MEMPOOL_FILE: &str = "mempool.dat";

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl BlockStore {
    /// Opens (creating if needed) the data directory and returns the store together with
    /// the blocks and invalidated hashes it already holds, in the order they were written.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Block>, BTreeSet<BlockHash>), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(BLOCKS_FILE);
        let (blocks, valid_len) = read_blocks(&path)?;
        let inv_path = dir.join(INVALIDATED_FILE);
        let invalidated = match fs::read_to_string(&inv_path) {
            Ok(text) => text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                return Err(StoreError::Io {
                    path: inv_path,
                    source: e,
                })
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // A crash in the middle of an append leaves a partial last record: cut it off so
        // the next block is written where it can be read back.
        if file.metadata().map_err(io_err(&path))?.len() > valid_len {
            tracing::warn!(path = %path.display(), valid_len, "truncating a partial block record");
            file.set_len(valid_len).map_err(io_err(&path))?;
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                blocks: BufWriter::new(file),
            },
            blocks,
            invalidated,
        ))
    }

    /// Appends a block and flushes it to the OS.
    pub fn append_block(&mut self, block: &Block) -> Result<(), StoreError> {
        let path = self.dir.join(BLOCKS_FILE);
        let bytes = serialize(block);
        let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Corrupt {
            path: path.clone(),
            offset: 0,
        })?;
        self.blocks
            .write_all(&len.to_le_bytes())
            .map_err(io_err(&path))?;
        self.blocks.write_all(&bytes).map_err(io_err(&path))?;
        self.blocks.flush().map_err(io_err(&path))
    }

    /// Replaces the set of manually invalidated blocks (write to a temp file, then rename).
    pub fn write_invalidated(&mut self, set: &BTreeSet<BlockHash>) -> Result<(), StoreError> {
        let path = self.dir.join(INVALIDATED_FILE);
        let tmp = self.dir.join("invalidated.txt.tmp");
        let text: String = set.iter().map(|h| format!("{h}\n")).collect();
        fs::write(&tmp, text).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Writes the mempool's transactions (Core's `mempool.dat`, here: records of
    /// consensus-encoded transactions), replacing the previous file atomically.
    pub fn write_mempool(&mut self, txs: &[bitcoin::Transaction]) -> Result<(), StoreError> {
        let path = self.dir.join(MEMPOOL_FILE);
        let tmp = self.dir.join("mempool.dat.tmp");
        let mut bytes = Vec::new();
        for tx in txs {
            let raw = serialize(tx);
            bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&raw);
        }
        fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Reads the saved mempool, if any; unreadable records end the list.
    pub fn read_mempool(&self) -> Vec<bitcoin::Transaction> {
        let Ok(bytes) = fs::read(self.dir.join(MEMPOOL_FILE)) else {
            return Vec::new();
        };
        let mut txs = Vec::new();
        let mut rest = bytes.as_slice();
        while rest.len() >= 4 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(raw) = rest.get(4..4 + len) else {
                break;
            };
            match deserialize(raw) {
                Ok(tx) => txs.push(tx),
                Err(_) => break,
            }
            rest = &rest[4 + len..];
        }
        txs
    }

    /// Bytes used by the block file (`size_on_disk`).
    pub fn size_on_disk(&self) -> u64 {
        fs::metadata(self.dir.join(BLOCKS_FILE))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// Reads every complete record; returns the blocks and the length of the readable part.
fn read_blocks(path: &Path) -> Result<(Vec<Block>, u64), StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let mut reader = BufReader::new(file);
    let mut blocks = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        let mut buf = vec![0u8; len];
        match reader.read_exact(&mut buf) {
            Ok(()) => {}
            // A record cut short by a crash: everything before it is good.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        }
        let block: Block = deserialize(&buf).map_err(|_| StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
        })?;
        blocks.push(block);
        offset += 4 + len as u64;
    }
    Ok((blocks, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::blockdata::constants::genesis_block;
    use bitcoin::Network;

    #[test]
    fn a_partial_last_record_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let block = genesis_block(Network::Regtest);
        {
            let (mut store, blocks, _) = BlockStore::open(dir.path()).expect("open");
            assert!(blocks.is_empty());
            store.append_block(&block).expect("append");
        }
        // Simulate a crash mid-append: a length prefix with half a body.
        let path = dir.path().join(BLOCKS_FILE);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open file");
        f.write_all(&100u32.to_le_bytes())
            .and_then(|_| f.write_all(&[1, 2, 3]))
            .expect("write");
        drop(f);
        let (mut store, blocks, _) = BlockStore::open(dir.path()).expect("reopen");
        assert_eq!(blocks, vec![block.clone()]);
        store.append_block(&block).expect("append");
        drop(store);
        let (_, blocks, _) = BlockStore::open(dir.path()).expect("reopen");
        assert_eq!(blocks.len(), 2);
    }

    #[test]
    fn garbage_in_a_complete_record_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(BLOCKS_FILE), [3u8, 0, 0, 0, 9, 9, 9]).expect("write");
        assert!(matches!(
            BlockStore::open(dir.path()),
            Err(StoreError::Corrupt { offset: 0, .. })
        ));
    }
}

//! A simulated, fault-injecting file system for crash and I/O-error tests.
//!
//! It models what a real disk promises and no more: file contents are durable only up to
//! the last `sync`, directory entries (creations, renames, removals) only up to the last
//! `sync_dir`. A test can make the Nth mutating operation fail (once, or as a crash after
//! which everything fails), then [`SimFs::reboot`] the machine under a [`TearMode`] that
//! decides what survives of the unsynced bytes — the same ideas as SQLite's crash VFS and
//! RocksDB's `FaultInjectionTestFS`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::vfs::{MappedBytes, Vfs, VfsFile};

/// The kinds of mutating operation, for targeting faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpType {
    /// `create`
    Create,
    /// `append`
    Append,
    /// `sync` of a file
    Sync,
    /// `truncate`
    Truncate,
    /// `rename`
    Rename,
    /// `remove`
    Remove,
    /// `sync_dir`
    SyncDir,
}

/// What survives of unsynced file bytes at a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TearMode {
    /// Only synced bytes survive.
    DropUnsynced,
    /// A random prefix of the unsynced bytes survives.
    KeepRandomPrefix,
    /// Unsynced bytes survive up to a random multiple of `block` bytes, and the next block is
    /// half-written garbage.
    TearAt {
        /// Sector or page size: 512 or 4096.
        block: usize,
    },
    /// Each unsynced 4 KiB block independently survives or reads back as zeros.
    RandomBlocks,
}

/// All tear modes, for tests that try each.
pub const TEAR_MODES: [TearMode; 5] = [
    TearMode::DropUnsynced,
    TearMode::KeepRandomPrefix,
    TearMode::TearAt { block: 512 },
    TearMode::TearAt { block: 4096 },
    TearMode::RandomBlocks,
];

/// A planned fault.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// Only operations of this type count (any type when `None`).
    pub op: Option<OpType>,
    /// How many matching operations succeed before the faulty one.
    pub skip: u64,
    /// When true the fault is a crash: this and every later operation fails until reboot.
    pub crash: bool,
}

#[derive(Debug, Default, Clone)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Debug)]
struct State {
    files: HashMap<u64, FileData>,
    current_dir: BTreeMap<PathBuf, u64>,
    durable_dir: BTreeMap<PathBuf, u64>,
    dirs: HashSet<PathBuf>,
    next_inode: u64,
    mutating_ops: u64,
    fault: Option<Fault>,
    crashed: bool,
    locks: HashSet<PathBuf>,
    rng: StdRng,
}

/// The simulated file system. Cloning shares the same "disk".
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

impl SimFs {
    /// An empty disk; `seed` drives every random choice of faults and tears.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                files: HashMap::new(),
                current_dir: BTreeMap::new(),
                durable_dir: BTreeMap::new(),
                dirs: HashSet::new(),
                next_inode: 1,
                mutating_ops: 0,
                fault: None,
                crashed: false,
                locks: HashSet::new(),
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// Plans a fault (replacing any planned one).
    pub fn inject(&self, fault: Fault) {
        self.state.lock().fault = Some(fault);
    }

    /// Mutating operations performed so far.
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().mutating_ops
    }

    /// True while a planned fault has not fired yet.
    pub fn fault_pending(&self) -> bool {
        self.state.lock().fault.is_some()
    }

    /// True once a crash fault fired.
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Simulates power loss and restart: unsynced bytes survive per `mode`; unsynced directory
    /// changes survive when `keep_dir_ops`. Locks are released; planned faults are cleared.
    pub fn reboot(&self, mode: TearMode, keep_dir_ops: bool) {
        let mut st = self.state.lock();
        let st = &mut *st;
        if !keep_dir_ops {
            st.current_dir = st.durable_dir.clone();
        }
        st.durable_dir = st.current_dir.clone();
        let live: HashSet<u64> = st.current_dir.values().copied().collect();
        st.files.retain(|inode, _| live.contains(inode));
        for data in st.files.values_mut() {
            let survived = survive(&data.durable, &data.current, mode, &mut st.rng);
            data.durable = survived.clone();
            data.current = survived;
        }
        st.locks.clear();
        st.fault = None;
        st.crashed = false;
    }

    /// Flips one bit of a file's durable and current contents (corruption tests).
    pub fn flip_bit(&self, path: &Path, bit: u64) -> io::Result<()> {
        self.edit(path, |bytes| {
            let byte = (bit / 8) as usize;
            if let Some(b) = bytes.get_mut(byte) {
                *b ^= 1 << (bit % 8);
            }
        })
    }

    /// Cuts a file to `len` bytes, durably (corruption tests).
    pub fn chop(&self, path: &Path, len: usize) -> io::Result<()> {
        self.edit(path, |bytes| bytes.truncate(len))
    }

    /// Length of a file's current contents.
    pub fn file_len(&self, path: &Path) -> io::Result<usize> {
        let st = self.state.lock();
        let inode = st.current_dir.get(path).ok_or_else(not_found)?;
        Ok(st.files[inode].current.len())
    }

    fn edit(&self, path: &Path, f: impl Fn(&mut Vec<u8>)) -> io::Result<()> {
        let mut st = self.state.lock();
        let inode = *st.current_dir.get(path).ok_or_else(not_found)?;
        let data = st.files.get_mut(&inode).ok_or_else(not_found)?;
        f(&mut data.durable);
        f(&mut data.current);
        Ok(())
    }

    /// Counts a mutating operation and decides whether it fails.
    fn step(&self, op: OpType) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.crashed {
            return Err(injected("machine has crashed"));
        }
        st.mutating_ops += 1;
        let Some(mut fault) = st.fault else {
            return Ok(());
        };
        if fault.op.is_some_and(|want| want != op) {
            return Ok(());
        }
        if fault.skip > 0 {
            fault.skip -= 1;
            st.fault = Some(fault);
            return Ok(());
        }
        st.fault = None;
        st.crashed = fault.crash;
        Err(injected(&format!("{op:?} failed")))
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.state.lock().crashed {
            return Err(injected("machine has crashed"));
        }
        Ok(())
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file")
}

fn survive(durable: &[u8], current: &[u8], mode: TearMode, rng: &mut StdRng) -> Vec<u8> {
    if !current.starts_with(durable) || current.len() == durable.len() {
        // Not an append since the last sync (e.g. an unsynced truncate): the old bytes remain.
        return if current.len() == durable.len() {
            current.to_vec()
        } else {
            durable.to_vec()
        };
    }
    let unsynced = &current[durable.len()..];
    let mut out = durable.to_vec();
    match mode {
        TearMode::DropUnsynced => {}
        TearMode::KeepRandomPrefix => {
            let keep = rng.random_range(0..=unsynced.len());
            out.extend_from_slice(&unsynced[..keep]);
        }
        TearMode::TearAt { block } => {
            let blocks = unsynced.len() / block;
            let whole = rng.random_range(0..=blocks) * block;
            out.extend_from_slice(&unsynced[..whole]);
            let rest = &unsynced[whole..];
            let half = rng.random_range(0..=rest.len().min(block));
            out.extend_from_slice(&rest[..half / 2]);
            out.extend((half / 2..half).map(|_| rng.random::<u8>()));
        }
        TearMode::RandomBlocks => {
            for chunk in unsynced.chunks(4096) {
                if rng.random_bool(0.5) {
                    out.extend_from_slice(chunk);
                } else {
                    out.extend(std::iter::repeat_n(0u8, chunk.len()));
                }
            }
        }
    }
    out
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: u64,
}

impl VfsFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(err) = self.fs.step(OpType::Append) {
            // A failed write may still have put part of its bytes in the page cache.
            let mut st = self.fs.state.lock();
            let keep = st.rng.random_range(0..=buf.len());
            if let Some(data) = st.files.get_mut(&self.inode) {
                data.current.extend_from_slice(&buf[..keep]);
            }
            return Err(err);
        }
        let mut st = self.fs.state.lock();
        let data = st.files.get_mut(&self.inode).ok_or_else(not_found)?;
        data.current.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fs.step(OpType::Sync)?;
        let mut st = self.fs.state.lock();
        let data = st.files.get_mut(&self.inode).ok_or_else(not_found)?;
        data.durable = data.current.clone();
        Ok(())
    }
}

#[derive(Debug)]
struct OwnedBytes(Vec<u8>);

impl MappedBytes for OwnedBytes {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.dir);
    }
}

impl Vfs for SimFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.step(OpType::Create)?;
        let mut st = self.state.lock();
        if st.current_dir.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let inode = st.next_inode;
        st.next_inode += 1;
        st.files.insert(inode, FileData::default());
        st.current_dir.insert(path.to_path_buf(), inode);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check_alive()?;
        let st = self.state.lock();
        let inode = st.current_dir.get(path).ok_or_else(not_found)?;
        Ok(st.files[inode].current.clone())
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedBytes>> {
        Ok(Arc::new(OwnedBytes(self.read(path)?)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.step(OpType::Truncate)?;
        let mut st = self.state.lock();
        let inode = *st.current_dir.get(path).ok_or_else(not_found)?;
        let data = st.files.get_mut(&inode).ok_or_else(not_found)?;
        data.current.truncate(len as usize);
        data.durable = data.current.clone();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step(OpType::Rename)?;
        let mut st = self.state.lock();
        let inode = st.current_dir.remove(from).ok_or_else(not_found)?;
        st.current_dir.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.step(OpType::Remove)?;
        let mut st = self.state.lock();
        st.current_dir.remove(path).ok_or_else(not_found)?;
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.step(OpType::SyncDir)?;
        let mut st = self.state.lock();
        st.durable_dir = st.current_dir.clone();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check_alive()?;
        let st = self.state.lock();
        Ok(st
            .current_dir
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check_alive()?;
        self.state.lock().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        self.check_alive()?;
        let mut st = self.state.lock();
        if !st.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "directory is locked",
            ));
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
        }))
    }
}

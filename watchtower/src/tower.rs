//! The tower: ties the gatekeeper, the store, the watcher and the responder together.
//! Requests from the API come in through [`Tower::register`], [`Tower::add_appointment`],
//! [`Tower::appointment`] and [`Tower::delete`]; [`Tower::run`] follows the chain.
//!
//! Crash safety: an appointment is committed before the API answers; a breach is recorded
//! (status `responding`, with the penalty) before the penalty is broadcast; the last block
//! scanned is saved after its effects, so after a crash blocks are scanned again (every
//! step is idempotent) and penalties in flight are checked and rebroadcast at start.

use crate::appointment::Locator;
use crate::gatekeeper::{GateError, Gatekeeper, Standing};
use crate::metrics::Metrics;
use crate::responder::{self, Step};
use crate::store::{NewAppointment, Status, Store, StoreError, StoredAppointment, Upsert};
use crate::watcher::{self, LocatorIndex};
use crate::writer::AppointmentWriter;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Block, BlockHash};
use chain::{BlockRef, ChainError, ChainEvent, ChainPoller, ChainSource};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Operator settings.
#[derive(Debug, Clone)]
pub struct TowerConfig {
    /// Confirmations after which a penalty is done.
    pub confirmations: u32,
    /// Appointment slots per user.
    pub max_appointments: u32,
    /// Blocks a registration lasts.
    pub subscription_blocks: u32,
    /// Largest accepted encrypted blob, bytes.
    pub max_blob_size: usize,
    /// How often the chain is polled.
    pub poll_interval: Duration,
    /// Users with a running subscription at once; beyond, a new user is refused
    /// (`tower_full`).
    pub max_users: usize,
}

impl Default for TowerConfig {
    fn default() -> Self {
        TowerConfig {
            confirmations: 6,
            max_appointments: 10_000,
            subscription_blocks: 4032,
            max_blob_size: 65_536,
            poll_interval: Duration::from_millis(500),
            max_users: DEFAULT_MAX_USERS,
        }
    }
}

/// The default of [`TowerConfig::max_users`].
pub const DEFAULT_MAX_USERS: usize = 10_000;

/// The largest `to_self_delay` an appointment may name (LND's and Core Lightning's
/// default maximum): it bounds how long the tower keeps trying to get a penalty in.
pub const MAX_TO_SELF_DELAY: u32 = 2016;

/// Blocks past a breach's CSV window after which a penalty that has not confirmed is
/// given up: by then the cheater could take the output with the delayed key.
pub const GIVE_UP_MARGIN_BLOCKS: u32 = 6;

/// Failures of tower operations.
#[derive(Debug, thiserror::Error)]
pub enum TowerError {
    /// Refused by the gatekeeper.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// No free slot for a new appointment.
    #[error("appointment quota exhausted ({0} slots)")]
    QuotaExceeded(u32),
    /// The appointment's breach has been seen; it can no longer change.
    #[error("appointment already triggered")]
    Triggered,
    /// As many users as the tower takes are registered.
    #[error("the tower takes no more users ({0})")]
    Full(usize),
    /// The request's counter was refused.
    #[error(transparent)]
    Counter(#[from] crate::gatekeeper::CounterError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain back-end failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

const LAST_BLOCK: &str = "last_block";
const TOWER_ID: &str = "tower_id";
/// Blocks kept in [`RecentBlocks`].
const RECENT_BLOCKS: usize = 6;

/// Locators of the transactions of the last [`RECENT_BLOCKS`] blocks.
#[derive(Default)]
struct RecentBlocks {
    blocks: std::collections::VecDeque<(BlockRef, Vec<Locator>)>,
    by_locator: HashMap<Locator, (BlockRef, Arc<Block>, usize)>,
}

impl RecentBlocks {
    fn connect(&mut self, block_ref: BlockRef, block: &Arc<Block>) {
        let mut locators = Vec::with_capacity(block.txdata.len());
        for (i, tx) in block.txdata.iter().enumerate() {
            let l = Locator::from_txid(&tx.compute_txid());
            self.by_locator.insert(l, (block_ref, block.clone(), i));
            locators.push(l);
        }
        self.blocks.push_back((block_ref, locators));
        while self.blocks.len() > RECENT_BLOCKS {
            if let Some((old, locators)) = self.blocks.pop_front() {
                self.forget(&old, &locators);
            }
        }
    }

    fn disconnect(&mut self, block_ref: &BlockRef) {
        if let Some(pos) = self.blocks.iter().position(|(b, _)| b == block_ref) {
            if let Some((old, locators)) = self.blocks.remove(pos) {
                self.forget(&old, &locators);
            }
        }
    }

    fn forget(&mut self, block_ref: &BlockRef, locators: &[Locator]) {
        for l in locators {
            if matches!(self.by_locator.get(l), Some((b, _, _)) if b == block_ref) {
                self.by_locator.remove(l);
            }
        }
    }
}

/// The running tower.
pub struct Tower {
    store: Store,
    writer: AppointmentWriter,
    chain: Arc<dyn ChainSource>,
    config: TowerConfig,
    gatekeeper: Gatekeeper,
    counters: crate::gatekeeper::Counters,
    /// The tower's id, named in every signed request.
    id: [u8; 32],
    index: Mutex<LocatorIndex>,
    /// The last few blocks, so that an appointment arriving just after its breach was
    /// mined (a client's retry queue delivering late) is still acted on.
    recent: Mutex<RecentBlocks>,
    /// Height of the last block processed (what new appointments start at).
    height: AtomicU32,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

fn encode_block(b: &BlockRef) -> Vec<u8> {
    let mut v = b.hash.to_byte_array().to_vec();
    v.extend_from_slice(&b.height.to_be_bytes());
    v
}

fn decode_block(v: &[u8]) -> Option<BlockRef> {
    let hash = BlockHash::from_byte_array(v.get(..32)?.try_into().ok()?);
    let height = u32::from_be_bytes(v.get(32..36)?.try_into().ok()?);
    Some(BlockRef { hash, height })
}

impl Tower {
    /// Loads users and watched appointments from `store`.
    pub async fn open(
        store: Store,
        chain: Arc<dyn ChainSource>,
        config: TowerConfig,
    ) -> Result<Arc<Tower>, TowerError> {
        let users = store.users().await?;
        let gatekeeper = Gatekeeper::new(
            config.max_appointments,
            users
                .iter()
                .map(|u| (u.user_id, u.expiry_height, u.appointments)),
        );
        let index = LocatorIndex::from_entries(store.watching().await?);
        let id = match store.meta(TOWER_ID).await? {
            Some(v) if v.len() == 32 => v.try_into().expect("32 bytes"),
            _ => {
                let mut id = [0u8; 32];
                bitcoin::secp256k1::rand::RngCore::fill_bytes(
                    &mut bitcoin::secp256k1::rand::thread_rng(),
                    &mut id,
                );
                store.set_meta(TOWER_ID, &id).await?;
                id
            }
        };
        let metrics = Metrics::default();
        metrics
            .appointments
            .store(store.count().await? as i64, Ordering::Relaxed);
        // A new tower starts watching at the tip; from then on every block is scanned,
        // including those mined while it is down.
        let height = match store.meta(LAST_BLOCK).await?.and_then(|v| decode_block(&v)) {
            Some(b) => b.height,
            None => {
                let tip = chain.tip().await?;
                store.set_meta(LAST_BLOCK, &encode_block(&tip)).await?;
                tip.height
            }
        };
        metrics
            .block_height
            .store(u64::from(height), Ordering::Relaxed);
        tracing::info!(
            users = users.len(),
            watching = index.len(),
            height,
            "tower loaded"
        );
        Ok(Arc::new(Tower {
            writer: AppointmentWriter::start(store.clone()),
            store,
            chain,
            config,
            gatekeeper,
            counters: Default::default(),
            id,
            index: Mutex::new(index),
            recent: Mutex::new(RecentBlocks::default()),
            height: AtomicU32::new(height),
            metrics,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &TowerConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Last block height processed.
    pub fn height(&self) -> u32 {
        self.height.load(Ordering::Relaxed)
    }

    /// Appointments in the watcher's index.
    pub fn watching(&self) -> usize {
        self.index().len()
    }

    fn index(&self) -> std::sync::MutexGuard<'_, LocatorIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recent_lock(&self) -> std::sync::MutexGuard<'_, RecentBlocks> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `user` (or renews it): its subscription lasts `subscription_blocks` from
    /// now. Durable before it returns.
    pub async fn register(&self, user: PublicKey) -> Result<Standing, TowerError> {
        if !self.gatekeeper.is_known(&user)
            && self.gatekeeper.active_users(self.height()) >= self.config.max_users
        {
            return Err(TowerError::Full(self.config.max_users));
        }
        let expiry = self
            .height()
            .saturating_add(self.config.subscription_blocks);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.store.upsert_user(&user, expiry, now).await?;
        Ok(self.gatekeeper.registered(user, expiry))
    }

    /// The tower's id (named in every signed request).
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    /// Accepts the counter of a signed request of `user` (checked already), or refuses
    /// it: a replay, or too far from the clock. Only a registration may come from a key
    /// the tower does not know, and only while it has room for one more.
    pub fn accept_counter(
        &self,
        user: &PublicKey,
        counter: u64,
        registering: bool,
    ) -> Result<(), TowerError> {
        if !self.gatekeeper.is_known(user) {
            if !registering {
                return Err(GateError::UnknownUser.into());
            }
            if self.gatekeeper.active_users(self.height()) >= self.config.max_users {
                return Err(TowerError::Full(self.config.max_users));
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(self.counters.accept(user, counter, now_ms)?)
    }

    /// Whether `user` is registered.
    pub fn is_registered(&self, user: &PublicKey) -> bool {
        self.gatekeeper.is_known(user)
    }

    /// Stores (or replaces) an appointment whose signature the caller has verified.
    /// Returns whether it replaced one, and the user's standing. Durable before it returns.
    pub async fn add_appointment(
        &self,
        mut a: NewAppointment,
    ) -> Result<(bool, Standing), TowerError> {
        let height = self.height();
        a.start_height = height;
        let reserved = self.gatekeeper.admit(&a.user_id, height)?;
        let outcome = self.writer.upsert(a.clone(), reserved).await;
        if !matches!(outcome, Ok(Upsert::Created(_))) && reserved {
            self.gatekeeper.release(&a.user_id, 1);
        }
        let (id, updated) = match outcome? {
            Upsert::Created(id) => {
                self.index().insert(a.locator, id);
                self.metrics.appointments.fetch_add(1, Ordering::Relaxed);
                (id, false)
            }
            Upsert::Updated(id) => {
                self.index().insert(a.locator, id);
                (id, true)
            }
            Upsert::NoSlot => return Err(TowerError::QuotaExceeded(self.config.max_appointments)),
            Upsert::Triggered => return Err(TowerError::Triggered),
        };
        let recent = self.recent_lock().by_locator.get(&a.locator).cloned();
        if let Some((block_ref, block, i)) = recent {
            // The breach is already in a recent block: act now.
            self.on_breach(id, &block.txdata[i], block_ref.height)
                .await?;
        }
        let standing = self
            .gatekeeper
            .get(&a.user_id)
            .ok_or(TowerError::Gate(GateError::UnknownUser))?;
        Ok((updated, standing))
    }

    /// A user's appointment.
    pub async fn appointment(
        &self,
        user: &PublicKey,
        locator: &Locator,
    ) -> Result<Option<StoredAppointment>, TowerError> {
        Ok(self.store.user_appointment(user, locator).await?)
    }

    /// Deletes a user's appointments by tag or by locators (penalties in flight stay).
    pub async fn delete(
        &self,
        user: &PublicKey,
        tag: Option<&[u8]>,
        locators: &[Locator],
    ) -> Result<(u32, Standing), TowerError> {
        if !self.gatekeeper.is_known(user) {
            return Err(GateError::UnknownUser.into());
        }
        let mut deleted = match tag {
            Some(tag) => self.store.delete_by_tag(user, tag).await?,
            None => Vec::new(),
        };
        if !locators.is_empty() {
            deleted.extend(self.store.delete_by_locators(user, locators).await?);
        }
        {
            let mut index = self.index();
            for (id, l) in &deleted {
                index.remove(l, *id);
            }
        }
        let n = deleted.len() as u32;
        self.gatekeeper.release(user, n);
        self.metrics
            .appointments
            .fetch_sub(i64::from(n), Ordering::Relaxed);
        let standing = self
            .gatekeeper
            .get(user)
            .ok_or(TowerError::Gate(GateError::UnknownUser))?;
        Ok((n, standing))
    }

    /// Follows the chain until `shutdown` resolves: scans every connected block from the
    /// last one processed (so blocks mined while the tower was down are scanned too),
    /// handles reorgs, drives penalties to their confirmations.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut poller: Option<ChainPoller<dyn ChainSource>> = None;
        let mut first = true;
        loop {
            if poller.is_none() {
                match self.start_poller().await {
                    Ok(p) => poller = Some(p),
                    Err(e) => tracing::warn!(error = %e, "cannot reach the chain; retrying"),
                }
            }
            if let Some(p) = poller.as_mut() {
                if first {
                    // Penalties in flight when the tower stopped: check (and rebroadcast).
                    match self.respond_all().await {
                        Ok(()) => first = false,
                        Err(e) => tracing::warn!(error = %e, "responder pass failed"),
                    }
                }
                match p.poll().await {
                    Ok(events) if events.is_empty() => {}
                    Ok(events) => {
                        let best = p.best();
                        match self.process(events).await {
                            Ok(()) => {
                                if let Err(e) =
                                    self.store.set_meta(LAST_BLOCK, &encode_block(&best)).await
                                {
                                    tracing::warn!(error = %e, "cannot save the last block");
                                }
                            }
                            Err(e) => {
                                // Start again from the last saved block: every step is
                                // idempotent, so nothing is done twice that matters.
                                tracing::warn!(error = %e, "block processing failed; rescanning");
                                poller = None;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "chain poll failed"),
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    async fn start_poller(&self) -> Result<ChainPoller<dyn ChainSource>, TowerError> {
        let start = match self
            .store
            .meta(LAST_BLOCK)
            .await?
            .and_then(|v| decode_block(&v))
        {
            Some(b) => b,
            None => self.chain.tip().await?,
        };
        Ok(ChainPoller::from_block(self.chain.clone(), start))
    }

    /// Applies chain events in order.
    pub async fn process(&self, events: Vec<ChainEvent>) -> Result<(), TowerError> {
        let mut need_response = false;
        for e in events {
            match e {
                ChainEvent::BlockConnected { block_ref, block } => {
                    self.block_connected(block_ref, &block).await?;
                    self.recent_lock().connect(block_ref, &block);
                    need_response = true;
                }
                ChainEvent::BlockDisconnected { block_ref } => {
                    tracing::info!(height = block_ref.height, hash = %block_ref.hash, "block disconnected");
                    Metrics::inc(&self.metrics.blocks_disconnected);
                    self.recent_lock().disconnect(&block_ref);
                    self.set_height(block_ref.height.saturating_sub(1));
                    need_response = true;
                }
            }
        }
        if need_response {
            self.respond_all().await?;
            self.prune().await?;
        }
        Ok(())
    }

    fn set_height(&self, h: u32) {
        self.height.store(h, Ordering::Relaxed);
        self.metrics
            .block_height
            .store(u64::from(h), Ordering::Relaxed);
    }

    /// The transactions of `block` whose locators match watched appointments (the
    /// watcher's O(1)-per-transaction lookup; no side effects).
    pub fn scan(&self, block: &Block) -> Vec<watcher::Breach> {
        self.index().scan(block)
    }

    async fn block_connected(
        &self,
        block_ref: BlockRef,
        block: &Arc<Block>,
    ) -> Result<(), TowerError> {
        let breaches = self.scan(block);
        tracing::debug!(height = block_ref.height, hash = %block_ref.hash, txs = block.txdata.len(), breaches = breaches.len(), "block scanned");
        Metrics::inc(&self.metrics.blocks_scanned);
        self.metrics
            .transactions_scanned
            .fetch_add(block.txdata.len() as u64, Ordering::Relaxed);
        for breach in breaches {
            for id in breach.ids {
                self.on_breach(id, &breach.tx, block_ref.height).await?;
            }
        }
        self.set_height(block_ref.height);
        Ok(())
    }

    /// Appointment `id` matched `breach_tx`, mined at `height`: decrypt, check, record,
    /// broadcast (or record why not). Does nothing unless the appointment is watching.
    async fn on_breach(
        &self,
        id: i64,
        breach_tx: &bitcoin::Transaction,
        height: u32,
    ) -> Result<(), TowerError> {
        let Some(stored) = self.store.appointment(id).await? else {
            return Ok(());
        };
        if stored.status != Status::Watching {
            return Ok(());
        }
        Metrics::inc(&self.metrics.breaches_seen);
        let locator = stored.appointment.locator;
        let breach = breach_tx.compute_txid();
        match watcher::penalty_for(&stored.appointment.encrypted_blob, breach_tx) {
            Ok(penalty) => {
                tracing::info!(%locator, %breach, height, penalty = %penalty.compute_txid(), "breach found");
                self.store
                    .set_responding(id, &breach, height, &penalty)
                    .await?;
                self.index().remove(&locator, id);
                if responder::broadcast(self.chain.as_ref(), &penalty)
                    .await
                    .is_ok()
                {
                    Metrics::inc(&self.metrics.penalties_broadcast);
                }
            }
            Err(reason) => {
                tracing::warn!(%locator, %breach, %reason, "breach found but the appointment gives no valid penalty; ignored");
                self.store
                    .set_invalid(id, &breach, &reason.to_string())
                    .await?;
                self.index().remove(&locator, id);
                Metrics::inc(&self.metrics.invalid_appointments);
            }
        }
        Ok(())
    }

    /// One responder pass over every penalty in flight.
    async fn respond_all(&self) -> Result<(), TowerError> {
        for a in self.store.responding().await? {
            let (Some(breach), Some(penalty)) = (a.breach_txid, a.penalty_tx.as_ref()) else {
                continue;
            };
            let step = responder::step(
                self.chain.as_ref(),
                &breach,
                penalty,
                self.config.confirmations,
            )
            .await?;
            match step {
                Step::BackToWatching => {
                    tracing::info!(locator = %a.appointment.locator, %breach, "breach left the chain; watching again");
                    self.store.reset_to_watching(a.id).await?;
                    self.index().insert(a.appointment.locator, a.id);
                }
                Step::Confirmed(n) => {
                    tracing::info!(locator = %a.appointment.locator, penalty = %penalty.compute_txid(), confirmations = n, "penalty confirmed");
                    self.store
                        .set_confirmations(a.id, n, Status::Confirmed)
                        .await?;
                    Metrics::inc(&self.metrics.penalties_confirmed);
                }
                Step::Rebroadcast | Step::Waiting(0) if self.past_csv_window(&a) => {
                    // Still not in after the breach's CSV window: the cheater may take
                    // the output now, and a penalty that never gets in (planted, or
                    // paying too little) is not retried for ever.
                    let reason = format!(
                        "the penalty did not confirm within the breach's CSV window ({} blocks)",
                        a.appointment.to_self_delay
                    );
                    tracing::warn!(locator = %a.appointment.locator, %breach, "{reason}; given up");
                    self.store.set_invalid(a.id, &breach, &reason).await?;
                }
                Step::Waiting(n) => {
                    if n != a.confirmations {
                        self.store
                            .set_confirmations(a.id, n, Status::Responding)
                            .await?;
                    }
                }
                Step::Rebroadcast => {
                    Metrics::inc(&self.metrics.penalties_broadcast);
                    if a.confirmations != 0 {
                        self.store
                            .set_confirmations(a.id, 0, Status::Responding)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the CSV window of `a`'s breach (and a margin) has passed.
    fn past_csv_window(&self, a: &StoredAppointment) -> bool {
        a.breach_height.is_some_and(|h| {
            self.height()
                >= h.saturating_add(a.appointment.to_self_delay)
                    .saturating_add(GIVE_UP_MARGIN_BLOCKS)
        })
    }

    /// Removes the appointments of users whose subscription has ended.
    async fn prune(&self) -> Result<(), TowerError> {
        let pruned = self.store.prune_expired(self.height()).await?;
        if pruned.is_empty() {
            return Ok(());
        }
        let mut index = self.index();
        for (id, l, user) in &pruned {
            index.remove(l, *id);
            self.gatekeeper.release(user, 1);
        }
        self.metrics
            .appointments
            .fetch_sub(pruned.len() as i64, Ordering::Relaxed);
        tracing::info!(count = pruned.len(), "expired appointments pruned");
        Ok(())
    }
}

//! The log of pending updates of both sides and the balances each commitment sees.
//!
//! BOLT 2 commits an update in stages. An update of ours enters the remote commitment when
//! we send commitment_signed, is locked there when the remote revokes its previous
//! commitment, then enters our commitment with the remote's next commitment_signed. An
//! update of theirs enters our commitment with their commitment_signed (we revoke at
//! once), then the remote commitment with our next commitment_signed, and is locked when
//! they revoke. Each update carries the flags of these stages; a commitment's content is
//! the base state plus the updates it includes.

use crate::msgs::OnionPacket;
use crate::types::{FeeratePerKw, HtlcId, Msat, PaymentHash, PaymentPreimage, Side};

/// An HTLC as both sides know it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Htlc {
    /// Who offered (pays) it.
    pub offerer: Side,
    /// The offerer's id for it.
    pub id: HtlcId,
    /// Its value.
    pub amount: Msat,
    /// The hash it is locked to.
    pub payment_hash: PaymentHash,
    /// Its absolute timeout height.
    pub cltv_expiry: u32,
    /// The onion for the next hop.
    pub onion: OnionPacket,
}

/// How an HTLC is removed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Removal {
    /// Settled with the preimage: the receiver gets the value.
    Fulfill(PaymentPreimage),
    /// Failed with an encrypted reason: the value returns to the offerer.
    Fail(Vec<u8>),
    /// Failed because the onion was malformed.
    FailMalformed {
        /// SHA-256 of the onion.
        sha256_of_onion: [u8; 32],
        /// BOLT 4 failure code.
        failure_code: u16,
    },
}

/// One update_* message's effect.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdateKind {
    /// update_add_htlc.
    Add(Htlc),
    /// update_fulfill_htlc / update_fail_htlc / update_fail_malformed_htlc of the HTLC
    /// with this id, offered by the other side than the update's sender.
    Remove(HtlcId, Removal),
    /// update_fee.
    Fee(FeeratePerKw),
}

/// An update and how far it has been committed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Update {
    /// Who sent it.
    pub sender: Side,
    /// What it does.
    pub kind: UpdateKind,
    /// In our current commitment.
    pub in_local: bool,
    /// In the remote's latest commitment (the one we signed last).
    pub in_remote: bool,
    /// In a remote commitment that the remote has irrevocably taken (it revoked the one
    /// before).
    pub locked_remote: bool,
}

impl Update {
    fn new(sender: Side, kind: UpdateKind) -> Self {
        Update {
            sender,
            kind,
            in_local: false,
            in_remote: false,
            locked_remote: false,
        }
    }

    /// Fully committed: in both commitments, with the older ones revoked.
    pub fn is_done(&self) -> bool {
        self.in_local && self.locked_remote
    }
}

/// Which commitment a view is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ViewOf {
    /// Our current commitment.
    CurrentLocal,
    /// Our next commitment (what the remote's next commitment_signed signs).
    NextLocal,
    /// The remote's latest commitment.
    CurrentRemote,
    /// The remote's next commitment (what our next commitment_signed signs).
    NextRemote,
    /// Every update known, applied: the most any commitment can include.
    Everything,
}

/// Balances and HTLCs of one commitment, from our side.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct View {
    /// Our balance before fees.
    pub local: Msat,
    /// Their balance before fees.
    pub remote: Msat,
    /// The commitment's fee rate.
    pub feerate: FeeratePerKw,
    /// The HTLCs, in the order they were added.
    pub htlcs: Vec<Htlc>,
    /// Some add took more than its offerer had: this commitment cannot exist.
    pub overdrawn: bool,
}

impl View {
    /// The balance of `side`.
    pub fn balance(&self, side: Side) -> Msat {
        match side {
            Side::Local => self.local,
            Side::Remote => self.remote,
        }
    }

    fn balance_mut(&mut self, side: Side) -> &mut Msat {
        match side {
            Side::Local => &mut self.local,
            Side::Remote => &mut self.remote,
        }
    }
}

/// Both sides' updates that are not yet folded into the base state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpdateLog {
    /// Our balance after every folded update.
    pub base_local: Msat,
    /// Their balance after every folded update.
    pub base_remote: Msat,
    /// The fee rate after every folded update.
    pub base_feerate: FeeratePerKw,
    /// Updates in the order they were sent or received.
    pub updates: Vec<Update>,
    /// HTLCs whose add is folded (fully committed) but whose removal is not.
    pub committed_htlcs: Vec<Htlc>,
}

impl UpdateLog {
    /// A log with these starting balances.
    pub fn new(local: Msat, remote: Msat, feerate: FeeratePerKw) -> Self {
        UpdateLog {
            base_local: local,
            base_remote: remote,
            base_feerate: feerate,
            updates: Vec::new(),
            committed_htlcs: Vec::new(),
        }
    }

    /// Appends a new update.
    pub fn push(&mut self, sender: Side, kind: UpdateKind) {
        self.updates.push(Update::new(sender, kind));
    }

    fn includes(u: &Update, of: ViewOf) -> bool {
        match of {
            ViewOf::CurrentLocal => u.in_local,
            ViewOf::CurrentRemote => u.in_remote,
            ViewOf::NextLocal => match u.sender {
                Side::Local => u.locked_remote,
                Side::Remote => true,
            },
            ViewOf::NextRemote => match u.sender {
                Side::Local => true,
                Side::Remote => u.in_local,
            },
            ViewOf::Everything => true,
        }
    }

    /// The balances, fee rate and HTLCs of commitment `of`.
    pub fn view(&self, of: ViewOf) -> View {
        let mut v = View {
            local: self.base_local,
            remote: self.base_remote,
            feerate: self.base_feerate,
            htlcs: self.committed_htlcs.clone(),
            overdrawn: false,
        };
        for u in self.updates.iter().filter(|u| Self::includes(u, of)) {
            match &u.kind {
                UpdateKind::Add(h) => {
                    let b = v.balance_mut(h.offerer);
                    match b.checked_sub(h.amount) {
                        Some(left) => *b = left,
                        None => {
                            *b = Msat::ZERO;
                            v.overdrawn = true;
                        }
                    }
                    v.htlcs.push(h.clone());
                }
                UpdateKind::Remove(id, removal) => {
                    let offerer = u.sender.other();
                    if let Some(pos) = v
                        .htlcs
                        .iter()
                        .position(|h| h.offerer == offerer && h.id == *id)
                    {
                        let h = v.htlcs.remove(pos);
                        let to = match removal {
                            Removal::Fulfill(_) => u.sender,
                            _ => offerer,
                        };
                        let b = v.balance_mut(to);
                        *b = Msat(b.0.saturating_add(h.amount.0));
                    }
                }
                UpdateKind::Fee(f) => v.feerate = *f,
            }
        }
        v
    }

    /// Whether commitment `NextLocal` would differ from `CurrentLocal`.
    pub fn local_has_changes(&self) -> bool {
        self.updates
            .iter()
            .any(|u| !u.in_local && Self::includes(u, ViewOf::NextLocal))
    }

    /// Whether commitment `NextRemote` would differ from `CurrentRemote`.
    pub fn remote_has_changes(&self) -> bool {
        self.updates
            .iter()
            .any(|u| !u.in_remote && Self::includes(u, ViewOf::NextRemote))
    }

    /// We sent commitment_signed: the remote commitment now holds `NextRemote`.
    pub fn on_commitment_sent(&mut self) {
        for u in &mut self.updates {
            if Self::includes(u, ViewOf::NextRemote) {
                u.in_remote = true;
            }
        }
    }

    /// We received (and revoked for) commitment_signed: ours now holds `NextLocal`.
    pub fn on_commitment_received(&mut self) {
        for u in &mut self.updates {
            if Self::includes(u, ViewOf::NextLocal) {
                u.in_local = true;
            }
        }
        self.fold();
    }

    /// The remote revoked its previous commitment: what its latest holds is locked.
    pub fn on_revoke_received(&mut self) {
        for u in &mut self.updates {
            if u.in_remote {
                u.locked_remote = true;
            }
        }
        self.fold();
    }

    /// Folds fully committed updates into the base state, keeping the log short.
    fn fold(&mut self) {
        let mut kept = Vec::with_capacity(self.updates.len());
        for u in std::mem::take(&mut self.updates) {
            if !u.is_done() {
                kept.push(u);
                continue;
            }
            match u.kind {
                UpdateKind::Add(h) => {
                    let b = match h.offerer {
                        Side::Local => &mut self.base_local,
                        Side::Remote => &mut self.base_remote,
                    };
                    *b = Msat(b.0.saturating_sub(h.amount.0));
                    self.committed_htlcs.push(h);
                }
                UpdateKind::Remove(id, removal) => {
                    let offerer = u.sender.other();
                    if let Some(pos) = self
                        .committed_htlcs
                        .iter()
                        .position(|h| h.offerer == offerer && h.id == id)
                    {
                        let h = self.committed_htlcs.remove(pos);
                        let to = match removal {
                            Removal::Fulfill(_) => u.sender,
                            _ => offerer,
                        };
                        let b = match to {
                            Side::Local => &mut self.base_local,
                            Side::Remote => &mut self.base_remote,
                        };
                        *b = Msat(b.0.saturating_add(h.amount.0));
                    } else {
                        // The add is still in the log; keep the removal for later.
                        kept.push(Update {
                            kind: UpdateKind::Remove(id, removal),
                            ..u
                        });
                    }
                }
                UpdateKind::Fee(f) => self.base_feerate = f,
            }
        }
        self.updates = kept;
    }

    /// Drops the updates that no commitment_signed covers (BOLT 2, on disconnection) and
    /// returns our own dropped updates, which the caller may send again.
    pub fn drop_uncommitted(&mut self) -> Vec<UpdateKind> {
        let mut dropped = Vec::new();
        self.updates.retain(|u| {
            let keep = match u.sender {
                Side::Local => u.in_remote,
                Side::Remote => u.in_local,
            };
            if !keep && u.sender == Side::Local {
                dropped.push(u.kind.clone());
            }
            keep
        });
        dropped
    }

    /// The HTLC `id` offered by `offerer`, in any state, and whether a removal of it is
    /// already in the log.
    pub fn find_htlc(&self, offerer: Side, id: HtlcId) -> Option<(&Htlc, HtlcStatus)> {
        if let Some(h) = self
            .committed_htlcs
            .iter()
            .find(|h| h.offerer == offerer && h.id == id)
        {
            return Some((h, self.removal_status(offerer, id, HtlcStatus::Committed)));
        }
        self.updates.iter().find_map(|u| match &u.kind {
            UpdateKind::Add(h) if h.offerer == offerer && h.id == id => {
                Some((h, self.removal_status(offerer, id, HtlcStatus::Pending)))
            }
            _ => None,
        })
    }

    fn removal_status(&self, offerer: Side, id: HtlcId, otherwise: HtlcStatus) -> HtlcStatus {
        let removed = self.updates.iter().any(|u| {
            u.sender == offerer.other() && matches!(&u.kind, UpdateKind::Remove(i, _) if *i == id)
        });
        if removed {
            HtlcStatus::Removing
        } else {
            otherwise
        }
    }
}

/// Where an HTLC is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HtlcStatus {
    /// Its add is not yet irrevocably in both commitments.
    Pending,
    /// Irrevocably in both commitments: it may be fulfilled or failed.
    Committed,
    /// A fulfill or fail of it is already in the log.
    Removing,
}

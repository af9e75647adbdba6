//! Basic multi-part payments (BOLT 4), as the final node sees them: the HTLCs paying one
//! of our invoices are gathered into an "HTLC set" per payment hash. The set is complete
//! when the `amt_to_forward` of its parts reaches the payer's `total_msat`; then every
//! part is fulfilled. A set that stays short of its total for the MPP timeout (60 s by
//! default, as BOLT 4 recommends at least) is failed whole with `mpp_timeout`, and a part
//! that names another total fails the whole set. No part is fulfilled before the set is
//! complete: an intermediate node could otherwise take the parts still to come.
//!
//! The sets live in memory only. Their parts are committed HTLCs, so after a restart
//! they gather again as each channel's incoming HTLCs are looked at.

use super::pay::{codes, FollowUp};
use channel::{ChannelId, PaymentHash};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

impl super::Node {
    /// Every second, gives up on the HTLC sets that timed out and fails their parts.
    pub(super) fn spawn_mpp_timer(self: &std::sync::Arc<Self>) {
        let node = self.clone();
        let timeout = self.config.mpp_timeout;
        let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        self.spawn_task(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let channels = node
                    .pay
                    .lock()
                    .expect("pay lock")
                    .htlc_sets
                    .expire(Instant::now(), timeout);
                if !channels.is_empty() {
                    tracing::info!(channels = channels.len(), "multi-part payments timed out");
                    let follow = channels.into_iter().map(FollowUp::Advance).collect();
                    node.run_follow_ups(follow).await;
                }
            }
        });
    }
}

/// One part: the channel and id of an incoming HTLC.
pub(super) type PartKey = (ChannelId, u64);

/// The default of [`super::NodeConfig::mpp_timeout`].
pub const DEFAULT_MPP_TIMEOUT: Duration = Duration::from_secs(60);

/// A part's amounts.
#[derive(Clone, Copy, Debug)]
struct Part {
    /// What the onion says this part pays (`amt_to_forward`).
    pays_msat: u64,
    /// The HTLC's amount (at least `pays_msat`).
    htlc_msat: u64,
}

/// The parts gathered so far for one payment hash.
#[derive(Debug)]
struct HtlcSet {
    total_msat: u64,
    parts: BTreeMap<PartKey, Part>,
    started: Instant,
}

/// What to do with a part just looked at.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SetDecision {
    /// The set is not complete yet: hold the HTLC.
    Wait,
    /// The set is complete: fulfill every part. `received_msat` is the sum of the
    /// parts' HTLC amounts, `parts` every part.
    Complete {
        received_msat: u64,
        parts: Vec<PartKey>,
    },
    /// Fail this part with the BOLT 4 code; `channels` carry other parts of the set
    /// failed with it (to be looked at again).
    Fail { code: u16, channels: Vec<ChannelId> },
}

/// What became of a part taken into a set.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PartFate {
    /// Its set is still gathering: hold it.
    Held,
    /// Its set was given up: fail it with this BOLT 4 code.
    Failed(u16),
}

/// Every HTLC set being gathered, and the parts of sets given up on that are still to be
/// failed.
#[derive(Default, Debug)]
pub(super) struct HtlcSets {
    sets: HashMap<PaymentHash, HtlcSet>,
    /// The set each held part is in.
    held: HashMap<PartKey, PaymentHash>,
    /// Parts of sets given up on, with the code to fail them with and when.
    failing: HashMap<PartKey, (u16, Instant)>,
}

impl HtlcSets {
    /// Whether parts of `hash` are being gathered.
    pub(super) fn has_set(&self, hash: &PaymentHash) -> bool {
        self.sets.contains_key(hash)
    }

    /// Looks at a part of `hash` (checked already against its invoice): adds it to its
    /// set, and says whether the set is complete. Looking at the same part again changes
    /// nothing.
    pub(super) fn add(
        &mut self,
        hash: PaymentHash,
        key: PartKey,
        pays_msat: u64,
        htlc_msat: u64,
        total_msat: u64,
        now: Instant,
    ) -> SetDecision {
        if let Some((code, _)) = self.failing.remove(&key) {
            return SetDecision::Fail {
                code,
                channels: vec![],
            };
        }
        let set = self.sets.entry(hash).or_insert_with(|| HtlcSet {
            total_msat,
            parts: BTreeMap::new(),
            started: now,
        });
        if set.total_msat != total_msat {
            // BOLT 4: the whole set fails when its parts disagree on the total.
            let code = codes::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS;
            let channels = self.give_up(&hash, code, Some(key), now);
            return SetDecision::Fail { code, channels };
        }
        set.parts.insert(
            key,
            Part {
                pays_msat,
                htlc_msat,
            },
        );
        self.held.insert(key, hash);
        let paid: u64 = set.parts.values().map(|p| p.pays_msat).sum();
        if paid < set.total_msat {
            return SetDecision::Wait;
        }
        let set = self.sets.remove(&hash).expect("the set was just looked at");
        for k in set.parts.keys() {
            self.held.remove(k);
        }
        SetDecision::Complete {
            received_msat: set.parts.values().map(|p| p.htlc_msat).sum(),
            parts: set.parts.keys().copied().collect(),
        }
    }

    /// What became of `key`, if it was taken into a set and not yet decided: held while
    /// its set gathers, or to be failed (once) since its set was given up.
    pub(super) fn fate(&mut self, key: &PartKey) -> Option<PartFate> {
        if let Some((code, _)) = self.failing.remove(key) {
            return Some(PartFate::Failed(code));
        }
        self.held.contains_key(key).then_some(PartFate::Held)
    }

    /// Gives up on every set started more than `timeout` before `now`: their parts are
    /// to be failed with `mpp_timeout`. Returns the channels that carry them.
    pub(super) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<ChannelId> {
        let late: Vec<PaymentHash> = self
            .sets
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.started) >= timeout)
            .map(|(h, _)| *h)
            .collect();
        let mut channels = Vec::new();
        for hash in late {
            channels.extend(self.give_up(&hash, codes::MPP_TIMEOUT, None, now));
        }
        // A part to fail whose channel never came back to it (closed since): forgotten
        // after a while, so the map does not grow.
        self.failing
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < timeout * 10);
        channels.sort();
        channels.dedup();
        channels
    }

    /// Parts gathered, in sets not complete yet.
    #[cfg(test)]
    pub(super) fn parts_held(&self) -> usize {
        self.sets.values().map(|s| s.parts.len()).sum()
    }

    fn give_up(
        &mut self,
        hash: &PaymentHash,
        code: u16,
        except: Option<PartKey>,
        now: Instant,
    ) -> Vec<ChannelId> {
        let Some(set) = self.sets.remove(hash) else {
            return vec![];
        };
        let mut channels = Vec::new();
        for key in set.parts.into_keys() {
            self.held.remove(&key);
            if Some(key) != except {
                self.failing.insert(key, (code, now));
                channels.push(key.0);
            }
        }
        channels.sort();
        channels.dedup();
        channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: PaymentHash = PaymentHash([7; 32]);

    fn key(c: u8, id: u64) -> PartKey {
        (ChannelId([c; 32]), id)
    }

    #[test]
    fn a_set_completes_when_its_parts_reach_the_total() {
        let mut s = HtlcSets::default();
        let t = Instant::now();
        assert_eq!(s.add(HASH, key(1, 0), 400, 401, 1000, t), SetDecision::Wait);
        // The same part looked at again counts once.
        assert_eq!(s.add(HASH, key(1, 0), 400, 401, 1000, t), SetDecision::Wait);
        assert_eq!(s.add(HASH, key(2, 5), 500, 500, 1000, t), SetDecision::Wait);
        assert_eq!(s.parts_held(), 2);
        assert_eq!(
            s.add(HASH, key(1, 1), 100, 102, 1000, t),
            SetDecision::Complete {
                received_msat: 1003,
                parts: vec![key(1, 0), key(1, 1), key(2, 5)],
            }
        );
        assert_eq!(s.parts_held(), 0);
        assert_eq!(
            s.fate(&key(1, 0)),
            None,
            "decided: no longer the sets' to decide"
        );
    }

    #[test]
    fn a_part_with_another_total_fails_the_whole_set() {
        let mut s = HtlcSets::default();
        let t = Instant::now();
        assert_eq!(s.add(HASH, key(1, 0), 400, 400, 1000, t), SetDecision::Wait);
        assert_eq!(s.add(HASH, key(2, 0), 400, 400, 1000, t), SetDecision::Wait);
        assert_eq!(s.fate(&key(1, 0)), Some(PartFate::Held));
        assert_eq!(
            s.add(HASH, key(3, 0), 400, 400, 800, t),
            SetDecision::Fail {
                code: codes::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
                channels: vec![ChannelId([1; 32]), ChannelId([2; 32])],
            }
        );
        // The parts gathered before are failed when looked at again, with the same code.
        for k in [key(1, 0), key(2, 0)] {
            assert_eq!(
                s.add(HASH, k, 400, 400, 1000, t),
                SetDecision::Fail {
                    code: codes::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
                    channels: vec![]
                }
            );
        }
        // A new attempt starts a new set.
        assert_eq!(s.add(HASH, key(1, 9), 400, 400, 1000, t), SetDecision::Wait);
    }

    #[test]
    fn a_set_short_of_its_total_times_out_whole() {
        let mut s = HtlcSets::default();
        let t = Instant::now();
        assert_eq!(s.add(HASH, key(1, 0), 400, 400, 1000, t), SetDecision::Wait);
        let later = t + Duration::from_secs(30);
        assert_eq!(
            s.add(HASH, key(2, 0), 400, 400, 1000, later),
            SetDecision::Wait
        );
        assert!(s
            .expire(t + Duration::from_secs(59), DEFAULT_MPP_TIMEOUT)
            .is_empty());
        // The timeout runs from the first part.
        assert_eq!(
            s.expire(t + DEFAULT_MPP_TIMEOUT, DEFAULT_MPP_TIMEOUT),
            vec![ChannelId([1; 32]), ChannelId([2; 32])]
        );
        assert_eq!(
            s.add(HASH, key(2, 0), 400, 400, 1000, later),
            SetDecision::Fail {
                code: codes::MPP_TIMEOUT,
                channels: vec![]
            }
        );
        // A part arriving after the timeout does not complete the set given up on.
        assert_eq!(
            s.add(HASH, key(3, 0), 600, 600, 1000, later),
            SetDecision::Wait
        );
        assert_eq!(s.parts_held(), 1);
    }
}

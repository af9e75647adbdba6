//! HTLC and fee updates (BOLT 2): adding, fulfilling and failing HTLCs in either
//! direction, `update_fee`, and the checks each one passes first: the channel limits,
//! what each side can afford (with the funder's fee-spike buffer) and the dust exposure.
//! Every `receive_*` validates completely before it changes anything.

use super::{
    Channel, ChannelError, Htlc, HtlcStatus, Removal, UpdateKind, View, ViewOf,
    FEE_SPIKE_BUFFER_MULTIPLE, MAX_CLTV_EXPIRY, MAX_HTLCS,
};
use crate::commitment::{commitment_fee_sat, CommitmentHtlc};
use crate::msgs::{
    OnionPacket, UpdateAddHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFee,
    UpdateFulfillHtlc,
};
use crate::types::*;

impl Channel {
    // ---- affordability ------------------------------------------------------------------

    /// Fee the funder pays on a commitment with this view, at a holder's dust limit.
    /// What the funder pays on the holder's commitment: the fee and, under option_anchors,
    /// the two anchors.
    fn fee_at(
        view: &View,
        holder: Side,
        dust_limit_sat: u64,
        htlcs: &[&Htlc],
        anchors: bool,
    ) -> Msat {
        let untrimmed = htlcs
            .iter()
            .filter(|h| {
                let c = CommitmentHtlc {
                    id: h.id,
                    offered: h.offerer == holder,
                    amount: h.amount,
                    payment_hash: h.payment_hash,
                    cltv_expiry: h.cltv_expiry,
                };
                !c.is_trimmed(dust_limit_sat, view.feerate, anchors)
            })
            .count();
        let fee = commitment_fee_sat(view.feerate, untrimmed, anchors)
            .saturating_add(crate::commitment::anchors_cost_sat(anchors));
        Msat(fee.saturating_mul(1000))
    }

    /// Checks that `payer`'s balance in `view` covers `spent` plus `reserve_sat` plus,
    /// if it is the funder, `fee`.
    fn check_affordable(
        &self,
        view: &View,
        payer: Side,
        reserve_sat: u64,
        fee: Msat,
        spent: Msat,
    ) -> Result<(), ChannelError> {
        let is_funder = (payer == Side::Local) == self.s.setup.is_funder;
        let needed = spent
            .0
            .saturating_add(reserve_sat.saturating_mul(1000))
            .saturating_add(if is_funder { fee.0 } else { 0 });
        let available = view.balance(payer);
        if available.0 < needed {
            return Err(ChannelError::InsufficientBalance {
                needed: Msat(needed),
                available,
            });
        }
        Ok(())
    }

    // ---- HTLC updates -------------------------------------------------------------------

    fn check_add_common(
        &self,
        offerer: Side,
        amount: Msat,
        cltv_expiry: u32,
    ) -> Result<(), ChannelError> {
        let receiver_params = match offerer {
            Side::Local => &self.s.setup.remote_params,
            Side::Remote => &self.s.setup.local_params,
        };
        if amount.0 == 0 || amount < receiver_params.htlc_minimum {
            return Err(ChannelError::AmountBelowMinimum(amount));
        }
        if amount > self.capacity() {
            return Err(ChannelError::AmountExceedsCapacity(amount));
        }
        if cltv_expiry >= MAX_CLTV_EXPIRY {
            return Err(ChannelError::InvalidCltvExpiry(cltv_expiry));
        }
        if self.s.shutdown.local_sent() || self.s.shutdown.remote_received() {
            return Err(ChannelError::ShuttingDown);
        }
        Ok(())
    }

    /// The view an update's sender checks affordability in. Strict (our own updates):
    /// the remote's next commitment, which has all our debits but only the remote's
    /// credits that are already in our commitment, so it is the least we can have in any
    /// commitment that will hold the update; its fee counts every HTLC either view has.
    /// Lenient (their updates): every known update applied, so that whatever a correct
    /// sender sends, we accept; its fee counts only HTLCs the sender certainly knew of.
    fn affordability_view(&self, strict: bool, offerer: Side) -> (View, Vec<Htlc>) {
        let everything = self.s.log.view(ViewOf::Everything);
        if strict {
            let view = self.s.log.view(ViewOf::NextRemote);
            let mut counted = view.htlcs.clone();
            for h in &everything.htlcs {
                if !counted
                    .iter()
                    .any(|c| c.offerer == h.offerer && c.id == h.id)
                {
                    counted.push(h.clone());
                }
            }
            (view, counted)
        } else {
            let counted = everything
                .htlcs
                .iter()
                .filter(|h| h.offerer == offerer || self.s.log.committed_htlcs.contains(h))
                .cloned()
                .collect();
            (everything, counted)
        }
    }

    /// The fee the funder owes on `view`: on our commitment, and when `strict` also on
    /// the remote's, whichever is more.
    fn funder_fee(&self, view: &View, htlcs: &[Htlc], strict: bool) -> Msat {
        let refs: Vec<&Htlc> = htlcs.iter().collect();
        let anchors = self.s.setup.anchors;
        let on_local = Self::fee_at(
            view,
            Side::Local,
            self.s.setup.local_params.dust_limit_sat,
            &refs,
            anchors,
        );
        if !strict {
            return on_local;
        }
        on_local.max(Self::fee_at(
            view,
            Side::Remote,
            self.s.setup.remote_params.dust_limit_sat,
            &refs,
            anchors,
        ))
    }

    /// Checks an add of `htlc` against the receiver's limits and the sender's balance.
    fn check_add_limits(&self, htlc: &Htlc, strict: bool) -> Result<(), ChannelError> {
        let offerer = htlc.offerer;
        let receiver_params = match offerer {
            Side::Local => &self.s.setup.remote_params,
            Side::Remote => &self.s.setup.local_params,
        };
        let (view, mut counted) = self.affordability_view(strict, offerer);
        counted.push(htlc.clone());
        let offered: Vec<&Htlc> = counted.iter().filter(|h| h.offerer == offerer).collect();
        if offered.len() > usize::from(receiver_params.max_accepted_htlcs.min(MAX_HTLCS)) {
            return Err(ChannelError::TooManyHtlcs);
        }
        let in_flight = offered
            .iter()
            .try_fold(0u64, |acc, h| acc.checked_add(h.amount.0));
        if in_flight.is_none_or(|v| v > receiver_params.max_htlc_value_in_flight.0) {
            return Err(ChannelError::InFlightExceeded);
        }
        if view.overdrawn {
            return Err(ChannelError::CommitmentOverdrawn);
        }
        let fee = self.funder_fee(&view, &counted, strict);
        self.check_affordable(
            &view,
            offerer,
            receiver_params.channel_reserve_sat,
            fee,
            htlc.amount,
        )
    }

    /// BOLT 2's "fee spike buffer": as the funder, an HTLC is offered only when what we
    /// keep after it still pays the commitment fee at [`FEE_SPIKE_BUFFER_MULTIPLE`] times
    /// the rate with one more non-dust HTLC on it, above the channel reserve; otherwise a
    /// rise of the fee rate, or an HTLC the peer adds, could leave the commitment
    /// unaffordable (and LDK fails such an HTLC back). Anchor channels, whose commitment
    /// is bumped on chain, keep the buffer at the current rate, as LDK does.
    fn check_fee_spike_buffer(&self, htlc: &Htlc) -> Result<(), ChannelError> {
        let (mut view, mut counted) = self.affordability_view(true, Side::Local);
        counted.push(htlc.clone());
        let multiple = if self.s.setup.anchors {
            1
        } else {
            FEE_SPIKE_BUFFER_MULTIPLE
        };
        view.feerate = FeeratePerKw(view.feerate.0.saturating_mul(multiple));
        let fee = self.funder_fee(&view, &counted, true);
        // One more HTLC output on the commitment (BOLT 3: 172 weight units).
        let extra_sat =
            u64::from(view.feerate.0) * crate::commitment::COMMITMENT_WEIGHT_PER_HTLC / 1000;
        self.check_affordable(
            &view,
            Side::Local,
            self.s.setup.remote_params.channel_reserve_sat,
            Msat(fee.0.saturating_add(extra_sat * 1000)),
            htlc.amount,
        )
    }

    /// Offers an HTLC: returns the update_add_htlc to send.
    pub fn send_add_htlc(
        &mut self,
        amount: Msat,
        payment_hash: PaymentHash,
        cltv_expiry: u32,
        onion: OnionPacket,
    ) -> Result<UpdateAddHtlc, ChannelError> {
        self.check_add_common(Side::Local, amount, cltv_expiry)?;
        let htlc = Htlc {
            offerer: Side::Local,
            id: HtlcId(self.s.next_local_htlc_id),
            amount,
            payment_hash,
            cltv_expiry,
            onion,
        };
        self.check_add_limits(&htlc, true)?;
        if self.s.setup.is_funder {
            self.check_fee_spike_buffer(&htlc)?;
        }
        if self.is_dust(&htlc) {
            let exposure = self.dust_exposure(Some(&htlc));
            if exposure > self.max_dust_exposure {
                return Err(ChannelError::DustExposure(exposure));
            }
        }
        let msg = UpdateAddHtlc {
            channel_id: self.s.channel_id,
            id: htlc.id.0,
            amount_msat: amount.0,
            payment_hash,
            cltv_expiry,
            onion_routing_packet: htlc.onion.clone(),
            blinding_point: None,
        };
        self.s.next_local_htlc_id += 1;
        self.s.log.push(Side::Local, UpdateKind::Add(htlc));
        Ok(msg)
    }

    /// Whether `h` would be trimmed (its value given to fees) in either commitment at
    /// the latest fee rate either side has proposed.
    pub fn is_dust(&self, h: &Htlc) -> bool {
        let feerate = self.s.log.view(ViewOf::Everything).feerate;
        [Side::Local, Side::Remote]
            .into_iter()
            .any(|holder| self.trimmed_in(holder, h, feerate))
    }

    /// The value that a force close would give to miners instead of either side: the
    /// larger, over the two commitments, of the HTLCs trimmed in it (every HTLC either
    /// side has proposed, at the latest fee rate), `extra` included.
    pub fn dust_exposure(&self, extra: Option<&Htlc>) -> Msat {
        let feerate = self.s.log.view(ViewOf::Everything).feerate;
        self.dust_exposure_at(extra, feerate)
    }

    /// [`Self::dust_exposure`] at `feerate` instead of the latest fee rate.
    fn dust_exposure_at(&self, extra: Option<&Htlc>, feerate: FeeratePerKw) -> Msat {
        let view = self.s.log.view(ViewOf::Everything);
        [Side::Local, Side::Remote]
            .into_iter()
            .map(|holder| {
                Msat(
                    view.htlcs
                        .iter()
                        .chain(extra)
                        .filter(|h| self.trimmed_in(holder, h, feerate))
                        .map(|h| h.amount.0)
                        .sum(),
                )
            })
            .max()
            .unwrap_or(Msat(0))
    }

    /// Whether `h` is trimmed in `holder`'s commitment at `feerate`.
    fn trimmed_in(&self, holder: Side, h: &Htlc, feerate: FeeratePerKw) -> bool {
        let dust_limit_sat = match holder {
            Side::Local => self.s.setup.local_params.dust_limit_sat,
            Side::Remote => self.s.setup.remote_params.dust_limit_sat,
        };
        CommitmentHtlc {
            id: h.id,
            offered: h.offerer == holder,
            amount: h.amount,
            payment_hash: h.payment_hash,
            cltv_expiry: h.cltv_expiry,
        }
        .is_trimmed(dust_limit_sat, feerate, self.s.setup.anchors)
    }

    /// Takes the remote's update_add_htlc.
    pub fn receive_add_htlc(&mut self, msg: &UpdateAddHtlc) -> Result<(), ChannelError> {
        self.check_channel(&msg.channel_id)?;
        if msg.id != self.s.next_remote_htlc_id {
            return Err(ChannelError::UnexpectedHtlcId {
                expected: self.s.next_remote_htlc_id,
                got: msg.id,
            });
        }
        let amount = Msat(msg.amount_msat);
        self.check_add_common(Side::Remote, amount, msg.cltv_expiry)?;
        let htlc = Htlc {
            offerer: Side::Remote,
            id: HtlcId(msg.id),
            amount,
            payment_hash: msg.payment_hash,
            cltv_expiry: msg.cltv_expiry,
            onion: msg.onion_routing_packet.clone(),
        };
        self.check_add_limits(&htlc, false)?;
        self.s.next_remote_htlc_id += 1;
        self.s.log.push(Side::Remote, UpdateKind::Add(htlc));
        Ok(())
    }

    /// Checks that `remover` may remove the HTLC `id` offered by the other side.
    fn check_removable(&self, remover: Side, id: u64) -> Result<&Htlc, ChannelError> {
        match self.s.log.find_htlc(remover.other(), HtlcId(id)) {
            None => Err(ChannelError::UnknownHtlc(id)),
            Some((h, HtlcStatus::Committed)) => Ok(h),
            Some(_) => Err(ChannelError::HtlcNotRemovable(id)),
        }
    }

    fn check_preimage(h: &Htlc, preimage: &PaymentPreimage) -> Result<(), ChannelError> {
        if preimage.payment_hash() != h.payment_hash {
            return Err(ChannelError::WrongPreimage(h.id.0));
        }
        Ok(())
    }

    /// Settles an HTLC the remote offered: returns the update_fulfill_htlc to send.
    pub fn send_fulfill(
        &mut self,
        id: HtlcId,
        preimage: PaymentPreimage,
    ) -> Result<UpdateFulfillHtlc, ChannelError> {
        Self::check_preimage(self.check_removable(Side::Local, id.0)?, &preimage)?;
        self.s.log.push(
            Side::Local,
            UpdateKind::Remove(id, Removal::Fulfill(preimage)),
        );
        Ok(UpdateFulfillHtlc {
            channel_id: self.s.channel_id,
            id: id.0,
            payment_preimage: preimage,
        })
    }

    /// Takes the remote's update_fulfill_htlc; returns the HTLC it settles.
    pub fn receive_fulfill(&mut self, msg: &UpdateFulfillHtlc) -> Result<Htlc, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        let h = self.check_removable(Side::Remote, msg.id)?.clone();
        Self::check_preimage(&h, &msg.payment_preimage)?;
        self.s.log.push(
            Side::Remote,
            UpdateKind::Remove(HtlcId(msg.id), Removal::Fulfill(msg.payment_preimage)),
        );
        Ok(h)
    }

    /// Fails an HTLC the remote offered: returns the update_fail_htlc to send.
    pub fn send_fail(
        &mut self,
        id: HtlcId,
        reason: Vec<u8>,
    ) -> Result<UpdateFailHtlc, ChannelError> {
        self.check_removable(Side::Local, id.0)?;
        self.s.log.push(
            Side::Local,
            UpdateKind::Remove(id, Removal::Fail(reason.clone())),
        );
        Ok(UpdateFailHtlc {
            channel_id: self.s.channel_id,
            id: id.0,
            reason,
        })
    }

    /// Fails an HTLC the remote offered whose onion this node could not parse (BOLT 4:
    /// a BADONION failure code, answered with update_fail_malformed_htlc because the
    /// node has no shared secret to encrypt a reason with).
    pub fn send_fail_malformed(
        &mut self,
        id: HtlcId,
        sha256_of_onion: [u8; 32],
        failure_code: u16,
    ) -> Result<UpdateFailMalformedHtlc, ChannelError> {
        if failure_code & 0x8000 == 0 {
            return Err(ChannelError::MissingBadOnion);
        }
        self.check_removable(Side::Local, id.0)?;
        self.s.log.push(
            Side::Local,
            UpdateKind::Remove(
                id,
                Removal::FailMalformed {
                    sha256_of_onion,
                    failure_code,
                },
            ),
        );
        Ok(UpdateFailMalformedHtlc {
            channel_id: self.s.channel_id,
            id: id.0,
            sha256_of_onion,
            failure_code,
        })
    }

    /// Takes the remote's update_fail_htlc; returns the HTLC it fails.
    pub fn receive_fail(&mut self, msg: &UpdateFailHtlc) -> Result<Htlc, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        let h = self.check_removable(Side::Remote, msg.id)?.clone();
        self.s.log.push(
            Side::Remote,
            UpdateKind::Remove(HtlcId(msg.id), Removal::Fail(msg.reason.clone())),
        );
        Ok(h)
    }

    /// Takes the remote's update_fail_malformed_htlc; returns the HTLC it fails.
    pub fn receive_fail_malformed(
        &mut self,
        msg: &UpdateFailMalformedHtlc,
    ) -> Result<Htlc, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        if msg.failure_code & 0x8000 == 0 {
            return Err(ChannelError::MissingBadOnion);
        }
        let h = self.check_removable(Side::Remote, msg.id)?.clone();
        self.s.log.push(
            Side::Remote,
            UpdateKind::Remove(
                HtlcId(msg.id),
                Removal::FailMalformed {
                    sha256_of_onion: msg.sha256_of_onion,
                    failure_code: msg.failure_code,
                },
            ),
        );
        Ok(h)
    }

    // ---- fee updates --------------------------------------------------------------------

    fn check_fee(
        &self,
        payer: Side,
        feerate: FeeratePerKw,
        strict: bool,
    ) -> Result<(), ChannelError> {
        let payer_is_funder = (payer == Side::Local) == self.s.setup.is_funder;
        if !payer_is_funder || feerate.0 == 0 {
            return Err(ChannelError::InvalidFeeUpdate);
        }
        let (mut view, counted) = self.affordability_view(strict, payer);
        view.feerate = feerate;
        let fee = self.funder_fee(&view, &counted, strict);
        let reserve = if strict {
            self.s.setup.remote_params.channel_reserve_sat
        } else {
            0
        };
        self.check_affordable(&view, payer, reserve, fee, Msat::ZERO)
    }

    /// Changes the commitment fee rate (funder only): returns the update_fee to send.
    pub fn send_update_fee(&mut self, feerate: FeeratePerKw) -> Result<UpdateFee, ChannelError> {
        self.check_fee(Side::Local, feerate, true)?;
        // A higher rate trims more HTLCs: not beyond the dust exposure we accept (nor
        // would the peer take it).
        let exposure = self.dust_exposure_at(None, feerate);
        if exposure > self.max_dust_exposure {
            return Err(ChannelError::DustExposure(exposure));
        }
        self.s.log.push(Side::Local, UpdateKind::Fee(feerate));
        Ok(UpdateFee {
            channel_id: self.s.channel_id,
            feerate_per_kw: feerate.0,
        })
    }

    /// Takes the remote's update_fee.
    pub fn receive_update_fee(&mut self, msg: &UpdateFee) -> Result<(), ChannelError> {
        self.check_channel(&msg.channel_id)?;
        let feerate = FeeratePerKw(msg.feerate_per_kw);
        self.check_fee(Side::Remote, feerate, false)?;
        // A higher rate trims more HTLCs: not beyond the dust exposure we accept (as LDK
        // refuses such an update_fee).
        let exposure = self.dust_exposure_at(None, feerate);
        if exposure > self.max_dust_exposure {
            return Err(ChannelError::DustExposure(exposure));
        }
        self.s.log.push(Side::Remote, UpdateKind::Fee(feerate));
        Ok(())
    }
}

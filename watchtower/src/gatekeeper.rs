//! The gatekeeper: who may store appointments, how many, and until which block. The store
//! holds users durably; this keeps their slot counts in memory so a request is admitted
//! without a database round trip, and reserves a slot before the write so concurrent
//! requests cannot overrun a quota.

use bitcoin::secp256k1::PublicKey;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a client may not add an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The key never registered.
    #[error("unknown user: register first")]
    UnknownUser,
    /// The registration has ended.
    #[error("subscription expired at block {0}: register again")]
    Expired(u32),
}

#[derive(Debug, Clone, Copy)]
struct User {
    expiry_height: u32,
    used: u32,
}

/// Users and their slots.
#[derive(Debug)]
pub struct Gatekeeper {
    max_appointments: u32,
    users: Mutex<HashMap<PublicKey, User>>,
}

/// A user's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Slots left.
    pub available_slots: u32,
    /// When the subscription ends.
    pub expiry_height: u32,
}

impl Gatekeeper {
    /// A gatekeeper granting `max_appointments` slots per user, starting from `users`
    /// (`(key, expiry, appointments stored)`).
    pub fn new(
        max_appointments: u32,
        users: impl IntoIterator<Item = (PublicKey, u32, u32)>,
    ) -> Gatekeeper {
        Gatekeeper {
            max_appointments,
            users: Mutex::new(
                users
                    .into_iter()
                    .map(|(k, expiry_height, used)| {
                        (
                            k,
                            User {
                                expiry_height,
                                used,
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, User>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn standing(&self, u: &User) -> Standing {
        Standing {
            available_slots: self.max_appointments.saturating_sub(u.used),
            expiry_height: u.expiry_height,
        }
    }

    /// Records a (re-)registration that the store has made durable.
    pub fn registered(&self, user: PublicKey, expiry_height: u32) -> Standing {
        let mut users = self.lock();
        let u = users.entry(user).or_insert(User {
            expiry_height,
            used: 0,
        });
        u.expiry_height = expiry_height;
        self.standing(u)
    }

    /// Admits a request from `user` at tip `height`; `Ok(true)` when a slot was reserved
    /// for a new appointment (give it back with [`Self::release`] if none was created).
    pub fn admit(&self, user: &PublicKey, height: u32) -> Result<bool, GateError> {
        let mut users = self.lock();
        let u = users.get_mut(user).ok_or(GateError::UnknownUser)?;
        if u.expiry_height <= height {
            return Err(GateError::Expired(u.expiry_height));
        }
        if u.used < self.max_appointments {
            u.used += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Gives back `n` slots (a reservation not used, or deleted appointments).
    pub fn release(&self, user: &PublicKey, n: u32) {
        if let Some(u) = self.lock().get_mut(user) {
            u.used = u.used.saturating_sub(n);
        }
    }

    /// Where `user` stands, `None` if unknown.
    pub fn get(&self, user: &PublicKey) -> Option<Standing> {
        self.lock().get(user).map(|u| self.standing(u))
    }

    /// Users whose subscription runs past `height` (an expired one holds no room: it
    /// cannot fill the tower for good by registering once).
    pub fn active_users(&self, height: u32) -> usize {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|u| u.expiry_height > height)
            .count()
    }

    /// Whether `user` is registered.
    pub fn is_known(&self, user: &PublicKey) -> bool {
        self.lock().contains_key(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::SecretKey;

    #[test]
    fn slots_are_reserved_released_and_bounded() {
        let k = PublicKey::from_secret_key(
            crate::sig::secp(),
            &SecretKey::from_slice(&[3; 32]).unwrap(),
        );
        let g = Gatekeeper::new(2, []);
        assert_eq!(g.admit(&k, 0), Err(GateError::UnknownUser));
        g.registered(k, 10);
        assert_eq!(g.admit(&k, 1), Ok(true));
        assert_eq!(g.admit(&k, 1), Ok(true));
        assert_eq!(g.admit(&k, 1), Ok(false));
        g.release(&k, 1);
        assert_eq!(g.get(&k).unwrap().available_slots, 1);
        assert_eq!(g.admit(&k, 10), Err(GateError::Expired(10)));
    }
}

/// Why a request's counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// Not above the client's last accepted counter: a replay (or a request overtaken by
    /// a later one).
    #[error("request counter {0} is not above the last one accepted ({1}): replayed")]
    Replayed(u64, u64),
    /// Too far from the tower's clock.
    #[error("request counter {0} is more than ten minutes away from the tower's clock ({1} ms)")]
    OutOfWindow(u64, u64),
}

/// The last request counter accepted from each client. A counter must grow and stay
/// within [`crate::appointment::COUNTER_WINDOW_MS`] of the clock, so a captured request
/// is refused once a later one was accepted, and everywhere once ten minutes have passed
/// (the counters live in memory: across a restart of the tower the window alone holds).
#[derive(Debug, Default)]
pub struct Counters {
    last: Mutex<HashMap<PublicKey, u64>>,
}

impl Counters {
    /// Accepts `counter` from `user` at `now_ms`, or says why not.
    pub fn accept(&self, user: &PublicKey, counter: u64, now_ms: u64) -> Result<(), CounterError> {
        let window = crate::appointment::COUNTER_WINDOW_MS;
        if counter.abs_diff(now_ms) > window {
            return Err(CounterError::OutOfWindow(counter, now_ms));
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let seen = last.get(user).copied().unwrap_or(0);
        if counter <= seen {
            return Err(CounterError::Replayed(counter, seen));
        }
        last.insert(*user, counter);
        Ok(())
    }
}

#[cfg(test)]
mod counter_tests {
    use super::*;

    #[test]
    fn counters_grow_and_stay_near_the_clock() {
        let c = Counters::default();
        let u = PublicKey::from_secret_key(
            &bitcoin::secp256k1::Secp256k1::new(),
            &bitcoin::secp256k1::SecretKey::from_slice(&[3; 32]).unwrap(),
        );
        let now = 1_800_000_000_000;
        assert_eq!(c.accept(&u, now, now), Ok(()));
        assert_eq!(
            c.accept(&u, now, now),
            Err(CounterError::Replayed(now, now))
        );
        assert_eq!(
            c.accept(&u, now - 1, now),
            Err(CounterError::Replayed(now - 1, now))
        );
        assert_eq!(c.accept(&u, now + 1, now), Ok(()));
        let far = now + crate::appointment::COUNTER_WINDOW_MS + 1;
        assert_eq!(
            c.accept(&u, far, now),
            Err(CounterError::OutOfWindow(far, now))
        );
        let old = now - crate::appointment::COUNTER_WINDOW_MS - 1;
        assert_eq!(
            c.accept(&u, old, now),
            Err(CounterError::OutOfWindow(old, now))
        );
    }
}

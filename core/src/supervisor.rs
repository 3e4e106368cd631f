//! `ConnSupervisor`: keeps required peers (consensus, seed nodes) connected.
//!
//! This is the decision logic only, as a state machine with no I/O and no clock of
//! its own: the host feeds it what happened (peer added / removed, connected,
//! disconnected, dial failed) with the current time, calls [`ConnSupervisor::poll`]
//! when [`ConnSupervisor::next_wakeup`] comes, and carries out the returned
//! [`SupervisorAction`]s. That keeps every rule testable with made-up instants.
//!
//! Rules: a required peer that is not connected is dialled at once when it is added
//! or disconnects. A failed dial is retried after a Fibonacci delay (1, 1, 2, 3, 5,
//! 8 … × `backoff_unit`) capped at `max_backoff`, with ±`jitter_percent` jitter (the
//! result is capped again, so no delay exceeds `max_backoff`). It never gives up
//! unless `max_attempts` is set. At most one dial is in flight per peer. Removing a
//! peer forgets it at once, so nothing is dialled for it afterwards.
//!
//! What counts as success: the host reports a peer [`connected`](ConnSupervisor::connected)
//! only once its connection is confirmed (the protocol exchange is done), and a
//! connection must then last `min_connection_lifetime` for the schedule to reset.
//! A connection that closes before it is confirmed (a host that refuses us after
//! the handshake) is a failed dial; one that closes sooner than the minimum
//! lifetime is one too. Otherwise a refusing peer would be redialled "at once",
//! over and over, and the backoff would never apply.

use std::{collections::HashMap, time::Duration};

use libp2p_identity::PeerId;
use rand::{RngExt, rngs::StdRng};
use tokio::time::Instant;

/// Settings of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// How often the host sweeps for due redials even when nothing happened. Default: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub check_interval: Duration,
    /// One step of the Fibonacci schedule. Default: 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_unit: Duration,
    /// No redial waits longer than this. Default: 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_backoff: Duration,
    /// Each delay is moved at random by up to this percentage either way. Default: 20.
    pub jitter_percent: u8,
    /// Failed dials in a row after which a peer is given up. Default: `None` (never).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_attempts: Option<u32>,
    /// A confirmed connection that closes sooner than this counts as a failed
    /// dial: the schedule goes on instead of redialling at once. Default: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_connection_lifetime: Duration,
}

crate::config::setters!(SupervisorConfig {
    with_check_interval => check_interval: Duration,
    with_backoff_unit => backoff_unit: Duration,
    with_max_backoff => max_backoff: Duration,
    with_jitter_percent => jitter_percent: u8,
    with_max_attempts => max_attempts: Option<u32>,
    with_min_connection_lifetime => min_connection_lifetime: Duration,
});

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(5),
            backoff_unit: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter_percent: 20,
            max_attempts: None,
            min_connection_lifetime: Duration::from_secs(5),
        }
    }
}

/// What the host must do, or report, for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorAction {
    /// Dial this peer now (with its known addresses, expecting this peer id).
    Dial(PeerId),
    /// A redial was scheduled after a failure.
    RedialScheduled {
        /// The peer.
        peer: PeerId,
        /// Failed dials in a row so far.
        attempt: u32,
        /// Time until the redial.
        delay: Duration,
    },
    /// A required peer is connected (again).
    Connected(PeerId),
    /// A confirmed connection to a required peer closed sooner than
    /// `min_connection_lifetime`; it counts as a failed dial.
    ClosedEarly {
        /// The peer.
        peer: PeerId,
        /// How long the connection lasted after it was confirmed.
        lived: Duration,
    },
    /// A required peer was given up after `max_attempts` failures in a row.
    GaveUp {
        /// The peer.
        peer: PeerId,
        /// Failed dials in a row.
        attempts: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    Connected { since: Instant },
    Dialing,
    Waiting { until: Instant },
    GaveUp,
}

#[derive(Debug, Clone)]
struct RequiredPeer {
    state: PeerState,
    /// Failed dials in a row.
    failures: u32,
}

/// The required-peer state machine. See the module documentation.
#[derive(Debug)]
pub struct ConnSupervisor {
    config: SupervisorConfig,
    peers: HashMap<PeerId, RequiredPeer>,
    rng: StdRng,
}

/// The `n`-th Fibonacci number (1, 1, 2, 3, 5 …) times `unit`, capped at `cap`.
pub fn fibonacci_backoff(n: u32, unit: Duration, cap: Duration) -> Duration {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 1..n {
        if unit.saturating_mul(a.min(u32::MAX as u64) as u32) >= cap {
            return cap;
        }
        (a, b) = (b, a.saturating_add(b));
    }
    unit.saturating_mul(a.min(u32::MAX as u64) as u32).min(cap)
}

impl ConnSupervisor {
    /// A supervisor with no required peers, jitter seeded from the OS.
    pub fn new(config: SupervisorConfig) -> Self {
        Self::with_rng(config, rand::make_rng())
    }

    /// A supervisor whose jitter comes from `rng` (deterministic tests).
    pub fn with_rng(config: SupervisorConfig, rng: StdRng) -> Self {
        Self {
            config,
            peers: HashMap::new(),
            rng,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// Makes `peer` required. Unless it is `connected` (confirmed) already, it is
    /// dialled now.
    pub fn add(&mut self, peer: PeerId, connected: bool, now: Instant) -> Vec<SupervisorAction> {
        if let Some(p) = self.peers.get_mut(&peer) {
            // Re-adding a given-up peer starts it over.
            if p.state == PeerState::GaveUp {
                p.failures = 0;
                p.state = PeerState::Dialing;
                return vec![SupervisorAction::Dial(peer)];
            }
            return Vec::new();
        }
        let state = if connected {
            PeerState::Connected { since: now }
        } else {
            PeerState::Dialing
        };
        self.peers.insert(peer, RequiredPeer { state, failures: 0 });
        if connected {
            Vec::new()
        } else {
            vec![SupervisorAction::Dial(peer)]
        }
    }

    /// Stops supervising `peer`; its pending redial is dropped. Returns whether it
    /// was required.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// Whether `peer` is required.
    pub fn is_required(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Required peers.
    pub fn required_peers(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Whether a dial to `peer` is in flight.
    pub fn is_dialing(&self, peer: &PeerId) -> bool {
        matches!(self.peers.get(peer), Some(p) if p.state == PeerState::Dialing)
    }

    /// Whether `peer` is required and confirmed connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        matches!(self.peers.get(peer), Some(p) if matches!(p.state, PeerState::Connected { .. }))
    }

    /// `peer` is confirmed connected (its exchange is done). The schedule resets
    /// once the connection has lasted `min_connection_lifetime`.
    pub fn connected(&mut self, peer: &PeerId, now: Instant) -> Vec<SupervisorAction> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        if matches!(p.state, PeerState::Connected { .. }) {
            return Vec::new();
        }
        p.state = PeerState::Connected { since: now };
        vec![SupervisorAction::Connected(*peer)]
    }

    /// The last connection to a confirmed `peer` closed: redial at once, or, if
    /// it lasted less than `min_connection_lifetime`, count it as a failed dial.
    pub fn disconnected(&mut self, peer: &PeerId, now: Instant) -> Vec<SupervisorAction> {
        let min = self.config.min_connection_lifetime;
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        let PeerState::Connected { since } = p.state else {
            return Vec::new();
        };
        let lived = now.saturating_duration_since(since);
        p.state = PeerState::Dialing;
        if lived >= min {
            p.failures = 0;
            return vec![SupervisorAction::Dial(*peer)];
        }
        let mut actions = vec![SupervisorAction::ClosedEarly { peer: *peer, lived }];
        actions.extend(self.dial_failed(peer, now));
        actions
    }

    /// A dial to `peer` failed (including reaching a different peer id, and a
    /// connection that closed before it was confirmed): schedule the next one, or
    /// give up after `max_attempts`.
    pub fn dial_failed(&mut self, peer: &PeerId, now: Instant) -> Vec<SupervisorAction> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        // Only the outcome of our own dial moves the schedule; a failed extra
        // connection attempt while connected changes nothing.
        if p.state != PeerState::Dialing {
            return Vec::new();
        }
        p.failures = p.failures.saturating_add(1);
        let attempt = p.failures;
        if self.config.max_attempts.is_some_and(|max| attempt >= max) {
            p.state = PeerState::GaveUp;
            return vec![SupervisorAction::GaveUp {
                peer: *peer,
                attempts: attempt,
            }];
        }
        let delay = self.delay(attempt);
        if let Some(p) = self.peers.get_mut(peer) {
            p.state = PeerState::Waiting { until: now + delay };
        }
        vec![SupervisorAction::RedialScheduled {
            peer: *peer,
            attempt,
            delay,
        }]
    }

    /// Dials every peer whose redial is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<SupervisorAction> {
        let mut actions = Vec::new();
        for (peer, p) in &mut self.peers {
            if let PeerState::Waiting { until } = p.state
                && until <= now
            {
                p.state = PeerState::Dialing;
                actions.push(SupervisorAction::Dial(*peer));
            }
        }
        actions
    }

    /// When [`poll`](Self::poll) has work next, if ever.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| match p.state {
                PeerState::Waiting { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// The delay before redial number `attempt` (1-based), with jitter.
    fn delay(&mut self, attempt: u32) -> Duration {
        let base = fibonacci_backoff(attempt, self.config.backoff_unit, self.config.max_backoff);
        let jitter = f64::from(self.config.jitter_percent.min(100)) / 100.0;
        let factor = if jitter > 0.0 {
            self.rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        base.mul_f64(factor).min(self.config.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn config(jitter: u8) -> SupervisorConfig {
        SupervisorConfig {
            jitter_percent: jitter,
            ..SupervisorConfig::default()
        }
    }

    fn supervisor(jitter: u8) -> ConnSupervisor {
        ConnSupervisor::with_rng(config(jitter), StdRng::seed_from_u64(7))
    }

    fn scheduled_delay(actions: &[SupervisorAction]) -> Duration {
        match actions {
            [SupervisorAction::RedialScheduled { delay, .. }] => *delay,
            other => panic!("expected one RedialScheduled, got {other:?}"),
        }
    }

    #[test]
    fn the_schedule_is_fibonacci_seconds_capped_at_sixty() {
        let unit = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        let secs: Vec<u64> = (1..=12)
            .map(|n| fibonacci_backoff(n, unit, cap).as_secs())
            .collect();
        assert_eq!(secs, vec![1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 60, 60]);
        assert_eq!(fibonacci_backoff(u32::MAX, unit, cap), cap);
    }

    #[test]
    fn failed_dials_follow_the_schedule_without_jitter() {
        let mut s = supervisor(0);
        let peer = PeerId::random();
        let mut now = Instant::now();
        assert_eq!(
            s.add(peer, false, Instant::now()),
            vec![SupervisorAction::Dial(peer)]
        );
        let mut delays = Vec::new();
        for _ in 0..12 {
            let d = scheduled_delay(&s.dial_failed(&peer, now));
            delays.push(d.as_secs());
            assert_eq!(s.next_wakeup(), Some(now + d));
            assert!(
                s.poll(now + d - Duration::from_millis(1)).is_empty(),
                "not early"
            );
            now += d;
            assert_eq!(s.poll(now), vec![SupervisorAction::Dial(peer)]);
        }
        assert_eq!(delays, vec![1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 60, 60]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        let mut s = supervisor(20);
        let peer = PeerId::random();
        let now = Instant::now();
        for round in 0..200 {
            s.remove(&peer);
            s.add(peer, false, Instant::now());
            for attempt in 1..=15u32 {
                let d = scheduled_delay(&s.dial_failed(&peer, now));
                let base =
                    fibonacci_backoff(attempt, Duration::from_secs(1), Duration::from_secs(60));
                assert!(
                    d >= base.mul_f64(0.8),
                    "round {round} attempt {attempt}: {d:?} < 0.8 × {base:?}"
                );
                assert!(d <= base.mul_f64(1.2), "{d:?} > 1.2 × {base:?}");
                assert!(d <= Duration::from_secs(60));
                s.poll(now + Duration::from_secs(61));
            }
        }
    }

    #[test]
    fn success_resets_the_schedule() {
        let mut s = supervisor(0);
        let peer = PeerId::random();
        let now = Instant::now();
        s.add(peer, false, Instant::now());
        for _ in 0..5 {
            s.dial_failed(&peer, now);
            s.poll(now + Duration::from_secs(60));
        }
        assert_eq!(
            s.connected(&peer, now),
            vec![SupervisorAction::Connected(peer)]
        );
        assert_eq!(
            s.disconnected(&peer, now + Duration::from_secs(5)),
            vec![SupervisorAction::Dial(peer)],
            "redial at once after a connection that lasted"
        );
        assert_eq!(
            scheduled_delay(&s.dial_failed(&peer, now)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_connection_that_closes_sooner_than_the_minimum_lifetime_is_a_failed_dial() {
        let mut s = supervisor(0);
        let peer = PeerId::random();
        let now = Instant::now();
        s.add(peer, false, now);
        s.connected(&peer, now);
        let actions = s.disconnected(&peer, now + Duration::from_secs(2));
        assert_eq!(
            actions,
            vec![
                SupervisorAction::ClosedEarly {
                    peer,
                    lived: Duration::from_secs(2)
                },
                SupervisorAction::RedialScheduled {
                    peer,
                    attempt: 1,
                    delay: Duration::from_secs(1)
                },
            ]
        );
        // The failures in a row go on counting across short connections.
        s.poll(now + Duration::from_secs(3));
        s.connected(&peer, now + Duration::from_secs(3));
        let delay = scheduled_delay(&s.disconnected(&peer, now + Duration::from_secs(4))[1..]);
        assert_eq!(delay, Duration::from_secs(1), "second failure: 1 s again");
        s.poll(now + Duration::from_secs(5));
        assert_eq!(
            scheduled_delay(&s.dial_failed(&peer, now + Duration::from_secs(5))),
            Duration::from_secs(2)
        );
    }

    /// A full host refuses every connection right after the handshake: each ends
    /// before it is confirmed, so each is a failed dial and the schedule applies.
    #[test]
    fn a_peer_that_refuses_every_connection_is_dialled_on_the_fibonacci_schedule() {
        let mut s = supervisor(20);
        let peer = PeerId::random();
        let start = Instant::now();
        let mut now = start;
        let mut dials = 0;
        let mut actions = s.add(peer, false, now);
        while now < start + Duration::from_secs(25) {
            for action in std::mem::take(&mut actions) {
                if action == SupervisorAction::Dial(peer) {
                    dials += 1;
                    // The connection comes up and is refused 10 ms later.
                    actions.extend(s.dial_failed(&peer, now + Duration::from_millis(10)));
                }
            }
            now += Duration::from_millis(10);
            actions.extend(s.poll(now));
        }
        assert!(
            (6..=8).contains(&dials),
            "{dials} dials in 25 s; the schedule allows 7 (0, 1, 2, 4, 7, 12, 20 s) ± jitter"
        );
    }

    #[test]
    fn removing_a_peer_cancels_its_pending_redial() {
        let mut s = supervisor(0);
        let peer = PeerId::random();
        let now = Instant::now();
        s.add(peer, false, Instant::now());
        s.dial_failed(&peer, now);
        assert!(s.next_wakeup().is_some());
        assert!(s.remove(&peer));
        assert_eq!(s.next_wakeup(), None);
        assert!(s.poll(now + Duration::from_secs(3600)).is_empty());
        assert!(s.dial_failed(&peer, now).is_empty());
        assert!(s.disconnected(&peer, now).is_empty());
    }

    #[test]
    fn max_attempts_gives_up_and_re_adding_starts_over() {
        let mut s = ConnSupervisor::with_rng(
            SupervisorConfig {
                max_attempts: Some(3),
                jitter_percent: 0,
                ..SupervisorConfig::default()
            },
            StdRng::seed_from_u64(1),
        );
        let peer = PeerId::random();
        let now = Instant::now();
        s.add(peer, false, Instant::now());
        s.dial_failed(&peer, now);
        s.poll(now + Duration::from_secs(60));
        s.dial_failed(&peer, now);
        s.poll(now + Duration::from_secs(60));
        assert_eq!(
            s.dial_failed(&peer, now),
            vec![SupervisorAction::GaveUp { peer, attempts: 3 }]
        );
        assert!(s.poll(now + Duration::from_secs(3600)).is_empty());
        assert_eq!(
            s.add(peer, false, Instant::now()),
            vec![SupervisorAction::Dial(peer)]
        );
    }

    #[test]
    fn a_connected_required_peer_is_not_dialled() {
        let mut s = supervisor(0);
        let peer = PeerId::random();
        assert!(s.add(peer, true, Instant::now()).is_empty());
        assert!(s.poll(Instant::now() + Duration::from_secs(100)).is_empty());
        // A failed extra dial while connected does not schedule anything.
        assert!(s.dial_failed(&peer, Instant::now()).is_empty());
        assert_eq!(s.next_wakeup(), None);
    }

    /// Random actions against the invariants: one dial in flight per peer, removed
    /// peers never dialled, no delay above the cap, connected peers not dialled.
    #[test]
    fn random_actions_keep_the_invariants() {
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for run in 0..50u64 {
            let mut rng = StdRng::seed_from_u64(run);
            let mut s = ConnSupervisor::with_rng(config(20), StdRng::seed_from_u64(run + 1000));
            let mut now = Instant::now();
            // The model: what the host knows.
            let mut in_flight: HashMap<PeerId, bool> = HashMap::new();
            let mut connected: HashMap<PeerId, bool> = HashMap::new();
            for step in 0..5_000 {
                let peer = peers[rng.random_range(0..peers.len())];
                let actions = match rng.random_range(0..8) {
                    0 => s.add(peer, connected.get(&peer).copied().unwrap_or(false), now),
                    1 => {
                        s.remove(&peer);
                        in_flight.remove(&peer);
                        Vec::new()
                    }
                    2 => {
                        connected.insert(peer, true);
                        in_flight.remove(&peer);
                        s.connected(&peer, now)
                    }
                    3 => {
                        connected.insert(peer, false);
                        s.disconnected(&peer, now)
                    }
                    // Outcomes only for dials actually in flight.
                    4 | 5 if in_flight.get(&peer).copied().unwrap_or(false) => {
                        in_flight.insert(peer, false);
                        s.dial_failed(&peer, now) // failure or wrong peer id
                    }
                    6 if in_flight.get(&peer).copied().unwrap_or(false) => {
                        in_flight.insert(peer, false);
                        connected.insert(peer, true);
                        s.connected(&peer, now)
                    }
                    _ => {
                        now += Duration::from_millis(rng.random_range(0..20_000));
                        s.poll(now)
                    }
                };
                for a in actions {
                    match a {
                        SupervisorAction::Dial(p) => {
                            assert!(
                                s.is_required(&p),
                                "run {run} step {step}: removed peer dialled"
                            );
                            assert!(
                                !in_flight.get(&p).copied().unwrap_or(false),
                                "run {run} step {step}: two dials in flight"
                            );
                            assert!(
                                !connected.get(&p).copied().unwrap_or(false),
                                "run {run} step {step}: connected peer dialled"
                            );
                            in_flight.insert(p, true);
                        }
                        SupervisorAction::RedialScheduled { delay, .. } => {
                            assert!(delay <= Duration::from_secs(60), "delay above the cap");
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

//! The state machine driven by hand: probe, protocol order, renewal, loss, reboot, stop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::mapper::{Action, Config, Mapper, Mapping, Protocol, Services};

const PORT: u16 = 51820;

fn config() -> Config {
    Config {
        lease: Duration::from_secs(100),
        probe_cache: Duration::from_secs(600),
        retry_min: Duration::from_secs(5),
        retry_max: Duration::from_secs(20),
    }
}

fn mapping(protocol: Protocol, at: Instant, epoch: Option<u32>) -> Mapping {
    Mapping {
        protocol,
        external: SocketAddr::from(([44, 0, 0, 1], 40001)),
        lease: Duration::from_secs(100),
        obtained_at: at,
        epoch,
    }
}

fn probe_ticket(m: &mut Mapper, now: Instant) -> u64 {
    match m.handle_timeout(now) {
        Some(Action::Probe { ticket }) => ticket,
        other => panic!("expected a probe, got {other:?}"),
    }
}

fn map_action(m: &mut Mapper, now: Instant) -> (u64, Protocol, Option<u16>) {
    match m.handle_timeout(now) {
        Some(Action::Map {
            ticket,
            protocol,
            internal_port,
            suggested_external_port,
            ..
        }) => {
            assert_eq!(internal_port, PORT);
            (ticket, protocol, suggested_external_port)
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

fn seen(natpmp: bool, pcp: bool, upnp: bool) -> Services {
    Services { natpmp, pcp, upnp }
}

#[test]
fn protocol_order() {
    for (s, want) in [
        (seen(true, true, true), Protocol::NatPmp),
        (seen(false, true, true), Protocol::Pcp),
        (seen(false, false, true), Protocol::Upnp),
        (seen(true, false, true), Protocol::NatPmp),
    ] {
        let now = Instant::now();
        let mut m = Mapper::new(PORT, config());
        let t = probe_ticket(&mut m, now);
        m.on_probe(now, t, s);
        assert_eq!(map_action(&mut m, now).1, want, "{s:?}");
    }
}

#[test]
fn one_action_at_a_time_and_stale_results_ignored() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    assert_eq!(m.handle_timeout(now), None);
    assert_eq!(m.poll_timeout(), None);
    m.on_probe(now, t + 7, seen(true, false, false));
    assert_eq!(
        m.handle_timeout(now),
        None,
        "a wrong ticket must not complete the probe"
    );
    m.on_probe(now, t, seen(true, false, false));
    let (t, p, _) = map_action(&mut m, now);
    m.network_changed();
    m.on_mapped(now, t, p, Ok(mapping(p, now, Some(1))));
    assert_eq!(
        m.mapping(),
        None,
        "a result from before the network change must be dropped"
    );
}

#[test]
fn fallback_then_backoff_then_reprobe() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    m.on_probe(now, t, seen(true, false, true));
    let (t, p, _) = map_action(&mut m, now);
    assert_eq!(p, Protocol::NatPmp);
    m.on_mapped(now, t, p, Err("timeout".into()));
    let (t, p, _) = map_action(&mut m, now);
    assert_eq!(p, Protocol::Upnp);
    m.on_mapped(now, t, p, Err("refused".into()));
    assert_eq!(m.handle_timeout(now), None);
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(5)));
    assert_eq!(m.handle_timeout(now + Duration::from_secs(4)), None);
    let later = now + Duration::from_secs(5);
    let t = probe_ticket(&mut m, later);
    m.on_probe(later, t, Services::default());
    assert_eq!(m.handle_timeout(later), None);
    assert_eq!(
        m.poll_timeout(),
        Some(later + Duration::from_secs(10)),
        "backoff doubles"
    );
}

#[test]
fn renew_at_half_lease_with_previous_port() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    m.on_probe(now, t, seen(true, false, false));
    let (t, p, suggested) = map_action(&mut m, now);
    assert_eq!(suggested, None);
    m.on_mapped(now, t, p, Ok(mapping(p, now, Some(10))));
    assert_eq!(m.mapping().map(|m| m.external.port()), Some(40001));
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(50)));
    assert_eq!(m.handle_timeout(now + Duration::from_secs(49)), None);
    let half = now + Duration::from_secs(50);
    let Some(Action::Renew {
        ticket,
        mapping: old,
        ..
    }) = m.handle_timeout(half)
    else {
        panic!("no renew")
    };
    assert_eq!(old.external.port(), 40001);
    m.on_renewed(half, ticket, Ok(mapping(p, half, Some(60))));
    assert_eq!(m.mapping().map(|m| m.obtained_at), Some(half));
}

#[test]
fn renewal_failure_withdraws_and_recovers_with_same_port() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    m.on_probe(now, t, seen(false, true, false));
    let (t, p, _) = map_action(&mut m, now);
    m.on_mapped(now, t, p, Ok(mapping(p, now, Some(10))));
    let half = now + Duration::from_secs(50);
    let Some(Action::Renew { ticket, .. }) = m.handle_timeout(half) else {
        panic!("no renew")
    };
    m.on_renewed(half, ticket, Err("timeout".into()));
    assert_eq!(
        m.mapping(),
        None,
        "a mapping we could not renew is not advertised"
    );
    let t = probe_ticket(&mut m, half);
    m.on_probe(half, t, seen(false, true, false));
    let (_, p, suggested) = map_action(&mut m, half);
    assert_eq!((p, suggested), (Protocol::Pcp, Some(40001)));
}

#[test]
fn epoch_going_back_keeps_the_new_mapping() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    m.on_probe(now, t, seen(true, false, false));
    let (t, p, _) = map_action(&mut m, now);
    m.on_mapped(now, t, p, Ok(mapping(p, now, Some(5000))));
    let half = now + Duration::from_secs(50);
    let Some(Action::Renew { ticket, .. }) = m.handle_timeout(half) else {
        panic!("no renew")
    };
    let mut rebooted = mapping(p, half, Some(3));
    rebooted.external = SocketAddr::from(([44, 0, 0, 1], 40999));
    m.on_renewed(half, ticket, Ok(rebooted));
    assert_eq!(m.mapping(), Some(rebooted));
}

#[test]
fn stop_deletes_then_finishes() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    m.on_probe(now, t, seen(true, false, false));
    let (t, p, _) = map_action(&mut m, now);
    m.stop();
    // The map in flight completes; its mapping is then deleted, not kept.
    m.on_mapped(now, t, p, Ok(mapping(p, now, None)));
    let Some(Action::Delete {
        ticket,
        mapping,
        internal_port,
    }) = m.handle_timeout(now)
    else {
        panic!("no delete")
    };
    assert_eq!((mapping.external.port(), internal_port), (40001, PORT));
    assert_eq!(m.mapping(), None);
    assert!(!m.is_stopped());
    m.on_deleted(now, ticket);
    assert!(m.is_stopped());
    assert_eq!(m.handle_timeout(now), None);

    let mut idle = Mapper::new(PORT, config());
    idle.stop();
    assert_eq!(idle.handle_timeout(now), None);
    assert!(idle.is_stopped());
}

#[test]
fn granted_lease_is_capped_at_the_requested_one() {
    let now = Instant::now();
    let mut m = Mapper::new(PORT, config());
    let t = probe_ticket(&mut m, now);
    m.on_probe(now, t, seen(true, false, false));
    let (t, p, _) = map_action(&mut m, now);
    let mut long = mapping(p, now, None);
    long.lease = Duration::from_secs(u64::from(u32::MAX));
    m.on_mapped(now, t, p, Ok(long));
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(50)));
}

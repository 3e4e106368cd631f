//! Metrics (feature `metrics`): what a node scrapes from its registry matches what
//! the host did and what its stats say.

#![cfg(feature = "metrics")]

mod common;

use std::time::Duration;

use common::{TCP, connect, host, init_tracing, wait_until};
use liquid_p2p::{
    BlacklistEntry, Config, Event, Host,
    libp2p::Multiaddr,
    prometheus_client::{encoding::text::encode, registry::Registry},
};

const PROTOCOL: &str = "/chain1/consensus/1";

async fn host_with_metrics(registry: &mut Registry) -> Host {
    init_tracing();
    Host::builder()
        .listen_on(TCP.parse::<Multiaddr>().expect("address"))
        .metrics(registry)
        .build()
        .await
        .expect("host builds")
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("encodes");
    text
}

/// The value of the sample `name{labels}` (labels as printed, or empty).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == key).then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn scraped_counters_and_gauges_match_what_the_host_did() {
    let mut registry = Registry::default();
    let a = host_with_metrics(&mut registry).await;
    let b = host(Config::default()).await;
    let mut inbox = b.control().register_protocol(PROTOCOL).expect("register");
    let b_id = connect(&a, &b).await;

    for i in 0..1000u32 {
        a.control()
            .send(b_id, PROTOCOL, i.to_be_bytes())
            .await
            .expect("send");
    }
    for _ in 0..1000 {
        tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("in time")
            .expect("delivered");
    }

    let text = scrape(&registry);
    let protocol = format!("protocol=\"{PROTOCOL}\"");
    assert_eq!(
        sample(&text, "liquid_sent_frames_total", &protocol),
        Some(1000.0),
        "{text}"
    );
    assert!(sample(&text, "liquid_sent_bytes_total", &protocol).unwrap_or(0.0) >= 4000.0);
    assert_eq!(
        sample(&text, "liquid_send_duration_seconds_count", ""),
        Some(1000.0)
    );
    assert!(sample(&text, "liquid_borrow_wait_seconds_count", "").unwrap_or(0.0) >= 1000.0);
    assert_eq!(
        sample(&text, "liquid_connected_peers", ""),
        Some(1.0),
        "{text}"
    );
    // libp2p-metrics: the swarm's connections and the bytes on the wire.
    assert!(
        text.contains("libp2p_swarm_connections_established_total"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("libp2p_bandwidth_bytes_total") && !l.ends_with(" 0")),
        "{text}"
    );

    // gossipsub's own, under its prefix.
    assert!(text.contains("# TYPE gossipsub_"), "{text}");
    // The liveness check's pings, inside the liquid behaviour, reach
    // libp2p-metrics too (the first ping goes out when the connection opens).
    wait_until(Duration::from_secs(10), || {
        sample(&scrape(&registry), "libp2p_ping_rtt_seconds_count", "").unwrap_or(0.0) >= 1.0
    })
    .await;
    // Counters of events that did not happen are there at zero.
    assert_eq!(
        sample(&text, "liquid_connections_silent_total", ""),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "liquid_gossip_peers_graylisted_total", ""),
        Some(0.0)
    );
    // A send refused before touching the network counts as a failure too.
    let too_large = vec![0u8; Config::default().max_frame_size + 1];
    assert!(a.control().send(b_id, PROTOCOL, &too_large).await.is_err());
    let failed = format!("protocol=\"{PROTOCOL}\",error=\"frame_too_large\"");
    assert_eq!(
        sample(&scrape(&registry), "liquid_send_failures_total", &failed),
        Some(1.0)
    );

    // Pool gauges equal the pool stats, once nothing is in flight.
    let stats = a.control().pool_stats(&b_id);
    let sum = |f: fn(&liquid_p2p::PoolStats) -> usize| stats.iter().map(f).sum::<usize>() as f64;
    let peer = format!("peer=\"{b_id}\"");
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "liquid_pool_streams", &peer),
        Some(sum(|s| s.current))
    );
    assert_eq!(
        sample(&text, "liquid_pool_idle_streams", &peer),
        Some(sum(|s| s.idle))
    );
    assert_eq!(
        sample(&text, "liquid_pool_borrowed_streams", &peer),
        Some(sum(|s| s.borrowed))
    );
    assert_eq!(
        sample(&text, "liquid_pool_waiters", &peer),
        Some(sum(|s| s.waiters))
    );
    assert_eq!(
        sample(&text, "liquid_pool_connections", &peer),
        Some(stats.len() as f64)
    );

    // Receiving side counts: b has no registry, a receives nothing.
    assert_eq!(
        sample(&text, "liquid_received_frames_total", &protocol),
        None
    );

    // A blacklisted peer's dial moves the refusal counter.
    let c = host(Config::default()).await;
    let entry: BlacklistEntry = c.local_peer_id().to_string().parse().expect("entry");
    a.control().blacklist_add(entry).await.expect("add");
    let refused = "reason=\"blacklisted\",stage=\"established\"";
    assert_eq!(sample(&text, "liquid_refusals_total", refused), None);
    let mut events = a.control().events();
    // The dial may report the connection before the refusal closes it.
    let _ = c.dial(a.listen_addrs()[0].clone()).await;
    common::wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::Refused { .. })
    })
    .await;
    let text = scrape(&registry);
    assert!(
        sample(&text, "liquid_refusals_total", refused).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn received_frames_and_inbox_depth_are_per_protocol() {
    let mut registry = Registry::default();
    let a = host(Config::default()).await;
    let b = host_with_metrics(&mut registry).await;
    let mut inbox = b.control().register_protocol(PROTOCOL).expect("register");
    let b_id = connect(&a, &b).await;
    for _ in 0..10 {
        a.control()
            .send(b_id, PROTOCOL, [7u8; 100])
            .await
            .expect("send");
    }
    let protocol = format!("protocol=\"{PROTOCOL}\"");
    // Unread: all ten wait in the inbox.
    wait_until(Duration::from_secs(5), || {
        sample(
            &scrape(&registry),
            "liquid_received_frames_total",
            &protocol,
        ) == Some(10.0)
    })
    .await;
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "liquid_received_bytes_total", &protocol),
        Some(1000.0)
    );
    assert_eq!(
        sample(&text, "liquid_inbox_queued_messages", &protocol),
        Some(10.0)
    );
    for _ in 0..10 {
        inbox.recv().await.expect("delivered");
    }
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "liquid_inbox_queued_messages", &protocol),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "liquid_inbox_queued_bytes", &protocol),
        Some(0.0)
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_host_after_shutdown_leaves_its_counters_and_no_gauges() {
    let mut registry = Registry::default();
    let a = host_with_metrics(&mut registry).await;
    let b = host(Config::default()).await;
    connect(&a, &b).await;
    assert!(scrape(&registry).contains("liquid_pool_streams{"));
    a.shutdown().await;
    drop(a);
    b.shutdown().await;
    wait_until(Duration::from_secs(5), || {
        !scrape(&registry).contains("liquid_pool_streams{")
    })
    .await;
    // The recorded counters stay readable.
    assert!(scrape(&registry).contains("liquid_connections_established_total"));
}

#[tokio::test]
async fn events_a_subscriber_missed_are_counted() {
    init_tracing();
    let mut registry = Registry::default();
    let a = Host::builder()
        .config(Config::default().with_event_queue_len(4))
        .listen_on(TCP.parse::<Multiaddr>().expect("address"))
        .metrics(&mut registry)
        .build()
        .await
        .expect("host builds");
    let mut events = a.control().events();
    // Each connection brings more events than the subscription holds.
    let others = [
        host(Config::default()).await,
        host(Config::default()).await,
        host(Config::default()).await,
    ];
    for other in &others {
        connect(&a, other).await;
    }
    let Some(Event::EventsDropped { count }) = events.try_recv() else {
        panic!("the subscription did not fall behind");
    };
    assert!(count >= 1);
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "liquid_events_dropped_total", "queue=\"subscriber\""),
        Some(count as f64),
        "{text}"
    );
    for other in others {
        other.shutdown().await;
    }
    a.shutdown().await;
}

/// Every `liquid_` metric the ready dashboard (docs/grafana-liquid-p2p.json)
/// queries is one the library defines, so no panel stays empty for a misspelt
/// name. A scrape leaves out families with no series yet (a refusal reason
/// never seen), so those are looked up among the names metrics.rs registers.
#[tokio::test]
async fn every_liquid_metric_on_the_dashboard_exists() {
    let read = |path: &str| {
        std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
    };
    let dashboard = read("../docs/grafana-liquid-p2p.json");
    let source = read("src/metrics.rs");
    let mut registry = Registry::default();
    let a = host_with_metrics(&mut registry).await;
    let text = scrape(&registry);
    let mut queried = std::collections::BTreeSet::new();
    for (at, _) in dashboard.match_indices("liquid_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        queried.insert(name);
    }
    assert!(queried.len() > 40, "{queried:?}");
    let strip = |name: &str, suffixes: &[&str]| {
        suffixes
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name)
            .to_owned()
    };
    for name in &queried {
        // The family: the name without the suffix the text format adds.
        let family = strip(name, &["_total", "_bucket", "_count", "_sum"]);
        // As registered: without the prefix and the unit's suffix.
        let stem = strip(&family["liquid_".len()..], &["_seconds", "_bytes"]);
        assert!(
            text.contains(&format!("# TYPE {family} "))
                || source.contains(&format!(
                    "\"{family_stem}\"",
                    family_stem = &family["liquid_".len()..]
                ))
                || source.contains(&format!("\"{stem}\"")),
            "the dashboard queries {name}, which the library does not define"
        );
    }
    a.shutdown().await;
}

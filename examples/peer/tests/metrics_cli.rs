//! `peer --metrics`: the registry scraped through the real HTTP endpoint.

#![cfg(feature = "metrics")]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{Peer, TIMEOUT};
use serde_json::Value;

/// GETs `url` (`http://host:port/path`) and returns the body; a test-side
/// client only (the endpoint itself is axum's).
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_once('/').expect("path");
    let mut stream = TcpStream::connect(authority).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
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

#[test]
fn scraped_metrics_count_sends_match_stats_and_see_refusals() {
    // b is the receiver; a (with metrics) admits only b, so c is refused.
    let mut b = Peer::start_json(&[]);
    let (b_address, b_id) = b.listening();
    let mut a = Peer::start_json(&[
        "--metrics",
        "127.0.0.1:0",
        "--allow",
        &b_id,
        "--dial",
        &b_address,
    ]);
    let url = a.expect_event("metrics")["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let (a_address, _) = a.listening();
    a.expect("connected to b", |v| {
        v["event"] == "connected" && v["peer"] == b_id.as_str()
    });

    a.command(&format!("flood {b_id} /liquid/chat/1 1000 64"));
    let done = a.expect_event("flood_done");
    assert_eq!(done["sent_ok"], 1000, "{done}");

    let text = get(&url);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
    let frames = sample(
        &text,
        "liquid_sent_frames_total",
        "protocol=\"/liquid/chat/1\"",
    )
    .unwrap_or_else(|| panic!("no frames counter: {text}"));
    assert!(frames >= 1000.0, "{frames}");

    // The pool gauges are the pool stats: compare them at a moment the pools
    // are still (two scrapes around the stats line agree).
    let deadline = Instant::now() + TIMEOUT;
    let peer = format!("peer=\"{b_id}\"");
    let gauges = |text: &str| -> Vec<Option<f64>> {
        [
            "liquid_pool_streams",
            "liquid_pool_idle_streams",
            "liquid_pool_borrowed_streams",
            "liquid_pool_waiters",
        ]
        .iter()
        .map(|name| sample(text, name, &peer))
        .collect()
    };
    loop {
        let before = gauges(&get(&url));
        a.command("stats");
        let stats: Value = a.expect_event("stats");
        let after = gauges(&get(&url));
        let pools = stats["per_peer"][0]["pools"]
            .as_array()
            .expect("pools")
            .clone();
        let sum = |field: &str| -> Option<f64> {
            Some(
                pools
                    .iter()
                    .map(|p| p[field].as_u64().unwrap_or(0))
                    .sum::<u64>() as f64,
            )
        };
        let from_stats = vec![sum("current"), sum("idle"), sum("borrowed"), sum("waiters")];
        if before == after && after == from_stats {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges {after:?} never matched stats {from_stats:?}: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A peer not on the allow-list dials a: the refusal counter moves.
    let refused = "reason=\"not_allowed\",stage=\"established\"";
    assert_eq!(sample(&get(&url), "liquid_refusals_total", refused), None);
    let mut c = Peer::start_json(&["--dial", &a_address]);
    c.listening();
    a.expect("refused", |v| {
        v["event"] == "refused" && v["reason"] == "not_allowed"
    });
    let count = sample(&get(&url), "liquid_refusals_total", refused);
    assert!(count.is_some_and(|n| n >= 1.0), "{count:?}");

    // The swarm's own metrics are served too.
    let text = get(&url);
    assert!(
        text.contains("libp2p_swarm_connections_established_total"),
        "{text}"
    );
    c.quit();
    a.quit();
    b.quit();
}

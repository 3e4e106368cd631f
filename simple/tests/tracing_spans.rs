//! Logs of a connection's tasks carry the connection's span: peer, connection id
//! and remote address, so an operator can follow one connection in the logs.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{connect, wait_until};
use liquid_p2p::{Config, Host, PeerId, libp2p::Multiaddr};

const PROTOCOL: &str = "/chain1/members-only/1";
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn host() -> Host {
    Host::builder()
        .listen_on(
            "/ip4/127.0.0.1/tcp/0"
                .parse::<Multiaddr>()
                .expect("address"),
        )
        .config(Config::default())
        .build()
        .await
        .expect("host builds")
}

// A current-thread runtime: the subscriber set for this thread sees every task.
#[tokio::test]
async fn a_reader_tasks_log_names_its_connection() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("liquid_p2p=trace"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let a = host().await;
    let b = host().await;
    // Only members may send on it, and there are none: b's reader drops a's
    // frame and says so (at trace: a peer can cause it once per message).
    let _inbox = b.control().register_protocol(PROTOCOL).expect("register");
    b.control()
        .set_protocol_members(PROTOCOL, Some(Vec::<PeerId>::new()))
        .expect("members");
    let b_id = connect(&a, &b).await;
    a.control().send(b_id, PROTOCOL, b"x").await.expect("send");
    let a_id = a.local_peer_id().to_string();
    wait_until(Duration::from_secs(5), || {
        captured.text().lines().any(|line| {
            line.contains("frame from a non-member dropped")
                && line.contains(&format!("connection{{peer={a_id}"))
                && line.contains("remote=/ip4/127.0.0.1/tcp/")
                && line.contains(":inbound_stream:")
        })
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

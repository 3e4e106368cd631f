//! `peer`: one liquid-p2p node driven from the command line, for trying the
//! library by hand and for scripts and tests.
//!
//! It listens, dials, registers protocols and prints what happens on stdout: one
//! JSON object per line with `--json`, readable lines otherwise. Commands are read
//! from stdin, one per line. Logs go to stderr (`RUST_LOG`, default `warn`).
//!
//! ```text
//! peer [--listen MULTIADDR]... [--key-file PATH] [--dial MULTIADDR]...
//!      [--required MULTIADDR]... [--protocol ID]... [--json]
//! ```

use std::{
    collections::HashSet,
    io::{BufRead, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use clap::Parser;
use futures::future::join_all;
use liquid_p2p::{Event, Host, Inbox, libp2p::Multiaddr};
use liquid_p2p_examples::{
    Command, DEFAULT_PROTOCOL, Output, Target, parse_command, shutdown_signal,
};
use tokio::sync::mpsc;

/// Listen address used when no `--listen` is given.
const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

const AFTER_HELP: &str = "\
Commands (stdin, one per line):
  send <peer-id|*> <protocol> <text...>   send the rest of the line; * = every connected peer
  register <protocol>                     start receiving <protocol>
  unregister <protocol>                   stop receiving <protocol>
  dial <multiaddr>                        connect to a peer
  peers                                   list connected peers
  quit                                    shut down gracefully and exit 0
A bad command prints an error and the peer keeps running. At the end of stdin the
peer keeps running until SIGINT (Ctrl-C) or SIGTERM, which also shut it down
gracefully.

Output (--json): one JSON object per line, with an \"event\" field: listening,
connected, disconnected, message, error, peers, sent, registered, unregistered,
dialed, and every other host event in snake_case (connection_established,
connection_closed, dial_failed, stream_refused, protocol_error, unknown_protocol,
connection_stalled, events_dropped).";

/// A liquid-p2p peer: listens, dials and exchanges messages, driven from stdin.
#[derive(Debug, Parser)]
#[command(name = "peer", version, after_help = AFTER_HELP)]
struct Args {
    /// Address to listen on (repeatable). Default: /ip4/127.0.0.1/tcp/0.
    /// /tcp/.. uses TCP + noise + yamux, /udp/../quic-v1 uses QUIC.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,

    /// File holding the identity key: created (mode 0600) if missing, reused
    /// otherwise, so the peer id survives restarts. Default: a fresh key.
    #[arg(long = "key-file", value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Peer to dial at start (repeatable). With a /p2p/<id> suffix the remote must
    /// prove that identity.
    #[arg(long = "dial", value_name = "MULTIADDR")]
    dial: Vec<Multiaddr>,

    /// Peer that must stay connected (repeatable; the address must end in
    /// /p2p/<id>). It is dialled at start and redialled whenever it disconnects or a
    /// dial fails, on a capped Fibonacci schedule (1, 1, 2, 3, 5 … s, at most 60 s).
    #[arg(long = "required", value_name = "MULTIADDR")]
    required: Vec<Multiaddr>,

    /// Protocol to receive (repeatable). Default: /liquid/chat/1.
    #[arg(long = "protocol", value_name = "ID")]
    protocol: Vec<String>,

    /// Print one JSON object per line on stdout instead of readable text.
    #[arg(long)]
    json: bool,
}

/// Writes output lines to stdout, one whole line at a time, flushed.
#[derive(Debug, Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn print(&self, output: &Output) {
        let line = output.render(self.json);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout is not a reason to stop the node.
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    liquid_p2p_examples::init_stderr_tracing("warn");
    let printer = Printer { json: args.json };
    match run(args, printer).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            printer.print(&Output::error(message));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, printer: Printer) -> Result<(), String> {
    let mut builder = Host::builder();
    if let Some(path) = &args.key_file {
        builder = builder.key_file(path);
    }
    let listen = if args.listen.is_empty() {
        vec![
            DEFAULT_LISTEN
                .parse()
                .map_err(|e| format!("default listen address: {e}"))?,
        ]
    } else {
        args.listen
    };
    for address in listen {
        builder = builder.listen_on(address);
    }
    for address in args.required {
        builder = builder.required_peer(address);
    }
    let host = Arc::new(
        builder
            .build()
            .await
            .map_err(|e| format!("cannot start: {e}"))?,
    );

    // Register before announcing the listen addresses: once a script sees
    // `listening`, messages for these protocols are delivered.
    let mut protocols = args.protocol;
    if protocols.is_empty() {
        protocols.push(DEFAULT_PROTOCOL.to_owned());
    }
    let mut seen = HashSet::new();
    protocols.retain(|p| seen.insert(p.clone()));
    for protocol in &protocols {
        let inbox = host
            .register_protocol(protocol.as_str())
            .map_err(|e| format!("cannot register protocol `{protocol}`: {e}"))?;
        spawn_inbox(inbox, printer);
    }

    // Subscribe before reading the addresses: an address not yet in the snapshot
    // is then reported by an event. The events of the addresses bound during
    // `build` happened before any subscription could exist.
    let events = host.events();
    let announced: HashSet<String> = host.listen_addrs().iter().map(|a| a.to_string()).collect();
    let mut in_order: Vec<&String> = announced.iter().collect();
    in_order.sort();
    for address in in_order {
        printer.print(&Output::Listening {
            address: address.clone(),
        });
    }
    let event_task = tokio::spawn(print_events(events, announced, printer));

    for address in args.dial {
        let host = Arc::clone(&host);
        tokio::spawn(async move { dial(&host, address, printer).await });
    }

    let mut lines = read_stdin();
    let commands = async {
        while let Some(line) = lines.recv().await {
            match parse_command(&line) {
                Ok(None) => {}
                Ok(Some(Command::Quit)) => return,
                Ok(Some(command)) => execute(&host, command, printer).await,
                Err(e) => printer.print(&Output::error(e)),
            }
        }
        // End of stdin: keep serving until a signal arrives.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = commands => tracing::debug!("quit command"),
        () = shutdown_signal() => tracing::debug!("signal"),
    }
    host.shutdown().await;
    event_task.abort();
    Ok(())
}

/// Prints every message of `inbox` until its protocol is unregistered.
fn spawn_inbox(mut inbox: Inbox, printer: Printer) {
    tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            printer.print(&Output::message(
                message.peer,
                &message.protocol,
                &message.payload,
            ));
        }
    });
}

async fn print_events(
    mut events: liquid_p2p::Events,
    mut announced: HashSet<String>,
    printer: Printer,
) {
    while let Some(event) = events.recv().await {
        if let Event::Listening { address } = &event
            && announced.remove(address)
        {
            continue;
        }
        printer.print(&Output::from_event(&event));
    }
}

async fn dial(host: &Host, address: Multiaddr, printer: Printer) {
    match host.dial(address.clone()).await {
        Ok(peer) => printer.print(&Output::Dialed {
            peer: peer.to_string(),
        }),
        Err(e) => printer.print(&Output::error(format!("dial {address}: {e}"))),
    }
}

async fn execute(host: &Host, command: Command, printer: Printer) {
    match command {
        Command::Send {
            target,
            protocol,
            text,
        } => {
            let peers = match target {
                Target::All => host.connected_peers(),
                Target::Peer(peer) => vec![peer],
            };
            if peers.is_empty() {
                printer.print(&Output::error("send: no connected peers"));
                return;
            }
            let results = join_all(
                peers
                    .iter()
                    .map(|peer| host.send(*peer, &protocol, text.as_bytes())),
            )
            .await;
            for (peer, result) in peers.iter().zip(results) {
                printer.print(&match result {
                    Ok(()) => Output::Sent {
                        peer: peer.to_string(),
                        protocol: protocol.clone(),
                    },
                    Err(e) => Output::error(format!("send to {peer}: {e}")),
                });
            }
        }
        Command::Register(protocol) => match host.register_protocol(protocol.as_str()) {
            Ok(inbox) => {
                spawn_inbox(inbox, printer);
                printer.print(&Output::Registered { protocol });
            }
            Err(e) => printer.print(&Output::error(format!("register {protocol}: {e}"))),
        },
        Command::Unregister(protocol) => match host.unregister_protocol(&protocol) {
            Ok(()) => printer.print(&Output::Unregistered { protocol }),
            Err(e) => printer.print(&Output::error(format!("unregister {protocol}: {e}"))),
        },
        Command::Dial(address) => dial(host, address, printer).await,
        Command::Peers => {
            let mut peers: Vec<String> = host
                .connected_peers()
                .iter()
                .map(|p| p.to_string())
                .collect();
            peers.sort();
            printer.print(&Output::Peers { peers });
        }
        Command::Quit => {}
    }
}

/// Lines of stdin, read on a plain thread: a blocking read of tokio's stdin
/// cannot be cancelled and would hold up the exit after `quit` or a signal.
fn read_stdin() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match stdin.read_until(b'\n', &mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer).into_owned();
                        if tx.blocking_send(line).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read stdin; ignoring it");
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stdin reader; commands are ignored");
    }
    rx
}

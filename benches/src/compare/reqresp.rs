//! `request-response`: libp2p request-response, one request per message, an empty
//! response (the payload back for round trips), with a length-prefixed codec.

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture};
use libp2p::{
    PeerId, StreamProtocol,
    request_response::{self, Codec, Message, OutboundRequestId, ProtocolSupport},
};
use tokio::sync::oneshot;

use super::{
    BenchError, Context, Transport,
    frame::{read_frame, write_frame},
    harness::Pair,
    ledger::Ledger,
    swarm::{Driven, build_swarm, connect},
};

/// Protocol of the requests.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/reqresp/1");

/// Requests and responses are one length-prefixed frame each.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        read_frame(io, &mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        read_frame(io, &mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response).await
    }
}

type Behaviour = request_response::Behaviour<FrameCodec>;
type RrEvent = request_response::Event<Vec<u8>, Vec<u8>>;
type Pending = Arc<Mutex<HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>>>>;

/// Two request-response swarms; the sender dialled the receiver.
pub struct ReqRespPair {
    sender: Driven<Behaviour>,
    target: PeerId,
    pending: Pending,
    _receiver: Driven<Behaviour>,
}

fn behaviour(request_timeout: Duration) -> Behaviour {
    request_response::Behaviour::with_codec(
        FrameCodec,
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(request_timeout),
    )
}

impl ReqRespPair {
    /// Connects two swarms over `transport`. The receiver books every request in
    /// `ledger`. With `echo`, responses carry the request's payload; otherwise they
    /// are empty.
    pub async fn setup(
        transport: Transport,
        echo: bool,
        ledger: Arc<Ledger>,
        request_timeout: Duration,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let receiver = build_swarm(|_| behaviour(request_timeout))?;
        let sender = build_swarm(|_| behaviour(request_timeout))?;
        let pending: Pending = Arc::default();
        let on_request = {
            move |swarm: &mut libp2p::Swarm<Behaviour>, event: RrEvent| {
                if let request_response::Event::Message {
                    message:
                        Message::Request {
                            request, channel, ..
                        },
                    ..
                } = event
                {
                    ledger.record(&request);
                    let response = if echo { request } else { Vec::new() };
                    let _ = swarm.behaviour_mut().send_response(channel, response);
                }
            }
        };
        let on_response = {
            let pending = pending.clone();
            move |_: &mut libp2p::Swarm<Behaviour>, event: RrEvent| {
                let (id, outcome) = match event {
                    request_response::Event::Message {
                        message:
                            Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } => (request_id, Ok(response)),
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } => (request_id, Err(error.to_string())),
                    _ => return,
                };
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
        };
        let (receiver, sender) =
            connect(receiver, sender, transport, on_request, on_response, limit).await?;
        Ok(Self {
            target: receiver.peer(),
            sender,
            pending,
            _receiver: receiver,
        })
    }

    /// Sends one request; returns the response.
    async fn request(&self, payload: &[u8]) -> Result<Vec<u8>, BenchError> {
        let (reply, outcome) = oneshot::channel();
        let (target, pending, request) = (self.target, self.pending.clone(), payload.to_vec());
        self.sender.command(Box::new(move |swarm| {
            let id = swarm.behaviour_mut().send_request(&target, request);
            if let Ok(mut pending) = pending.lock() {
                pending.insert(id, reply);
            }
        }))?;
        outcome
            .await
            .ctx("request dropped")?
            .map_err(|e| BenchError::new(format!("request failed: {e}")))
    }
}

impl Pair for ReqRespPair {
    fn send<'a>(&'a self, _: usize, payload: &'a [u8]) -> BoxFuture<'a, Result<(), BenchError>> {
        self.request(payload).map(|r| r.map(drop)).boxed()
    }

    fn round_trip<'a>(
        &'a self,
        payload: &'a [u8],
        reply: &'a mut Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BenchError>> {
        async move {
            *reply = self.request(payload).await?;
            Ok(())
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

//! Counting the worker's PostgreSQL round trips: a TCP proxy between the
//! worker and the server that parses the client → server half of the wire
//! protocol and counts the messages that make the client wait for an answer.
//!
//! After the untyped start-up packet (4-byte length, 4-byte code; an
//! `SSLRequest` or `GSSENCRequest` is followed by another start-up packet),
//! every frontend message is one type byte and a 4-byte big-endian length that
//! counts itself but not the type byte. A `Sync` (`S`, the end of an
//! extended-protocol exchange) or a simple `Query` (`Q`) is one round trip.
//! The parser keeps its place across reads, since TCP splits messages
//! anywhere. The worker must connect with `sslmode=disable`: an encrypted
//! stream cannot be parsed (a server that accepts TLS would leave the parser
//! lost, and such connections are counted as unparsed instead of guessed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Expecting an untyped packet: length, then a code.
    Startup,
    /// Expecting typed messages.
    Typed,
    /// The stream did not make sense; nothing more is counted.
    Lost,
}

/// The frontend half of the protocol, parsed incrementally.
#[derive(Debug, Clone)]
pub struct FrontendParser {
    phase: Phase,
    header: [u8; 8],
    have: usize,
    /// Body bytes of the current message still to pass.
    skip: usize,
    round_trips: u64,
    messages: u64,
}

impl Default for FrontendParser {
    fn default() -> Self {
        FrontendParser::new()
    }
}

impl FrontendParser {
    pub fn new() -> FrontendParser {
        FrontendParser {
            phase: Phase::Startup,
            header: [0; 8],
            have: 0,
            skip: 0,
            round_trips: 0,
            messages: 0,
        }
    }

    /// Feeds the next bytes the client sent; returns the round trips they completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let before = self.round_trips;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let need = match self.phase {
                Phase::Startup => 8,
                Phase::Typed => 5,
                Phase::Lost => break,
            };
            let n = (need - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == need {
                self.have = 0;
                self.header_complete();
            }
        }
        self.round_trips - before
    }

    fn header_complete(&mut self) {
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        match self.phase {
            Phase::Startup => {
                let length = be(&self.header[0..4]);
                let code = be(&self.header[4..8]) as u32;
                if length < 8 {
                    self.phase = Phase::Lost;
                    return;
                }
                self.skip = length - 8;
                self.messages += 1;
                // After an encryption request the server answers one byte and
                // the client sends a start-up packet again (we only follow a
                // refusal; sslmode=disable makes sure of that).
                if code != SSL_REQUEST && code != GSSENC_REQUEST {
                    self.phase = Phase::Typed;
                }
            }
            Phase::Typed => {
                let kind = self.header[0];
                let length = be(&self.header[1..5]);
                if length < 4 {
                    self.phase = Phase::Lost;
                    return;
                }
                self.skip = length - 4;
                self.messages += 1;
                if kind == b'S' || kind == b'Q' {
                    self.round_trips += 1;
                }
            }
            Phase::Lost => {}
        }
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    pub fn is_lost(&self) -> bool {
        self.phase == Phase::Lost
    }
}

/// What the proxy has seen so far, over all connections.
#[derive(Debug, Default)]
pub struct Counts {
    pub round_trips: AtomicU64,
    pub connections: AtomicU64,
    /// Connections whose stream could not be parsed (their later round trips are missing).
    pub lost: AtomicU64,
}

/// A running proxy. Dropping it stops accepting and cuts every connection.
pub struct RoundTripProxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    stop: CancellationToken,
}

impl RoundTripProxy {
    /// Listens on 127.0.0.1 (ephemeral port) and forwards every connection to `target`.
    pub async fn start(target: String) -> std::io::Result<RoundTripProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        let (accept_counts, accept_stop) = (counts.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let inbound = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            tracing::warn!(%error, "round-trip proxy: accept failed");
                            continue;
                        }
                    },
                    _ = accept_stop.cancelled() => return,
                };
                let (target, counts, stop) =
                    (target.clone(), accept_counts.clone(), accept_stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        result = forward(inbound, &target, &counts) => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "round-trip proxy connection ended");
                            }
                        }
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Ok(RoundTripProxy { port, counts, stop })
    }

    pub fn round_trips(&self) -> u64 {
        self.counts.round_trips.load(Ordering::Relaxed)
    }
}

impl Drop for RoundTripProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One connection: client → server parsed and counted, server → client copied.
async fn forward(mut inbound: TcpStream, target: &str, counts: &Counts) -> std::io::Result<()> {
    let mut outbound = TcpStream::connect(target).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    counts.connections.fetch_add(1, Ordering::Relaxed);
    let (mut client_read, mut client_write) = inbound.split();
    let (mut server_read, mut server_write) = outbound.split();
    let upstream = async {
        let mut parser = FrontendParser::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut was_lost = false;
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                server_write.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            let completed = parser.feed(&buffer[..n]);
            counts.round_trips.fetch_add(completed, Ordering::Relaxed);
            if parser.is_lost() && !was_lost {
                was_lost = true;
                counts.lost.fetch_add(1, Ordering::Relaxed);
            }
            server_write.write_all(&buffer[..n]).await?;
        }
    };
    let downstream = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    // Either side closing ends the connection.
    tokio::select! {
        result = upstream => result,
        result = downstream => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untyped(code: u32, body: &[u8]) -> Vec<u8> {
        let mut out = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&((4 + body.len()) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A session as sqlx writes it: an SSL request (refused), start-up,
    /// password, a simple query, prepared statements, a transaction; bodies
    /// full of `S` and `Q` bytes that must not be taken for message types.
    fn session() -> (Vec<u8>, u64, u64) {
        let mut stream = Vec::new();
        stream.extend(untyped(SSL_REQUEST, &[]));
        stream.extend(untyped(GSSENC_REQUEST, &[]));
        stream.extend(untyped(196_608, b"user\0postgres\0database\0SQSQ\0\0"));
        stream.extend(typed(b'p', b"SSSSQQQQ\0"));
        stream.extend(typed(b'Q', b"SET application_name = 'QS'\0"));
        // Prepare: Parse + Describe + Sync.
        stream.extend(typed(b'P', b"\0SELECT 'S' FROM q WHERE s = $1\0\0\0"));
        stream.extend(typed(b'D', b"S\0"));
        stream.extend(typed(b'S', b""));
        // Execute twice: Bind + Execute + Sync.
        for _ in 0..2 {
            stream.extend(typed(b'B', &[b'S'; 300]));
            stream.extend(typed(b'E', b"\0\0\0\0\0"));
            stream.extend(typed(b'S', b""));
        }
        stream.extend(typed(b'Q', b"BEGIN\0"));
        stream.extend(typed(b'B', b"QQQQ"));
        stream.extend(typed(b'E', b"\0\0\0\0\0"));
        stream.extend(typed(b'S', b""));
        stream.extend(typed(b'Q', b"COMMIT\0"));
        stream.extend(typed(b'X', b""));
        // Round trips: Q(SET) + S + 2S + Q(BEGIN) + S + Q(COMMIT) = 7.
        (stream, 7, 20)
    }

    #[test]
    fn counts_syncs_and_queries_in_one_read() {
        let (stream, round_trips, messages) = session();
        let mut parser = FrontendParser::new();
        assert_eq!(parser.feed(&stream), round_trips);
        assert_eq!(parser.round_trips(), round_trips);
        assert_eq!(parser.messages(), messages);
        assert!(!parser.is_lost());
    }

    #[test]
    fn counts_the_same_whatever_the_split() {
        let (stream, round_trips, messages) = session();
        // Every single split point, and every pair of split points around the
        // headers (where a message type, its length or the start-up code is cut).
        for cut in 0..=stream.len() {
            let mut parser = FrontendParser::new();
            let total = parser.feed(&stream[..cut]) + parser.feed(&stream[cut..]);
            assert_eq!(total, round_trips, "split at {cut}");
            assert_eq!(parser.messages(), messages, "split at {cut}");
        }
        for a in 0..60 {
            for b in a..stream.len().min(a + 40) {
                let mut parser = FrontendParser::new();
                let total = parser.feed(&stream[..a])
                    + parser.feed(&stream[a..b])
                    + parser.feed(&stream[b..]);
                assert_eq!(total, round_trips, "split at {a} and {b}");
            }
        }
        let mut parser = FrontendParser::new();
        let total: u64 = stream
            .iter()
            .map(|byte| parser.feed(std::slice::from_ref(byte)))
            .sum();
        assert_eq!(total, round_trips, "byte by byte");
    }

    #[test]
    fn a_broken_stream_stops_counting() {
        let mut parser = FrontendParser::new();
        parser.feed(&untyped(196_608, b"user\0x\0\0"));
        // A length below 4 cannot be a message.
        assert_eq!(parser.feed(&[b'S', 0, 0, 0, 1]), 0);
        assert!(parser.is_lost());
        assert_eq!(parser.feed(&typed(b'S', b"")), 0);
    }

    #[tokio::test]
    async fn the_proxy_forwards_both_ways_and_counts() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap().to_string();
        let (stream, round_trips, _) = session();
        let expected = stream.clone();
        let echo = tokio::spawn(async move {
            let (mut conn, _) = server.accept().await.unwrap();
            let mut got = vec![0u8; expected.len()];
            conn.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected);
            conn.write_all(b"answer").await.unwrap();
        });
        let proxy = RoundTripProxy::start(target).await.unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        for chunk in stream.chunks(7) {
            client.write_all(chunk).await.unwrap();
        }
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
        echo.await.unwrap();
        assert_eq!(proxy.round_trips(), round_trips);
        assert_eq!(proxy.counts.connections.load(Ordering::Relaxed), 1);
        assert_eq!(proxy.counts.lost.load(Ordering::Relaxed), 0);
    }
}

//! The client side of the WebSocket port-forward channel protocol, sans IO.
//!
//! What the API server relays from the kubelet (`pkg/kubelet/cri/streaming/portforward/
//! websocket.go`):
//!
//! - The upgrade request lists ports in the `ports` query; the same port may be listed more
//!   than once (`NewV4Options` does not deduplicate). Port `i` gets data channel `2i` and
//!   error channel `2i + 1`; every binary message is one channel byte and a payload.
//! - The first message on each of a port's two channels is the port number (2 bytes,
//!   little-endian). The kubelet dials the pod's port for *every* listed port as soon as the
//!   WebSocket opens, whether or not the client ever sends anything on it.
//! - An error (e.g. "connection refused" inside the pod) arrives as text on the error
//!   channel; when a port's forward ends the kubelet closes its streams without telling the
//!   client, and the WebSocket closes only when every port's forward has ended.
//! - The kubelet's port-forward handler registers only `v4.channel.k8s.io` (and the base64
//!   variants): there is no close signal in either direction, so a client cannot end one
//!   port's stream except by closing the whole WebSocket. `v5.channel.k8s.io` (a close
//!   signal `[255, channel]`) exists for exec/attach; when a server negotiates it for
//!   port-forward we send the signal on half-close, and accept it from the server.
//!
//! Hence `kubelan forward` opens one WebSocket per local connection (see its crate docs),
//! and a carrier is one WebSocket; the codec still handles any number of ports, which
//! forward's tests use to measure the alternative.

/// The v5 close signal's channel byte.
pub const CLOSE_SIGNAL: u8 = 255;

/// What one received message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Nothing for the relay (a port-number prefix, an empty payload, a message on an
    /// error channel that repeats nothing).
    Nothing,
    /// Bytes from the pod for port slot `slot`.
    Data {
        /// Index into the ports of the upgrade request.
        slot: usize,
        /// The bytes.
        data: &'a [u8],
    },
    /// The kubelet reported an error for `slot` (the text, possibly in pieces).
    Error {
        /// Index into the ports of the upgrade request.
        slot: usize,
        /// The message bytes (UTF-8 from real servers).
        message: &'a [u8],
    },
    /// v5: the server closed `slot`'s data channel (no more data will come).
    Closed {
        /// Index into the ports of the upgrade request.
        slot: usize,
    },
}

/// A message that breaks the protocol; the WebSocket should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A channel beyond the ports requested.
    #[error("port-forward protocol error: message on channel {0}, beyond the ports requested")]
    UnknownChannel(u8),
    /// The first message of a channel was not a 2-byte port number.
    #[error("port-forward protocol error: channel {channel} did not start with its port number")]
    ShortPrefix {
        /// The channel.
        channel: u8,
    },
    /// The first message of a channel named another port.
    #[error(
        "port-forward protocol error: channel {channel} is for port {got}, but port {expected} was requested there"
    )]
    WrongPort {
        /// The channel.
        channel: u8,
        /// The port it named.
        got: u16,
        /// The port requested at that position.
        expected: u16,
    },
    /// A v5 close signal that is not `[255, channel]`.
    #[error("port-forward protocol error: malformed close signal")]
    BadCloseSignal,
}

/// Per-connection state: which channels have seen their port prefix.
#[derive(Debug, Clone)]
pub struct Channels {
    ports: Vec<u16>,
    started: Vec<bool>,
    v5: bool,
}

impl Channels {
    /// For an upgrade that listed `ports` (at most 127: channel numbers are one byte and
    /// 255 is reserved) and negotiated v5 (`true`) or v4.
    pub fn new(ports: &[u16], v5: bool) -> Channels {
        let ports: Vec<u16> = ports.iter().copied().take(127).collect();
        Channels {
            started: vec![false; ports.len() * 2],
            ports,
            v5,
        }
    }

    /// Whether close signals may be sent (v5 was negotiated).
    pub fn can_half_close(&self) -> bool {
        self.v5
    }

    /// Decodes one binary message from the server.
    ///
    /// # Errors
    /// [`ProtocolError`] for a message that breaks the protocol.
    pub fn receive<'a>(&mut self, msg: &'a [u8]) -> Result<Incoming<'a>, ProtocolError> {
        let Some((&channel, payload)) = msg.split_first() else {
            return Ok(Incoming::Nothing);
        };
        if channel == CLOSE_SIGNAL && self.v5 {
            let &[closed] = payload else {
                return Err(ProtocolError::BadCloseSignal);
            };
            let slot = usize::from(closed) / 2;
            if slot >= self.ports.len() {
                return Err(ProtocolError::UnknownChannel(closed));
            }
            return Ok(if closed % 2 == 0 {
                Incoming::Closed { slot }
            } else {
                Incoming::Nothing
            });
        }
        let index = usize::from(channel);
        let slot = index / 2;
        let Some(&expected) = self.ports.get(slot) else {
            return Err(ProtocolError::UnknownChannel(channel));
        };
        let payload = if self.started[index] {
            payload
        } else {
            let Some((prefix, rest)) = payload.split_first_chunk::<2>() else {
                return Err(ProtocolError::ShortPrefix { channel });
            };
            let got = u16::from_le_bytes(*prefix);
            if got != expected {
                return Err(ProtocolError::WrongPort {
                    channel,
                    got,
                    expected,
                });
            }
            self.started[index] = true;
            rest
        };
        if payload.is_empty() {
            return Ok(Incoming::Nothing);
        }
        Ok(if channel % 2 == 0 {
            Incoming::Data {
                slot,
                data: payload,
            }
        } else {
            Incoming::Error {
                slot,
                message: payload,
            }
        })
    }

    /// The message carrying `data` to the pod on `slot`.
    pub fn data(&self, slot: usize, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 1);
        out.push(channel_byte(slot * 2));
        out.extend_from_slice(data);
        out
    }

    /// The v5 close signal for `slot`'s data channel (the client finished sending); `None`
    /// on v4, which has no way to say it.
    pub fn close(&self, slot: usize) -> Option<Vec<u8>> {
        self.v5.then(|| vec![CLOSE_SIGNAL, channel_byte(slot * 2)])
    }
}

fn channel_byte(channel: usize) -> u8 {
    u8::try_from(channel).unwrap_or(u8::MAX - 1)
}

/// The `ports` query value for an upgrade: the port listed `slots` times (`80,80,80`).
pub fn ports_query(port: u16, slots: usize) -> String {
    vec![port.to_string(); slots.clamp(1, 127)].join(",")
}

/// The entry point of the `portforward_channel` cargo-fuzz target
/// (`fuzz/fuzz_targets/portforward_channel.rs`) and of its corpus replay
/// (`crates/kubelan/tests/fuzz_corpus.rs`): a server's messages decoded for some upgrade.
///
/// Input: one byte of setup (bit 7: v5; bits 0–1: 1–4 ports), two bytes per port
/// (little-endian), then messages, each a length byte and that many bytes. Must return
/// normally for any input: decoding never panics; payloads it hands out are the message's
/// tail; slots are the upgrade's; close signals only on v5; what the client sends encodes
/// as the protocol says.
#[cfg(any(fuzzing, test, feature = "fuzz"))]
pub fn fuzz_entry(data: &[u8]) {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let v5 = setup & 0x80 != 0;
    let n = usize::from(setup & 0x03) + 1;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let Some((port, tail)) = rest.split_first_chunk::<2>() else {
            return;
        };
        ports.push(u16::from_le_bytes(*port));
        rest = tail;
    }
    let mut channels = Channels::new(&ports, v5);
    for slot in 0..n {
        let mut sent = channels.data(slot, rest);
        assert_eq!(usize::from(sent.remove(0)), slot * 2);
        assert_eq!(sent, rest);
        assert_eq!(channels.close(slot).is_some(), v5);
    }
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let within = |part: &[u8]| {
            let end = msg.as_ptr_range().end;
            !part.is_empty() && part.as_ptr_range().end == end && part.len() < msg.len()
        };
        match channels.receive(msg) {
            Ok(Incoming::Data { slot, data }) => {
                assert!(slot < n && within(data));
                assert_eq!(usize::from(msg[0]), slot * 2);
            }
            Ok(Incoming::Error { slot, message }) => {
                assert!(slot < n && within(message));
                assert_eq!(usize::from(msg[0]), slot * 2 + 1);
            }
            Ok(Incoming::Closed { slot }) => {
                assert!(v5 && slot < n);
                assert_eq!(msg, [CLOSE_SIGNAL, channel_byte(slot * 2)]);
            }
            Ok(Incoming::Nothing) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(ch: u8, port: u16) -> Vec<u8> {
        let mut v = vec![ch];
        v.extend_from_slice(&port.to_le_bytes());
        v
    }

    #[test]
    fn prefixes_then_data_and_errors() {
        let mut c = Channels::new(&[80, 80], false);
        assert_eq!(c.receive(&prefix(0, 80)), Ok(Incoming::Nothing));
        assert_eq!(c.receive(&prefix(1, 80)), Ok(Incoming::Nothing));
        assert_eq!(
            c.receive(&[0, b'h', b'i']),
            Ok(Incoming::Data {
                slot: 0,
                data: b"hi"
            })
        );
        assert_eq!(
            c.receive(&[1, b'x']),
            Ok(Incoming::Error {
                slot: 0,
                message: b"x"
            })
        );
        // Slot 1's data channel has not sent its prefix yet.
        assert_eq!(
            c.receive(&[2, 1]),
            Err(ProtocolError::ShortPrefix { channel: 2 })
        );
        let mut c = Channels::new(&[80, 80], false);
        assert_eq!(
            c.receive(&prefix(2, 81)),
            Err(ProtocolError::WrongPort {
                channel: 2,
                got: 81,
                expected: 80
            })
        );
        assert_eq!(c.receive(&[4, 0, 0]), Err(ProtocolError::UnknownChannel(4)));
        assert_eq!(c.receive(&[]), Ok(Incoming::Nothing));
        // A prefix with data after it in the same message is accepted.
        let mut m = prefix(0, 80);
        m.extend_from_slice(b"ok");
        assert_eq!(
            c.receive(&m),
            Ok(Incoming::Data {
                slot: 0,
                data: b"ok"
            })
        );
    }

    #[test]
    fn close_signals_only_on_v5() {
        let v4 = Channels::new(&[80], false);
        assert_eq!(v4.close(0), None);
        assert_eq!(v4.data(0, b"a"), vec![0, b'a']);
        let mut v5 = Channels::new(&[80, 443], true);
        assert_eq!(v5.close(1), Some(vec![255, 2]));
        assert_eq!(v5.receive(&[255, 2]), Ok(Incoming::Closed { slot: 1 }));
        assert_eq!(v5.receive(&[255, 3]), Ok(Incoming::Nothing));
        assert_eq!(v5.receive(&[255]), Err(ProtocolError::BadCloseSignal));
        assert_eq!(v5.receive(&[255, 9]), Err(ProtocolError::UnknownChannel(9)));
        // On v4, 255 is just an unknown channel.
        let mut v4 = Channels::new(&[80], false);
        assert!(v4.receive(&[255, 0]).is_err());
    }

    #[test]
    fn fuzz_entry_samples() {
        fuzz_entry(&[]);
        fuzz_entry(&[0x80, 7, 0, 3, 0, 7, 0, 2, 255, 0, 4, 0, b'a', b'b', b'c']);
        fuzz_entry(&[0x01, 80, 0, 80, 0, 3, 2, 80, 0, 2, 2, b'x', 9]);
    }

    #[test]
    fn query() {
        assert_eq!(ports_query(80, 3), "80,80,80");
        assert_eq!(ports_query(80, 0), "80");
    }
}

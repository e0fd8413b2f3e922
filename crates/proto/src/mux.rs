//! The carrier multiplexer's wire format, sans-IO.
//!
//! A carrier (one TLS connection, or one port-forward through the API server) carries many
//! streams: the control stream and one per flow. The client starts the carrier with the
//! 8-byte [`PREFACE`]; after it both directions carry *mux frames*:
//!
//! ```text
//! +--------+--------+----------------+----------------+-----------------+
//! | kind 1 | flags 1| stream id 4 BE | length 4 BE    | payload (DATA)  |
//! +--------+--------+----------------+----------------+-----------------+
//! ```
//!
//! * [`MuxKind::Data`]: `length` payload bytes for the stream. Flags: [`SYN`] on the first
//!   frame of a stream the sender opened, [`FIN`] when the sender will write no more,
//!   [`RST`] when it abandons the stream (the receiver drops it after delivering what
//!   came before).
//! * [`MuxKind::Window`]: the receiver grants the sender `length` more bytes of payload
//!   on the stream. Every stream starts with [`INITIAL_WINDOW`] in each direction; a
//!   sender never has more unacknowledged payload in flight than it was granted, so a
//!   slow reader costs at most its window of memory. No flags.
//!
//! Stream ids are never 0; the client's are odd, the agent's even. A side allocates ids in
//! increasing order but sends a stream's SYN with its first write, so SYNs may arrive out of
//! order; an id is not reused while the stream is open. Lengths are checked before any payload is buffered ([`MAX_PAYLOAD`]).
//!
//! Compatibility: the preface names the multiplexer's version (`1`). A peer that receives a
//! preface it does not know closes the carrier; versions of everything above it are
//! negotiated by the control stream's hello (see the crate docs).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// First bytes a client sends on a new carrier.
pub const PREFACE: [u8; 8] = *b"KLMUX/1\n";
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 10;
/// Largest payload of one DATA frame.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Receive window every stream starts with, in each direction.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Largest window a receiver grants one stream (a sender rejects more as a protocol error).
pub const MAX_WINDOW: u32 = 16 * 1024 * 1024;

/// First frame of a stream the sender opened.
pub const SYN: u8 = 0x01;
/// The sender will write no more on this stream.
pub const FIN: u8 = 0x02;
/// The sender abandons the stream.
pub const RST: u8 = 0x04;
const ALL_FLAGS: u8 = SYN | FIN | RST;

/// Payloads up to this size are copied out of the read buffer; bigger ones share it. A
/// few bytes held by an idle stream must not pin a whole read buffer.
const COPY_BELOW: usize = 4 * 1024;

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuxKind {
    /// Stream payload (and stream open/close flags).
    Data = 0,
    /// Flow-control credit for a stream.
    Window = 1,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxFrame {
    /// Payload for a stream, with [`SYN`]/[`FIN`]/[`RST`] flags.
    Data {
        /// Stream id (never 0).
        stream: u32,
        /// Flag bits.
        flags: u8,
        /// Payload (may be empty for a bare SYN/FIN/RST).
        payload: Bytes,
    },
    /// More send credit for a stream.
    Window {
        /// Stream id (never 0).
        stream: u32,
        /// Bytes granted.
        increment: u32,
    },
}

/// Why a byte sequence is not a valid mux frame. Any of these ends the carrier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// The carrier did not start with [`PREFACE`].
    #[error(
        "the carrier did not start with the kubelan multiplexer preface (a kubelan older than \
         this one, or not kubelan at all)"
    )]
    Preface,
    /// Unknown frame kind.
    #[error("unknown multiplexer frame kind {0:#04x}")]
    Kind(u8),
    /// Flag bits this version does not define, or flags on a WINDOW frame.
    #[error("invalid multiplexer flags {flags:#04x} on a {kind:?} frame")]
    Flags {
        /// Frame kind.
        kind: MuxKind,
        /// The flags seen.
        flags: u8,
    },
    /// Stream id 0.
    #[error("multiplexer frame for stream 0")]
    ZeroStream,
    /// Payload longer than [`MAX_PAYLOAD`].
    #[error("multiplexer frame of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLong(u32),
}

/// Writes one frame header.
pub fn put_header(out: &mut BytesMut, kind: MuxKind, flags: u8, stream: u32, len: u32) {
    out.reserve(HEADER_LEN);
    out.put_u8(kind as u8);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_u32(len);
}

impl MuxFrame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            MuxFrame::Data {
                stream,
                flags,
                payload,
            } => {
                put_header(out, MuxKind::Data, *flags, *stream, payload.len() as u32);
                out.extend_from_slice(payload);
            }
            MuxFrame::Window { stream, increment } => {
                put_header(out, MuxKind::Window, 0, *stream, *increment);
            }
        }
    }
}

/// Takes the preface off the front of `buf`: `Ok(true)` once it was there, `Ok(false)` while
/// fewer than 8 bytes have arrived.
///
/// # Errors
///
/// [`MuxError::Preface`] when the first bytes differ.
pub fn take_preface(buf: &mut BytesMut) -> Result<bool, MuxError> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Err(MuxError::Preface);
    }
    if n < PREFACE.len() {
        return Ok(false);
    }
    buf.advance(PREFACE.len());
    Ok(true)
}

/// Decodes the next frame from the front of `buf`, or `Ok(None)` when it is not complete
/// yet. The header is validated as soon as it is complete, so a bad length is refused
/// before its payload is waited for.
///
/// # Errors
///
/// A [`MuxError`]; the carrier must be closed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<MuxFrame>, MuxError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = match buf[0] {
        0 => MuxKind::Data,
        1 => MuxKind::Window,
        k => return Err(MuxError::Kind(k)),
    };
    let flags = buf[1];
    let stream = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
    let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
    if stream == 0 {
        return Err(MuxError::ZeroStream);
    }
    match kind {
        MuxKind::Window => {
            if flags != 0 {
                return Err(MuxError::Flags { kind, flags });
            }
            buf.advance(HEADER_LEN);
            Ok(Some(MuxFrame::Window {
                stream,
                increment: len,
            }))
        }
        MuxKind::Data => {
            if flags & !ALL_FLAGS != 0 {
                return Err(MuxError::Flags { kind, flags });
            }
            if len as usize > MAX_PAYLOAD {
                return Err(MuxError::TooLong(len));
            }
            let len = len as usize;
            if buf.len() < HEADER_LEN + len {
                buf.reserve(HEADER_LEN + len - buf.len());
                return Ok(None);
            }
            buf.advance(HEADER_LEN);
            let payload = if len <= COPY_BELOW {
                let p = Bytes::copy_from_slice(&buf[..len]);
                buf.advance(len);
                p
            } else {
                buf.split_to(len).freeze()
            };
            Ok(Some(MuxFrame::Data {
                stream,
                flags,
                payload,
            }))
        }
    }
}

/// Fuzzing entry point: a carrier's bytes (preface first) decoded whole and in small
/// pieces must give the same frames, and each frame must survive a round trip.
#[cfg(any(fuzzing, feature = "fuzz"))]
pub fn fuzz_entry(data: &[u8]) {
    crate::fuzz_entry::stable_and_round_trips(data, 5, decode_all, |frame: &MuxFrame| {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let again = decode(&mut buf).expect("re-encoded frame decodes");
        (again, buf.len())
    });
}

#[cfg(any(fuzzing, test, feature = "fuzz"))]
fn decode_all(data: &[u8], chunk: usize) -> (Vec<MuxFrame>, Option<MuxError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut preface = false;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        if !preface {
            match take_preface(&mut buf) {
                Ok(true) => preface = true,
                Ok(false) => continue,
                Err(e) => return (out, Some(e)),
            }
        }
        loop {
            match decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(stream: u32, flags: u8, payload: &[u8]) -> MuxFrame {
        MuxFrame::Data {
            stream,
            flags,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn frames_round_trip_and_wait_for_their_payload() {
        let frames = [
            data(1, SYN, b"open"),
            data(1, 0, &vec![7u8; 70_000]),
            MuxFrame::Window {
                stream: 1,
                increment: 131_072,
            },
            data(3, SYN | FIN, b""),
            data(1, RST, b""),
        ];
        let mut wire = BytesMut::from(&PREFACE[..]);
        for f in &frames {
            f.encode(&mut wire);
        }
        let (got, err) = decode_all(&wire, 3);
        assert_eq!(err, None);
        assert_eq!(got, frames);
        let mut partial = BytesMut::new();
        frames[1].encode(&mut partial);
        partial.truncate(HEADER_LEN + 100);
        assert_eq!(decode(&mut partial), Ok(None));
        assert_eq!(partial.len(), HEADER_LEN + 100, "nothing consumed early");
    }

    #[test]
    fn bad_headers_are_refused_before_their_payload() {
        let mut b = BytesMut::new();
        put_header(&mut b, MuxKind::Data, 0, 1, (MAX_PAYLOAD + 1) as u32);
        assert_eq!(
            decode(&mut b),
            Err(MuxError::TooLong(MAX_PAYLOAD as u32 + 1))
        );
        let mut b = BytesMut::new();
        put_header(&mut b, MuxKind::Data, 0, 0, 0);
        assert_eq!(decode(&mut b), Err(MuxError::ZeroStream));
        let mut b = BytesMut::new();
        put_header(&mut b, MuxKind::Window, SYN, 1, 5);
        assert!(matches!(decode(&mut b), Err(MuxError::Flags { .. })));
        let mut b = BytesMut::new();
        put_header(&mut b, MuxKind::Data, 0x80, 1, 0);
        assert!(matches!(decode(&mut b), Err(MuxError::Flags { .. })));
        let mut b = BytesMut::from(&[9u8; HEADER_LEN][..]);
        assert_eq!(decode(&mut b), Err(MuxError::Kind(9)));
    }

    #[test]
    fn preface_is_checked_as_it_arrives() {
        let mut b = BytesMut::from(&b"KLM"[..]);
        assert_eq!(take_preface(&mut b), Ok(false));
        b.extend_from_slice(b"UX/1\nrest");
        assert_eq!(take_preface(&mut b), Ok(true));
        assert_eq!(&b[..], b"rest");
        // A yamux client starts with version byte 0.
        let mut b = BytesMut::from(&[0u8, 0, 0, 1][..]);
        assert_eq!(take_preface(&mut b), Err(MuxError::Preface));
    }
}

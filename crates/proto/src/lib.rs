//! kubelan's session protocol, sans-IO.
//!
//! The client (`kubelan proxy`, `connect`, `gateway`) and the in-cluster agent talk over a
//! *carrier* (an API-server port-forward or a direct mutual-TLS connection) multiplexed into
//! streams. This crate only turns frames into bytes and back and decides version
//! negotiation; it owns no sockets, clocks or tasks, so every rule here is tested without a
//! network and fuzzed (`fuzz/fuzz_targets/proto_frames.rs`).
//!
//! # Streams
//!
//! * The **control stream** is the first stream the client opens. The client sends
//!   [`Frame::Hello`]; the agent answers [`Frame::Welcome`] (with [`Facts`] about the
//!   cluster) or [`Frame::Refused`] and closes. Afterwards either side may send
//!   [`Frame::Ping`] (answered by [`Frame::Pong`] with the same nonce), the agent may send
//!   new [`Frame::Facts`] and, before it stops, [`Frame::GoAway`].
//! * Every **flow** gets its own stream. The client sends [`Frame::Open`] naming a
//!   [`FlowKind`] and a [`Target`]; the agent answers [`Frame::Opened`] or
//!   [`Frame::Failed`] with a typed [`ErrorKind`]. A TCP flow then carries
//!   [`Frame::Data`] both ways, [`Frame::Fin`] for a clean half-close and [`Frame::Reset`]
//!   for an abort; UDP and DNS flows carry one datagram per [`Frame::Datagram`].
//! * **Reverse flows** go the other way: with [`Capabilities::REVERSE`] negotiated, the
//!   agent side (the per-session relay of `kubelan expose`, which plays the agent's part on
//!   its carriers) opens a stream (the multiplexer's even stream ids) whose first frame is
//!   [`Frame::Incoming`] — which of its listeners a connection arrived at, the flow kind,
//!   the connecting pod's address. The client maps the listener to a local target, dials
//!   it and answers [`Frame::Opened`] or [`Frame::Failed`]; then the flow carries what an
//!   `Open` flow of that kind carries. A client that does not serve reverse flows resets
//!   such streams at once. A relay may check the secret in [`Frame::Hello`]'s `token` and
//!   refuse with [`RefuseReason::Auth`].
//!
//! # Wire format
//!
//! Streams are carried by the multiplexer of [`mux`] (its own wire format and preface).
//! Inside a stream, every frame is a 4-byte header — frame type (1 byte) and body length (3 bytes, big
//! endian) — and the body. Lengths are checked against a per-type limit *before* any body
//! is buffered, so a peer cannot make the decoder hold more than [`MAX_DATA`] bytes plus a
//! header per stream. Integers are big endian; strings are UTF-8 with a 2-byte length.
//!
//! # Compatibility rules
//!
//! The agent and the client are released separately, so:
//!
//! 0. Beneath the frames, the carrier starts with the multiplexer's preface
//!    ([`mux::PREFACE`], which names its version). A side that receives a preface it does not
//!    know closes the carrier; the client then tells the user to upgrade the agent.
//! 1. The frame header (type + 24-bit length) never changes in any version.
//! 2. [`Frame::Hello`] carries the range of versions the client speaks; the agent picks
//!    the highest version both speak and names it in [`Frame::Welcome`]. With no common
//!    version the agent sends [`Frame::Refused`] with [`RefuseReason::Version`] and both
//!    ranges, and the client tells the user which side to upgrade ([`negotiate`]).
//! 3. Within a version, bodies only grow at the end: new fields are appended, decoders
//!    ignore trailing bytes they do not know. A field is never removed or reordered.
//! 4. A new frame type is sent only when the negotiated version (or a capability bit in
//!    [`Capabilities`] both sides set) says the peer understands it. Frame types
//!    `0x80..=0xFF` are *optional*: a receiver that does not know one skips it. An
//!    unknown type below `0x80` is a protocol error.
//! 5. Unknown [`ErrorKind`] codes decode as [`ErrorKind::Other`]; unknown [`FlowKind`]s
//!    are refused with [`ErrorKind::Protocol`], never dropped silently.
//! 6. Version 1 is this document. Each later version lists its additions here.
//!    Additions inside version 1, behind capability bits: [`FlowKind::Echo`]
//!    ([`Capabilities::ECHO`]); [`Frame::Incoming`] and agent-opened flow streams
//!    ([`Capabilities::REVERSE`], frame type `0x17`); [`Frame::Listen`],
//!    [`Frame::Listening`] and [`Frame::ListenFailed`] on the control stream
//!    ([`Capabilities::LISTEN`], frame types `0x18`–`0x1A`: a client sends `Listen` only
//!    when the `Welcome` has the bit, so an older relay never sees one; a client that needs
//!    listeners on request and meets a relay without the bit fails as rule 7 says).
//!    Appended fields inside version 1:
//!    the flags byte of [`Frame::Open`] ([`Frame::Open::optimistic`]); the `token` string
//!    at the end of [`Frame::Hello`] (present only when set).
//! 7. A peer may require capabilities (a client of the per-session relay needs
//!    [`Capabilities::REVERSE`]). When the [`Frame::Welcome`] lacks one, the client ends
//!    the session with one sentence naming both sides' software and protocol versions
//!    and the missing features, never a retry loop.

mod frame;
pub mod mux;
mod types;
mod version;

pub use frame::{
    Capabilities, Cidr, DATA_HEADER_LEN, DecodeError, Decoder, Facts, FlowKind, Frame, MAGIC,
    MAX_CONTROL_BODY, MAX_DATA, MAX_DATAGRAM, RefuseReason, data_header, encode_data_header,
};
pub use types::{
    ErrorKind, FlowError, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_TOKEN_LEN, Target, Token,
};
pub use version::{PROTOCOL_VERSION, Refusal, VersionRange, negotiate};

/// Fuzzing entry point: decodes arbitrary bytes as a frame sequence and checks that every
/// decoded frame re-encodes to bytes that decode to the same frame.
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry {
    use bytes::BytesMut;

    use crate::{Decoder, Frame};

    pub use crate::mux::fuzz_entry as mux_frames;

    /// Decodes `data` (fed whole and in small chunks); never panics for any input.
    pub fn frames(data: &[u8]) {
        stable_and_round_trips(data, 7, decode_all, |frame: &Frame| {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            let again = Decoder::new()
                .decode(&mut buf)
                .expect("re-encoded frame decodes");
            (again, buf.len())
        });
    }

    /// The checks every frame decoder's fuzz target makes: decoding `data` whole and in
    /// `chunk`-byte pieces gives the same frames (and the same stop), and each frame
    /// re-encodes to bytes that decode to it with nothing left over (`reencode` returns
    /// the decoded frame and the bytes left).
    pub(crate) fn stable_and_round_trips<F, E>(
        data: &[u8],
        chunk: usize,
        decode_all: impl Fn(&[u8], usize) -> (Vec<F>, E),
        reencode: impl Fn(&F) -> (Option<F>, usize),
    ) where
        F: PartialEq + std::fmt::Debug,
        E: PartialEq + std::fmt::Debug,
    {
        let whole = decode_all(data, data.len().max(1));
        let chunked = decode_all(data, chunk);
        assert_eq!(whole, chunked, "chunking changed the decoded frames");
        for frame in whole.0 {
            let (again, left) = reencode(&frame);
            assert_eq!(again.as_ref(), Some(&frame), "round trip changed the frame");
            assert_eq!(left, 0, "re-encoded frame left bytes behind");
        }
    }

    fn decode_all(data: &[u8], chunk: usize) -> (Vec<Frame>, bool) {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(_) => return (out, true),
                }
            }
        }
        (out, false)
    }
}

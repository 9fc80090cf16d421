//! WebSocket (RFC 6455) as a carrier of imgate frames, sans-IO: the
//! opening handshake (the server's answer and the client's request) and
//! the frame layer, for a gateway listener and for clients such as the
//! load generator.
//!
//! Browsers cannot open a raw TCP socket; over WebSocket the same frames
//! travel in binary messages. This module only turns bytes into
//! WebSocket frames and back; what a frame means to a connection (a ping
//! answered, a text message refused, a close echoed) is the caller's.
//!
//! Why by hand, with `httparse`, `sha1` and `base64` for the parts that are
//! not the product's: the gateway reads a socket into a shared block and
//! splits frames off it as `Bytes` without copying, and writes queued
//! `Bytes` with one `sendmsg`. WebSocket crates own the socket (tungstenite
//! wraps a `Read + Write` stream and copies each payload into its own
//! buffer), which would add a copy and a buffer per connection. Here a
//! client's payload is unmasked in place, in the buffer it was read into,
//! and split off: the one pass over the bytes the mask demands, no copy.
//! A server frame is a header of 2 to 10 bytes in front of the payload, so
//! the writer sends the header and the queued frames as separate slices.

mod frame;
mod handshake;

pub use self::{
    frame::{
        CloseCode, Decoder, Frame, Opcode, WsError, close_payload, encode, header, mask_in_place,
    },
    handshake::{
        ClientHandshakeError, Handshake, Refusal, accept, accept_key, client_request,
        client_response,
    },
};

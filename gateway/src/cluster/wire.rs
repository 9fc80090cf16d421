//! What nodes tell each other on a user's push subject (core NATS: no
//! disk, no acknowledgement). Nothing here is needed for correctness: a
//! lost push is found in the log by the device's next sync or by the
//! receiving node's gap fill, and a lost kick leaves a connection that the
//! next login of its device kicks again.
//!
//! ```text
//!  push:  1u8 | seq u64 | stream_seq u64 | origin node u64 | origin conn u64 | msg:N frame
//!  kick:  2u8 | reason u8 | device u32 | all devices u8 | except node u64 | except conn u64
//! ```
//!
//! Big-endian; `origin conn` is the sending connection (0 = none), which
//! its own node leaves out of a push of the sender's own copy.

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::KickReason;

const PUSH: u8 = 1;
const KICK: u8 = 2;
const PUSH_FIXED: usize = 1 + 8 * 4;
const KICK_LEN: usize = 1 + 1 + 4 + 1 + 8 + 8;

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMsg {
    /// A message stored in a user's inbox.
    Push {
        /// Its sequence id in the inbox.
        seq: u64,
        /// Its sequence in the partition's stream (a hint for reads).
        stream_seq: u64,
        /// The node that stored it.
        origin_node: u64,
        /// The connection that sent it, on `origin_node` (0 = none).
        origin_conn: u64,
        /// The encoded msg:N frame.
        frame: Bytes,
    },
    /// Kick a user's connections.
    Kick {
        /// Why.
        reason: KickReason,
        /// Only this device's, if set.
        device: Option<u32>,
        /// Except this node's connection (the login that replaced them).
        except_node: u64,
        /// The connection on `except_node` (0 = none).
        except_conn: u64,
    },
}

impl NodeMsg {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        match self {
            NodeMsg::Push {
                seq,
                stream_seq,
                origin_node,
                origin_conn,
                frame,
            } => {
                let mut b = BytesMut::with_capacity(PUSH_FIXED + frame.len());
                b.put_u8(PUSH);
                b.put_u64(*seq);
                b.put_u64(*stream_seq);
                b.put_u64(*origin_node);
                b.put_u64(*origin_conn);
                b.put_slice(frame);
                b.freeze()
            }
            NodeMsg::Kick {
                reason,
                device,
                except_node,
                except_conn,
            } => {
                let mut b = BytesMut::with_capacity(KICK_LEN);
                b.put_u8(KICK);
                b.put_u8(reason.to_wire());
                b.put_u32(device.unwrap_or(0));
                b.put_u8(u8::from(device.is_none()));
                b.put_u64(*except_node);
                b.put_u64(*except_conn);
                b.freeze()
            }
        }
    }

    /// Reads a message; None for anything malformed (from a node of
    /// another version, or not a node at all).
    pub fn decode(b: &Bytes) -> Option<NodeMsg> {
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
        };
        match *b.first()? {
            PUSH if b.len() > PUSH_FIXED => Some(NodeMsg::Push {
                seq: u64_at(1)?,
                stream_seq: u64_at(9)?,
                origin_node: u64_at(17)?,
                origin_conn: u64_at(25)?,
                frame: b.slice(PUSH_FIXED..),
            }),
            KICK if b.len() == KICK_LEN => {
                let device = b
                    .get(2..6)
                    .and_then(|s| s.try_into().ok())
                    .map(u32::from_be_bytes)?;
                let all = *b.get(6)? != 0;
                Some(NodeMsg::Kick {
                    reason: KickReason::from_wire(*b.get(1)?),
                    device: (!all).then_some(device),
                    except_node: u64_at(7)?,
                    except_conn: u64_at(15)?,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let msgs = [
            NodeMsg::Push {
                seq: 5,
                stream_seq: 900,
                origin_node: 7,
                origin_conn: 1 << 48,
                frame: Bytes::from_static(b"frame"),
            },
            NodeMsg::Kick {
                reason: KickReason::Replaced,
                device: Some(3),
                except_node: 7,
                except_conn: 9,
            },
            NodeMsg::Kick {
                reason: KickReason::Admin,
                device: None,
                except_node: 0,
                except_conn: 0,
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(NodeMsg::decode(&b), Some(m.clone()));
            // A push's frame is opaque here: only its fixed part can be cut.
            for cut in 0..b.len().min(PUSH_FIXED + 1) {
                if let Some(d) = NodeMsg::decode(&b.slice(..cut)) {
                    panic!("a cut message decoded: {d:?}");
                }
            }
        }
        assert_eq!(NodeMsg::decode(&Bytes::from_static(b"\x09abc")), None);
    }
}

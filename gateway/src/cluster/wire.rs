//! What nodes tell each other on a user's or a group's push subject (core
//! NATS: no disk, no acknowledgement). Nothing here is needed for
//! correctness: a lost push is found in the log by the device's next sync
//! or by the receiving node's gap fill, a lost kick leaves a connection
//! that the next login of its device kicks again, a lost receipt is sent
//! again at the sender's next login, and a lost membership notice is
//! repaired by the next login of the user.
//!
//! ```text
//!  push:    1u8 | seq u64 | stream_seq u64 | from u64 | origin node u64 | origin conn u64 | msg:N frame
//!  kick:    2u8 | reason u8 | device u32 | all devices u8 | except node u64 | except conn u64
//!  notice:  3u8 | origin node u64 | origin conn u64 | frame      (a receipt for the user's devices)
//!  joined:  4u8 | group u64                                       (the user joined a group)
//!  members: 5u8                                                   (the group's members changed)
//!  who:     6u8 | device u32 | all devices u8                     (a request: which sessions do you hold?)
//! ```
//!
//! A node answers `who` on the request's reply subject with one line of
//! JSON per session it holds (`{"node":..,"device":..,"core":..}`).
//!
//! Big-endian; `origin conn` is the sending connection (0 = none), which
//! its own node leaves out.

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::KickReason;

const PUSH: u8 = 1;
const KICK: u8 = 2;
const NOTICE: u8 = 3;
const JOINED: u8 = 4;
const MEMBERS: u8 = 5;
const WHO: u8 = 6;
const PUSH_FIXED: usize = 1 + 8 * 5;
const NOTICE_FIXED: usize = 1 + 8 * 2;
const KICK_LEN: usize = 1 + 1 + 4 + 1 + 8 + 8;

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMsg {
    /// A message stored in a user's inbox or a group's log.
    Push {
        /// Its sequence id in the inbox or the group.
        seq: u64,
        /// Its sequence in the partition's stream (a hint for reads).
        stream_seq: u64,
        /// Its sender.
        from: u64,
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
    /// A frame for every connection of the user (a receipt).
    Notice {
        /// The node of the connection left out.
        origin_node: u64,
        /// The connection left out (0 = none).
        origin_conn: u64,
        /// The encoded frame.
        frame: Bytes,
    },
    /// The user was added to a group.
    Joined {
        /// The group.
        group: u64,
    },
    /// The group's members changed: read them again.
    Members,
    /// Which of the user's sessions (of this device, if set) a node holds.
    Who {
        /// Only this device's, if set.
        device: Option<u32>,
    },
}

impl NodeMsg {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        match self {
            NodeMsg::Push {
                seq,
                stream_seq,
                from,
                origin_node,
                origin_conn,
                frame,
            } => {
                let mut b = BytesMut::with_capacity(PUSH_FIXED + frame.len());
                b.put_u8(PUSH);
                b.put_u64(*seq);
                b.put_u64(*stream_seq);
                b.put_u64(*from);
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
            NodeMsg::Notice {
                origin_node,
                origin_conn,
                frame,
            } => {
                let mut b = BytesMut::with_capacity(NOTICE_FIXED + frame.len());
                b.put_u8(NOTICE);
                b.put_u64(*origin_node);
                b.put_u64(*origin_conn);
                b.put_slice(frame);
                b.freeze()
            }
            NodeMsg::Joined { group } => {
                let mut b = BytesMut::with_capacity(9);
                b.put_u8(JOINED);
                b.put_u64(*group);
                b.freeze()
            }
            NodeMsg::Members => Bytes::from_static(&[MEMBERS]),
            NodeMsg::Who { device } => {
                let mut b = BytesMut::with_capacity(6);
                b.put_u8(WHO);
                b.put_u32(device.unwrap_or(0));
                b.put_u8(u8::from(device.is_none()));
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
                from: u64_at(17)?,
                origin_node: u64_at(25)?,
                origin_conn: u64_at(33)?,
                frame: b.slice(PUSH_FIXED..),
            }),
            NOTICE if b.len() > NOTICE_FIXED => Some(NodeMsg::Notice {
                origin_node: u64_at(1)?,
                origin_conn: u64_at(9)?,
                frame: b.slice(NOTICE_FIXED..),
            }),
            JOINED if b.len() == 9 => Some(NodeMsg::Joined { group: u64_at(1)? }),
            MEMBERS if b.len() == 1 => Some(NodeMsg::Members),
            WHO if b.len() == 6 => {
                let device = b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .map(u32::from_be_bytes)?;
                let all = *b.get(5)? != 0;
                Some(NodeMsg::Who {
                    device: (!all).then_some(device),
                })
            }
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
                from: 11,
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
            NodeMsg::Notice {
                origin_node: 7,
                origin_conn: 9,
                frame: Bytes::from_static(b"receipt"),
            },
            NodeMsg::Joined { group: 77 },
            NodeMsg::Members,
            NodeMsg::Who { device: Some(4) },
            NodeMsg::Who { device: None },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(NodeMsg::decode(&b), Some(m.clone()));
            // A frame is opaque here: only the fixed part can be cut.
            let fixed = match m {
                NodeMsg::Push { .. } => PUSH_FIXED + 1,
                NodeMsg::Notice { .. } => NOTICE_FIXED + 1,
                _ => b.len(),
            };
            for cut in 0..fixed {
                if let Some(d) = NodeMsg::decode(&b.slice(..cut)) {
                    panic!("a cut message decoded: {d:?}");
                }
            }
        }
        assert_eq!(NodeMsg::decode(&Bytes::from_static(b"\x09abc")), None);
    }
}

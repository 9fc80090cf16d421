/**
 * imgate.js: a client for the imgate wire protocol, version 1, over
 * WebSocket. One ES module, no dependencies; it runs in browsers and in
 * Node 20 or later (whose WebSocket needs `--experimental-websocket` on 20
 * and 21). The protocol is specified in docs/protocol.md; section numbers
 * below refer to it.
 *
 * ```js
 * import { Client } from "./imgate.js";
 * const c = new Client({ url: "ws://host:port/ws", user: 1n, device: 1, token });
 * c.on("message", (m) => console.log(m.from, m.seq, m.text));
 * c.on("sent", (s) => console.log("stored", s.msgId, s.seq));
 * await c.connect();                   // resolves once online
 * const id = c.send(2n, "hello");      // msg id, a BigInt
 * ```
 *
 * What it guarantees, for as long as the Client object lives:
 *
 * - Every message of a stream (the user's inbox, or a group's log) reaches
 *   the `message` event exactly once and in seq order. Pushes are
 *   de-duplicated by seq against a contiguous mark per stream; a message
 *   above a gap is held, and a gap still open after `gapTimeoutMs` is filled
 *   with a paged pull (section 5.8). Messages this device sent count as
 *   received from their msg:A (own_seq, or the group seq) and are not
 *   delivered back to it.
 * - What was received is acknowledged with one cumulative ack:R per stream
 *   at its contiguous mark, after `ackEvery` messages or `ackDelayMs`
 *   (`groupAckDelayMs` for groups), and again when the server re-pushes a
 *   message already held (section 5.7). During a pull, the next sync:R
 *   acknowledges the previous page instead (section 5.9).
 * - A sent message stays pending until its msg:A. It is retransmitted with
 *   the same msg id and the RETRY flag every `rtoMs` (times `rtoBackoff` per
 *   retry, at most `maxRtoMs`), up to `maxRetries` times, and resent after
 *   every reconnection. It fails (`failed` event) when the retries run out,
 *   when the server refuses it for good (forbidden, not_found,
 *   invalid_request, msg_id_reused, or an unknown code), or when it is
 *   older than `dedupWindowMs`, past which the server might store a resend
 *   twice. `overloaded`, `rate_limited` and `internal` are retried.
 * - After login:ok the client pulls the inbox from its mark when the
 *   server's head is above it, asks for the unread summary and pulls every
 *   group that has news; the state becomes `online` when all of that is done.
 * - It pings when it has sent nothing for the heartbeat interval of
 *   login:ok, answers the server's pings, and takes a connection from which
 *   nothing arrived for `deadAfter` intervals as dead. It paces its frames to
 *   the frame-rate limit of login:ok (every frame counts).
 * - Delivered (ack:N) and read (read:N) receipts are mapped to sent messages
 *   through the receiver-side seq of their msg:A; a receipt that arrives
 *   before that msg:A (possible after a reconnection) is kept per peer and
 *   applied when it comes (section 5.4). A read receipt implies delivery:
 *   `delivered` is always emitted before `read` for a message.
 * - It reconnects with exponential backoff and jitter after the transport
 *   fails, except after kick(replaced), kick(admin), kick(revoked),
 *   device_revoked, unsupported_version,
 *   and bad_token or token_expired with a fixed token (give `token` as a
 *   function to fetch a fresh one per connection). A protocol_error kick
 *   waits at least 30 s. The login resumes from the inbox's contiguous mark,
 *   so the stream carries on without loss or duplicates.
 *
 * What it does not do: persist anything. A page reload is a fresh device
 * (`inboxMark` 0) that pulls what the server still stores. An application
 * that persists its messages can persist `marks()` and `nextMsgId` with them
 * and pass them back (`inboxMark`, `groupMarks`, `firstMsgId`).
 *
 * Numbers: every u64 of the protocol (user, group, seq, msg id, request id)
 * is a BigInt in events and return values; arguments accept a BigInt, a
 * safe integer Number or a decimal string. Times are Numbers of milliseconds
 * (`time`: server clock, ms since the Unix epoch), and so are the u32 values
 * (device, limits).
 *
 * Events (`client.on(type, fn)` calls fn with the detail and returns a
 * function that removes it; `addEventListener` gets a CustomEvent whose
 * `detail` is the same object):
 *
 * | event | detail |
 * |---|---|
 * | `state` | `{ state, previous }`: `idle`, `connecting`, `syncing`, `online`, `offline` (waiting to reconnect), `closed` |
 * | `login` | login:ok's fields: `{ user, device, session, heartbeatMs, serverTime, inboxHead, maxFrame, frameRate, frameBurst, rateStrikes }` |
 * | `message` | `{ group, seq, from, to, msgId, time, body, text, own, pulled }`; `body` a Uint8Array, `text` its UTF-8 decoding, `own` true for the user's own copies (sent from another device, or before) |
 * | `sent` | msg:A: `{ msgId, group, to, seq, ownSeq, time }` |
 * | `delivered` | `{ msgId, peer, seq }`: the receiver acknowledged it (ack:N, or a read:N) |
 * | `read` | `{ msgId, peer, seq }`: the receiver marked it read (read:N) |
 * | `readelsewhere` | `{ group, peer, seq }`: another device of this user marked a conversation read |
 * | `failed` | `{ msgId, group, to, reason, code, name }`: reason `rejected` (with the error code), `timeout` or `expired` |
 * | `syncdone` | `{ group }`: a pull of that stream ended |
 * | `unread` | `{ entries: [{ group, peer, unread, lastSeq }], partial }` |
 * | `group`, `receipts` | the answers of group:R and receipts:R (also the resolved values of their promises) |
 * | `pong` | `{ nonce, rttMs }` |
 * | `error` | every error frame: `{ code, name, refKind, refKindName, refId, text, closes }` |
 * | `kick` | `{ reason, name, text }` |
 * | `disconnect` | `{ why, reconnectMs }`: the connection ended; `reconnectMs` null when the client stops |
 */

// ---- wire constants ------------------------------------------------------

const VERSION = 1;
const HEADER_LEN = 8;
const DEFAULT_MAX_FRAME = 65536;
/** Bytes a body needs besides itself in a one-entry sync page (section 3.4). */
const BODY_OVERHEAD = 78;
const MAX_TOKEN = 1024;
const MAX_TEXT = 1024;
const FLAG_RETRY = 0x0001;
const FLAG_NO_PUSH = 0x0004;
const FLAG_PARTIAL = 0x0002;
const U64_MAX = (1n << 64n) - 1n;

/** Frame kinds (section 3.1). */
export const Kind = Object.freeze({
  LOGIN: 0x01, LOGIN_OK: 0x02, PING: 0x03, PONG: 0x04, KICK: 0x05, ERROR: 0x06, LOGOUT: 0x07,
  MSG_R: 0x10, MSG_A: 0x11, MSG_N: 0x12, ACK_R: 0x13, ACK_A: 0x14, ACK_N: 0x15,
  READ_R: 0x16, READ_A: 0x17, READ_N: 0x18,
  SYNC_R: 0x20, SYNC_PAGE: 0x21, UNREAD_R: 0x22, UNREAD_A: 0x23,
  GROUP_R: 0x30, GROUP_A: 0x31, RECEIPTS_R: 0x32, RECEIPTS_A: 0x33,
});

const KIND_NAMES = new Map([
  [0x01, "login"], [0x02, "login:ok"], [0x03, "ping"], [0x04, "pong"], [0x05, "kick"],
  [0x06, "error"], [0x07, "logout"], [0x10, "msg:R"], [0x11, "msg:A"], [0x12, "msg:N"],
  [0x13, "ack:R"], [0x14, "ack:A"], [0x15, "ack:N"], [0x16, "read:R"], [0x17, "read:A"],
  [0x18, "read:N"], [0x20, "sync:R"], [0x21, "sync:page"], [0x22, "unread:R"],
  [0x23, "unread:A"], [0x30, "group:R"], [0x31, "group:A"], [0x32, "receipts:R"],
  [0x33, "receipts:A"],
]);

/** Error codes (section 4.1), by value. */
export const ERROR_NAMES = Object.freeze([
  "none", "malformed_frame", "unsupported_version", "unknown_kind", "frame_too_large",
  "not_logged_in", "bad_token", "token_expired", "already_logged_in", "forbidden",
  "not_found", "invalid_request", "rate_limited", "too_many_connections", "overloaded",
  "shutting_down", "internal", "msg_id_reused", "device_revoked", "storage_full",
]);

/** Kick reasons (section 4.2), by value. */
export const KICK_NAMES = Object.freeze([
  "none", "heartbeat_timeout", "replaced", "slow_consumer", "protocol_error",
  "server_shutdown", "admin", "rate_limited", "login_timeout", "push_unacked",
  "revoked",
]);

const E = Object.freeze({
  UNSUPPORTED_VERSION: 2, BAD_TOKEN: 6, TOKEN_EXPIRED: 7, RATE_LIMITED: 12,
  OVERLOADED: 14, INTERNAL: 16, DEVICE_REVOKED: 18, STORAGE_FULL: 19,
});
/** Codes after which the server closes the connection (section 5.12). */
const CLOSING_CODES = new Set([1, 2, 3, 4, 5, 6, 7, 13, 15, 18]);
/** Codes that say "later", not "no": the request may be repeated as it was. */
const TRANSIENT_CODES = new Set([E.RATE_LIMITED, E.OVERLOADED, E.INTERNAL, E.STORAGE_FULL]);

const GROUP_OPS = Object.freeze({
  create: 1, add: 2, remove: 3, list: 4, delete: 5, promote: 6, demote: 7, transfer: 8, roles: 9,
});

const DEFAULTS = Object.freeze({
  device: 1,
  reconnect: true,
  loginTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  deadAfter: 3,
  rtoMs: 2_000,
  rtoBackoff: 1.5,
  maxRtoMs: 15_000,
  maxRetries: 5,
  dedupWindowMs: 9 * 60_000,
  maxInFlight: 4096,
  ackEvery: 32,
  ackDelayMs: 10,
  groupAckDelayMs: 200,
  gapTimeoutMs: 200,
  maxHeld: 1024,
  syncLimit: 100,
  pullRetryMs: 1_000,
  unreadOnLogin: true,
  pullGroupsWithNews: true,
  maxTrackedReceipts: 4096,
  backoffMinMs: 500,
  backoffMaxMs: 30_000,
  slowBackoffMs: 30_000,
});

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8");
const now = () => performance.now();

// ---- encoding ------------------------------------------------------------

/** A frame of `kind` with a body of `bodyLen` bytes filled by `fill(view, bytes, offset)`. */
function frame(kind, bodyLen, fill, flags = 0) {
  const bytes = new Uint8Array(HEADER_LEN + bodyLen);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 4 + bodyLen);
  view.setUint8(4, VERSION);
  view.setUint8(5, kind);
  view.setUint16(6, flags);
  if (fill) fill(view, bytes, HEADER_LEN);
  return bytes;
}

/** Encoders of the client's frames (section 3). */
export const encode = Object.freeze({
  login: (user, device, resume, token) =>
    frame(Kind.LOGIN, 20 + token.length, (v, b, o) => {
      v.setBigUint64(o, user);
      v.setUint32(o + 8, device);
      v.setBigUint64(o + 12, resume);
      b.set(token, o + 20);
    }),
  ping: (nonce) => frame(Kind.PING, 8, (v, _, o) => v.setBigUint64(o, nonce)),
  pong: (nonce) => frame(Kind.PONG, 8, (v, _, o) => v.setBigUint64(o, nonce)),
  logout: () => frame(Kind.LOGOUT, 0),
  msgR: (msgId, group, to, body, retry = false, noPush = false) =>
    frame(Kind.MSG_R, 24 + body.length, (v, b, o) => {
      v.setBigUint64(o, msgId);
      v.setBigUint64(o + 8, group);
      v.setBigUint64(o + 16, to);
      b.set(body, o + 24);
    }, (retry ? FLAG_RETRY : 0) | (noPush ? FLAG_NO_PUSH : 0)),
  ackR: (group, seq) =>
    frame(Kind.ACK_R, 16, (v, _, o) => {
      v.setBigUint64(o, group);
      v.setBigUint64(o + 8, seq);
    }),
  readR: (group, peer, seq) =>
    frame(Kind.READ_R, 24, (v, _, o) => {
      v.setBigUint64(o, group);
      v.setBigUint64(o + 8, peer);
      v.setBigUint64(o + 16, seq);
    }),
  syncR: (group, after, limit) =>
    frame(Kind.SYNC_R, 18, (v, _, o) => {
      v.setBigUint64(o, group);
      v.setBigUint64(o + 8, after);
      v.setUint16(o + 16, limit);
    }),
  unreadR: () => frame(Kind.UNREAD_R, 0),
  groupR: (req, op, group, members) =>
    frame(Kind.GROUP_R, 17 + 8 * members.length, (v, _, o) => {
      v.setBigUint64(o, req);
      v.setUint8(o + 8, op);
      v.setBigUint64(o + 9, group);
      members.forEach((m, i) => v.setBigUint64(o + 17 + 8 * i, m));
    }),
  receiptsR: (req, group, seq) =>
    frame(Kind.RECEIPTS_R, 24, (v, _, o) => {
      v.setBigUint64(o, req);
      v.setBigUint64(o + 8, group);
      v.setBigUint64(o + 16, seq);
    }),
});

// ---- decoding ------------------------------------------------------------

/** A frame from the server broke the protocol: the connection is not trusted any more. */
export class FrameError extends Error {}

/**
 * Splits one WebSocket message into frames (section 1.1: whole frames, one
 * or more) and checks each header as section 2 says. Returns
 * `[{ kind, flags, body: DataView }]`; throws FrameError.
 */
export function splitFrames(buffer, maxFrame = DEFAULT_MAX_FRAME) {
  const view = new DataView(buffer);
  const frames = [];
  let off = 0;
  while (off < buffer.byteLength) {
    const left = buffer.byteLength - off;
    if (left < 4) throw new FrameError("a message ends inside a length field");
    const len = view.getUint32(off);
    if (4 + len > maxFrame) throw new FrameError(`a frame of ${4 + len} bytes is over the limit of ${maxFrame}`);
    if (len < 4) throw new FrameError(`a length field of ${len} is below 4`);
    if (left < 4 + len) throw new FrameError("a message ends inside a frame");
    const version = view.getUint8(off + 4);
    if (version !== VERSION) throw new FrameError(`unsupported version ${version}`);
    const kind = view.getUint8(off + 5);
    if (!KIND_NAMES.has(kind)) throw new FrameError(`unknown kind 0x${kind.toString(16)}`);
    const flags = view.getUint16(off + 6);
    frames.push({ kind, flags, body: new DataView(buffer, off + HEADER_LEN, len - 4) });
    off += 4 + len;
  }
  return frames;
}

/**
 * Reads the body of a server frame by its kind's rules (section 3). Returns
 * an object with the fields, or null for a kind only clients send; throws
 * FrameError on a malformed body.
 */
export function parseBody(kind, flags, d) {
  const n = d.byteLength;
  const name = KIND_NAMES.get(kind);
  const u8 = (o) => d.getUint8(o);
  const u16 = (o) => d.getUint16(o);
  const u32 = (o) => d.getUint32(o);
  const u64 = (o) => d.getBigUint64(o);
  const rest = (o) => new Uint8Array(d.buffer.slice(d.byteOffset + o, d.byteOffset + n));
  const text = (o) => {
    if (n - o > MAX_TEXT) throw new FrameError(`${name} text of ${n - o} bytes`);
    return utf8Decoder.decode(new Uint8Array(d.buffer, d.byteOffset + o, n - o));
  };
  const fixed = (size) => {
    if (n !== size) throw new FrameError(`${name} body of ${n} bytes, not ${size}`);
  };
  const atLeast = (size) => {
    if (n < size) throw new FrameError(`${name} body of ${n} bytes, below ${size}`);
  };
  switch (kind) {
    case Kind.LOGIN_OK:
      fixed(56);
      return {
        user: u64(0), device: u32(8), heartbeatMs: u32(12), serverTime: Number(u64(16)),
        inboxHead: u64(24), maxFrame: u32(32), session: u64(36), frameRate: u32(44),
        frameBurst: u32(48), rateStrikes: u32(52),
      };
    case Kind.PING:
    case Kind.PONG:
      fixed(8);
      return { nonce: u64(0) };
    case Kind.KICK:
      atLeast(1);
      return { reason: u8(0), text: text(1) };
    case Kind.ERROR:
      atLeast(11);
      return { code: u16(0), refKind: u8(2), refId: u64(3), text: text(11) };
    case Kind.MSG_A:
      fixed(40);
      return { msgId: u64(0), group: u64(8), seq: u64(16), ownSeq: u64(24), time: Number(u64(32)) };
    case Kind.MSG_N: {
      atLeast(48);
      const seq = u64(8);
      if (seq === 0n) throw new FrameError("msg:N with seq 0");
      return {
        group: u64(0), seq, from: u64(16), to: u64(24), msgId: u64(32), time: Number(u64(40)),
        body: rest(48), retry: (flags & FLAG_RETRY) !== 0,
      };
    }
    case Kind.ACK_A:
      fixed(16);
      return { group: u64(0), seq: u64(8) };
    case Kind.ACK_N:
      fixed(24);
      return { peer: u64(0), group: u64(8), seq: u64(16) };
    case Kind.READ_A:
      fixed(24);
      return { group: u64(0), peer: u64(8), seq: u64(16) };
    case Kind.READ_N:
      fixed(32);
      return { reader: u64(0), group: u64(8), peer: u64(16), seq: u64(24) };
    case Kind.SYNC_PAGE: {
      atLeast(26);
      const count = u16(24);
      const entries = [];
      let o = 26;
      for (let i = 0; i < count; i++) {
        if (n - o < 44) throw new FrameError("sync:page entry cut short");
        const bodyLen = u32(o + 40);
        if (n - o - 44 < bodyLen) throw new FrameError("sync:page entry body cut short");
        entries.push({
          seq: u64(o), from: u64(o + 8), to: u64(o + 16), msgId: u64(o + 24),
          time: Number(u64(o + 32)),
          body: new Uint8Array(d.buffer.slice(d.byteOffset + o + 44, d.byteOffset + o + 44 + bodyLen)),
        });
        o += 44 + bodyLen;
      }
      if (o !== n) throw new FrameError("bytes after the last sync:page entry");
      return { group: u64(0), after: u64(8), head: u64(16), entries };
    }
    case Kind.UNREAD_A: {
      if (n % 28 !== 0) throw new FrameError(`unread:A body of ${n} bytes, not a multiple of 28`);
      const entries = [];
      for (let o = 0; o < n; o += 28) {
        entries.push({ group: u64(o), peer: u64(o + 8), unread: u32(o + 16), lastSeq: u64(o + 20) });
      }
      return { entries, partial: (flags & FLAG_PARTIAL) !== 0 };
    }
    case Kind.GROUP_A: {
      atLeast(21);
      if ((n - 21) % 8 !== 0) throw new FrameError("group:A member list not a multiple of 8 bytes");
      const op = u8(8);
      if (op < 1 || op > 4) throw new FrameError(`group:A op ${op}`);
      const members = [];
      for (let o = 21; o < n; o += 8) members.push(u64(o));
      return { req: u64(0), op, group: u64(9), total: u32(17), members };
    }
    case Kind.RECEIPTS_A:
      fixed(36);
      return { req: u64(0), group: u64(8), seq: u64(16), members: u32(24), delivered: u32(28), read: u32(32) };
    default:
      // A kind only clients send: nothing for a client to do with it.
      return null;
  }
}

// ---- helpers -------------------------------------------------------------

/** A u64 from a BigInt, a safe integer Number or a decimal string. */
function toU64(x, what) {
  let v;
  if (typeof x === "bigint") v = x;
  else if (typeof x === "number" && Number.isSafeInteger(x)) v = BigInt(x);
  else if (typeof x === "string" && /^[0-9]+$/.test(x.trim())) v = BigInt(x.trim());
  else throw new TypeError(`${what}: not an unsigned integer: ${String(x)}`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what}: out of the u64 range: ${v}`);
  return v;
}

function toU32(x, what) {
  const v = Number(x);
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`${what}: not a u32: ${String(x)}`);
  return v;
}

function toBytes(body) {
  if (typeof body === "string") return utf8.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError("a message body is a string, a Uint8Array or an ArrayBuffer");
}

const max = (a, b) => (a > b ? a : b);
const min = (a, b) => (a < b ? a : b);

/** Receive state of one stream: the contiguous mark, held messages, acks, the pull. */
class Stream {
  constructor(group) {
    this.group = group;
    /** Everything up to here was received and delivered. */
    this.mark = 0n;
    /** Acknowledged to the server up to here (ack:R, sync:R or login). */
    this.acked = 0n;
    /** Confirmed by the server (ack:A, a page answering sync:R) up to here. */
    this.confirmed = 0n;
    /** Messages above a gap: seq -> message, or OWN for this device's own sends. */
    this.held = new Map();
    /** A message already held was pushed again: the mark is owed an ack. */
    this.reack = false;
    this.gapTimer = null;
    this.ackTimer = null;
    /** The pull in progress: { after, sent }, or null. */
    this.pull = null;
  }

  owesAck() {
    return this.mark > this.acked || this.reack;
  }
}

/** Marks a seq as held by this device without delivering anything (its own send). */
const OWN = Symbol("own");

/**
 * Sent one-to-one messages waiting for one kind of receipt, per peer by
 * their receiver-side seq, with the latest receipt mark per peer.
 */
class Receipts {
  constructor(limit) {
    this.limit = limit;
    this.byPeer = new Map();
    this.marks = new Map();
    this.size = 0;
  }

  /** Tracks a message; returns true, tracking nothing, if a receipt already covers it. */
  track(peer, seq, msgId) {
    if (this.limit === 0) return false;
    const mark = this.marks.get(peer);
    if (mark !== undefined && seq <= mark) return true;
    let waiting = this.byPeer.get(peer);
    if (!waiting) this.byPeer.set(peer, (waiting = new Map()));
    if (!waiting.has(seq)) this.size++;
    waiting.set(seq, msgId);
    while (this.size > this.limit) {
      // Forget the oldest message of the peer tracked longest.
      const [p, w] = this.byPeer.entries().next().value;
      w.delete(w.keys().next().value);
      this.size--;
      if (w.size === 0) this.byPeer.delete(p);
    }
    return false;
  }

  /** Settles every message to `peer` at or below `seq`: [{ msgId, seq }] in seq order. */
  settle(peer, seq) {
    if (this.limit > 0) {
      if (this.marks.size >= this.limit && !this.marks.has(peer)) this.marks.clear();
      this.marks.set(peer, max(this.marks.get(peer) ?? 0n, seq));
    }
    const waiting = this.byPeer.get(peer);
    if (!waiting) return [];
    const done = [];
    for (const [s, msgId] of waiting) {
      if (s <= seq) {
        done.push({ msgId, seq: s });
        waiting.delete(s);
      }
    }
    this.size -= done.length;
    if (waiting.size === 0) this.byPeer.delete(peer);
    return done.sort((a, b) => (a.seq < b.seq ? -1 : 1));
  }
}

// ---- the client ----------------------------------------------------------

/**
 * A client of one (user, device). See the module comment for what it
 * guarantees and the events it emits.
 *
 * Options (besides the DEFAULTS above, all in ms where named so):
 * - `url` (required): the WebSocket URL, e.g. `wss://host/ws`.
 * - `user` (required), `device` (default 1).
 * - `token` (required): a string or bytes, or a function returning one (or a
 *   promise of one), called before every connection.
 * - `WebSocket`: a WebSocket constructor (default: the global one).
 * - `inboxMark`, `groupMarks` (`{ [group]: seq }` or a Map): streams the
 *   application already holds up to these seqs (restored from storage).
 * - `firstMsgId`: the msg id of the first send, each send taking the next;
 *   default `(device << 44) | Date.now()` (section 5.6).
 */
export class Client extends EventTarget {
  constructor(options = {}) {
    super();
    const o = { ...DEFAULTS };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v;
    if (!o.url) throw new TypeError("options.url is required");
    if (o.token === undefined || o.token === null || o.token === "") throw new TypeError("options.token is required");
    this.options = o;
    this.url = String(o.url);
    this.user = toU64(o.user, "user");
    if (this.user === 0n) throw new RangeError("user 0 names no user");
    this.device = toU32(o.device, "device");
    this.token = o.token;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") throw new TypeError("no WebSocket implementation (pass options.WebSocket)");

    this._state = "idle";
    this._ws = null;
    /** Incremented per connection: events of an older socket are ignored. */
    this._conn = 0;
    /** A closing error came: nothing more is sent; `_closing` is what follows the close. */
    this._quiet = false;
    this._closing = null;
    this._stopped = false;
    this._session = 0n;
    this._hbMs = o.heartbeatMs;
    this._maxFrame = DEFAULT_MAX_FRAME;
    this._acceptMax = DEFAULT_MAX_FRAME;
    this._lastTx = 0;
    this._lastRx = 0;
    this._timers = { login: null, live: null, flush: null, reconnect: null, quiet: null };
    this._bucket = { tokens: 1, rate: 1000, burst: 2000, at: 0 };
    this._outq = [];
    this._outHead = 0;
    this._backoffAttempt = 0;
    this._resumeSent = 0n;

    /** group (BigInt, 0n = inbox) -> Stream */
    this._streams = new Map();
    /** msg id -> pending send, in send order. */
    this._outbox = new Map();
    this._delivered = new Receipts(o.maxTrackedReceipts);
    this._read = new Receipts(o.maxTrackedReceipts);
    /** `${group}/${peer}` -> { group, peer, want, sent, confirmed } */
    this._readMarks = new Map();
    /** req -> { resolve, reject, kind } */
    this._requests = new Map();
    this._pings = new Map();
    this._unreadPending = false;
    /** While syncing after a login: what remains before `online`. */
    this._initial = null;
    this._waiters = [];

    this._nextMsgId = o.firstMsgId !== undefined
      ? toU64(o.firstMsgId, "firstMsgId")
      : ((BigInt(this.device) & 0xfffffn) << 44n) | (BigInt(Date.now()) & ((1n << 44n) - 1n));
    this._nextReq = 1n;
    this._nextNonce = 1n;

    this.stats = {
      framesIn: 0, framesOut: 0, messages: 0, duplicates: 0, held: 0, gapPulls: 0,
      syncRequests: 0, acksSent: 0, pings: 0, retransmits: 0, reconnects: 0,
    };

    const inbox = this._stream(0n);
    if (o.inboxMark !== undefined) inbox.mark = inbox.acked = toU64(o.inboxMark, "inboxMark");
    const groups = o.groupMarks instanceof Map ? o.groupMarks : Object.entries(o.groupMarks ?? {});
    for (const [g, seq] of groups) {
      const s = this._stream(toU64(g, "group"));
      s.mark = s.acked = toU64(seq, "group mark");
    }
  }

  // ---- public surface ----------------------------------------------------

  /** `idle`, `connecting`, `syncing`, `online`, `offline` or `closed`. */
  get state() {
    return this._state;
  }

  /** The server's id of the current connection (0n before the first login). */
  get session() {
    return this._session;
  }

  /** The msg id the next send takes; persist it to keep ids unique across restarts. */
  get nextMsgId() {
    return this._nextMsgId;
  }

  /** Sends waiting for their msg:A. */
  get pending() {
    return this._outbox.size;
  }

  /** The contiguous mark of a stream (0n: the inbox). */
  mark(group = 0n) {
    return this._streams.get(toU64(group, "group"))?.mark ?? 0n;
  }

  /** Every stream's contiguous mark: `{ inbox, groups: Map(group -> seq) }`, to persist. */
  marks() {
    const groups = new Map();
    for (const [g, s] of this._streams) if (g !== 0n) groups.set(g, s.mark);
    return { inbox: this._stream(0n).mark, groups };
  }

  /** Adds a listener that receives the event's detail; returns a function removing it. */
  on(type, fn) {
    const listener = (ev) => fn(ev.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Connects (again) and logs in. Resolves when the client is `online`
   * (login:ok and the initial sync done); rejects if it stops first (a
   * refused login, a kick it does not come back from, `close()`).
   */
  connect() {
    const p = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (this._state === "online") {
      this._settleWaiters(null);
    } else if (this._state === "idle" || this._state === "closed") {
      this._stopped = false;
      this._backoffAttempt = 0;
      this._open();
    } else if (this._state === "offline") {
      // Reconnect now rather than at the end of the backoff.
      clearTimeout(this._timers.reconnect);
      this._open();
    }
    return p;
  }

  /**
   * Says goodbye (section 5.2): acknowledges what every stream holds, sends
   * logout and closes. Pending sends stay for a later `connect()`.
   */
  close() {
    this._stopped = true;
    if (this._live()) {
      for (const s of this._streams.values()) if (s.owesAck() && !s.pull) this._sendAck(s);
      this._write(encode.logout());
      this._flush(true);
    }
    this._drop("closed by the application", "stop");
  }

  /**
   * Sends `body` (a string, sent as UTF-8, or bytes) to user `to`. Returns
   * its msg id (a BigInt). While not logged in it waits and goes out after
   * the next login:ok. `{ noPush: true }` marks a silent message (header
   * flag NO_PUSH): the business backend is asked not to send it as a
   * mobile push.
   */
  send(to, body, { noPush = false } = {}) {
    const peer = toU64(to, "to");
    if (peer === 0n || peer === this.user) throw new RangeError("a one-to-one message goes to another user");
    return this._send(0n, peer, toBytes(body), noPush);
  }

  /** Sends `body` to group `group` (the user must be a member). Returns its msg id. */
  sendGroup(group, body, { noPush = false } = {}) {
    const g = toU64(group, "group");
    if (g === 0n) throw new RangeError("group 0 is no group");
    return this._send(g, 0n, toBytes(body), noPush);
  }

  /**
   * Marks a conversation read up to `seq` of this user's stream (read:R,
   * section 5.11): the inbox seq of the latest message read from `peer`
   * (group 0), or a seq of the group's log (peer 0). Only a mark above the
   * last one is sent; while offline it is sent after the next login.
   * Returns whether the mark moved.
   */
  markRead(peer, seq, group = 0n) {
    const g = toU64(group, "group");
    const p = g === 0n ? toU64(peer, "peer") : 0n;
    const s = toU64(seq, "seq");
    if (s === 0n) return false;
    const key = `${g}/${p}`;
    let r = this._readMarks.get(key);
    if (!r) this._readMarks.set(key, (r = { group: g, peer: p, want: 0n, sent: 0n, confirmed: 0n }));
    if (s <= r.want) return false;
    r.want = s;
    if (this._live()) {
      r.sent = s;
      this._write(encode.readR(g, p, s));
    }
    return true;
  }

  /** Pulls a stream (0n: the inbox) from its mark to its head; false if a pull of it runs. */
  pull(group = 0n) {
    return this._startPull(toU64(group, "group"));
  }

  /** Asks for the unread summary (an `unread` event); false if one is outstanding or offline. */
  requestUnread() {
    if (!this._live() || this._unreadPending) return false;
    this._unreadPending = true;
    this._write(encode.unreadR());
    return true;
  }

  /**
   * group:R (section 5.10): `op` is `create`, `add`, `remove`, `list`,
   * `delete`, `promote`, `demote`, `transfer` or `roles` (or 1 to 9).
   * Resolves with the group:A answer, rejects with the error.
   */
  groupRequest(op, group = 0n, members = []) {
    const code = typeof op === "string" ? GROUP_OPS[op] : op;
    if (!Object.values(GROUP_OPS).includes(code)) return Promise.reject(new RangeError(`unknown group op ${op}`));
    const ids = members.map((m) => toU64(m, "member"));
    return this._request(Kind.GROUP_R, (req) => encode.groupR(req, code, toU64(group, "group"), ids));
  }

  /** receipts:R: how many members received and read group message `seq`. */
  requestReceipts(group, seq) {
    const g = toU64(group, "group");
    const s = toU64(seq, "seq");
    return this._request(Kind.RECEIPTS_R, (req) => encode.receiptsR(req, g, s));
  }

  /** Sends a ping now; returns its nonce (a `pong` event answers it), or null if offline. */
  ping() {
    if (!this._live()) return null;
    const nonce = this._nextNonce++;
    this._pings.set(nonce, now());
    if (this._pings.size > 64) this._pings.delete(this._pings.keys().next().value);
    this.stats.pings++;
    this._write(encode.ping(nonce));
    return nonce;
  }

  // ---- connection --------------------------------------------------------

  _setState(state) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._emit("state", { state, previous });
    if (state === "online") this._settleWaiters(null);
    if (state === "closed") this._settleWaiters(new Error("the client stopped before it was online"));
  }

  _settleWaiters(error) {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) (error ? w.reject(error) : w.resolve(this));
  }

  /** Whether frames may be sent: logged in, and no closing error came. */
  _live() {
    return this._ws !== null && !this._quiet && (this._state === "syncing" || this._state === "online");
  }

  _open() {
    const conn = ++this._conn;
    this._quiet = false;
    this._closing = null;
    this._setState("connecting");
    this._timers.login = setTimeout(
      () => conn === this._conn && this._drop(`no login:ok within ${this.options.loginTimeoutMs} ms`, "retry"),
      this.options.loginTimeoutMs,
    );
    Promise.resolve()
      .then(() => (typeof this.token === "function" ? this.token() : this.token))
      .then((token) => {
        if (conn !== this._conn) return;
        const bytes = toBytes(token);
        if (bytes.length < 1 || bytes.length > MAX_TOKEN) throw new RangeError(`a token is 1 to ${MAX_TOKEN} bytes`);
        const ws = new this._WebSocket(this.url);
        ws.binaryType = "arraybuffer";
        this._ws = ws;
        ws.onopen = () => conn === this._conn && this._onOpen(bytes);
        ws.onmessage = (ev) => conn === this._conn && this._onMessage(ev.data);
        ws.onclose = (ev) => conn === this._conn && this._onSocketClose(ev);
        ws.onerror = () => {}; // a close event follows
      })
      .catch((err) => {
        if (conn === this._conn) this._drop(`cannot connect: ${err?.message ?? err}`, "retry");
      });
  }

  _onOpen(token) {
    const t = now();
    this._lastRx = t;
    this._lastTx = t;
    this._bucket = { tokens: 1, rate: 1, burst: 1, at: t };
    const resume = this._stream(0n).mark;
    this._resumeSent = resume;
    this._write(encode.login(this.user, this.device, resume, token));
  }

  _onSocketClose(ev) {
    const detail = `the connection closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})`;
    this._drop(detail, this._closing ?? "retry");
  }

  /**
   * Ends the current connection. `policy`: `retry` (reconnect with
   * backoff), `slow` (reconnect after at least `slowBackoffMs`) or `stop`.
   */
  _drop(why, policy) {
    const ws = this._ws;
    this._conn++;
    this._ws = null;
    this._quiet = false;
    this._closing = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        // Already closing.
      }
    }
    for (const k of ["login", "live", "flush", "quiet", "reconnect"]) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
    this._outq = [];
    this._outHead = 0;
    for (const m of this._outbox.values()) {
      clearTimeout(m.timer);
      m.timer = null;
    }
    for (const s of this._streams.values()) {
      clearTimeout(s.gapTimer);
      clearTimeout(s.ackTimer);
      s.gapTimer = s.ackTimer = null;
      if (s.pull) s.pull.sent = false;
    }
    for (const r of this._readMarks.values()) if (r.sent > r.confirmed) r.sent = r.confirmed;
    for (const { reject } of this._requests.values()) reject(new Error("the connection closed"));
    this._requests.clear();
    this._pings.clear();
    this._unreadPending = false;
    this._initial = null;

    const stop = policy === "stop" || this._stopped || !this.options.reconnect;
    let delay = null;
    if (!stop) {
      const o = this.options;
      const base = Math.min(o.backoffMaxMs, o.backoffMinMs * 2 ** this._backoffAttempt);
      this._backoffAttempt = Math.min(this._backoffAttempt + 1, 30);
      delay = Math.round(base * (0.5 + Math.random() / 2));
      if (policy === "slow") delay = Math.max(delay, o.slowBackoffMs);
    }
    if (this._state !== "idle" && this._state !== "closed") this._emit("disconnect", { why, reconnectMs: delay });
    if (stop) {
      this._setState("closed");
      return;
    }
    this._setState("offline");
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this.stats.reconnects++;
      this._open();
    }, delay);
  }

  // ---- writing -----------------------------------------------------------

  /** Queues a frame; frames go out paced to the server's frame-rate limit. */
  _write(bytes) {
    if (!this._ws || this._quiet) return;
    this._outq.push(bytes);
    this._flush(false);
  }

  _flush(force) {
    const ws = this._ws;
    if (!ws) return;
    const b = this._bucket;
    const t = now();
    b.tokens = Math.min(b.burst, b.tokens + ((t - b.at) * b.rate) / 1000);
    b.at = t;
    while (this._outHead < this._outq.length && (force || b.tokens >= 1)) {
      const bytes = this._outq[this._outHead++];
      b.tokens -= 1;
      if (ws.readyState === 1) ws.send(bytes);
      this._lastTx = t;
      this.stats.framesOut++;
    }
    if (this._outHead === this._outq.length) {
      this._outq = [];
      this._outHead = 0;
    } else if (!this._timers.flush) {
      const wait = Math.ceil(((1 - b.tokens) * 1000) / b.rate);
      this._timers.flush = setTimeout(() => {
        this._timers.flush = null;
        this._flush(false);
      }, Math.max(1, wait));
    }
  }

  // ---- reading -----------------------------------------------------------

  _onMessage(data) {
    const conn = this._conn;
    if (!(data instanceof ArrayBuffer)) {
      this._drop("the server sent a text message", "retry");
      return;
    }
    this._lastRx = now();
    let frames;
    try {
      frames = splitFrames(data, this._acceptMax).map((f) => ({ kind: f.kind, body: parseBody(f.kind, f.flags, f.body) }));
    } catch (err) {
      // Frames before the bad one are not handled either: the message as a
      // whole is not trusted, and what they carried comes again after the
      // reconnection (pushes are re-sent or pulled, answers re-asked).
      this._drop(`a bad frame from the server: ${err.message}`, "retry");
      return;
    }
    for (const { kind, body } of frames) {
      if (conn !== this._conn) return; // the connection ended while handling
      this.stats.framesIn++;
      if (body !== null) this._handle(kind, body);
    }
  }

  _handle(kind, f) {
    switch (kind) {
      case Kind.LOGIN_OK: return this._onLoginOk(f);
      case Kind.PING: return this._write(encode.pong(f.nonce));
      case Kind.PONG: {
        const sent = this._pings.get(f.nonce);
        this._pings.delete(f.nonce);
        return this._emit("pong", { nonce: f.nonce, rttMs: sent === undefined ? null : now() - sent });
      }
      case Kind.KICK: return this._onKick(f);
      case Kind.ERROR: return this._onError(f);
      case Kind.MSG_A: return this._onMsgA(f);
      case Kind.MSG_N:
        return this._takeIn(f.group, f.seq, {
          group: f.group, seq: f.seq, from: f.from, to: f.to, msgId: f.msgId, time: f.time,
          body: f.body, pulled: false,
        });
      case Kind.ACK_A: {
        const s = this._streams.get(f.group);
        if (s) s.confirmed = max(s.confirmed, f.seq);
        return;
      }
      case Kind.ACK_N:
        if (f.group === 0n) this._settleDelivered(f.peer, f.seq);
        return;
      case Kind.READ_A: {
        const r = this._readMarks.get(`${f.group}/${f.peer}`);
        if (r) r.confirmed = max(r.confirmed, f.seq);
        return;
      }
      case Kind.READ_N: return this._onReadN(f);
      case Kind.SYNC_PAGE: return this._onPage(f);
      case Kind.UNREAD_A: return this._onUnread(f);
      case Kind.GROUP_A: return this._answer(f, "group");
      case Kind.RECEIPTS_A: return this._answer(f, "receipts");
    }
  }

  _onLoginOk(ok) {
    if (this._state !== "connecting") return; // a second login:ok: ignore
    clearTimeout(this._timers.login);
    this._timers.login = null;
    const o = this.options;
    this._session = ok.session;
    this._hbMs = ok.heartbeatMs || o.heartbeatMs;
    this._maxFrame = ok.maxFrame || DEFAULT_MAX_FRAME;
    this._acceptMax = Math.max(DEFAULT_MAX_FRAME, this._maxFrame);
    // The login frame took one token of a bucket that started full.
    const burst = ok.frameBurst || 2000;
    this._bucket = { tokens: Math.max(0, burst - 1), rate: ok.frameRate || 1000, burst, at: now() };
    this._backoffAttempt = 0;

    // The server took `resume` as the inbox cursor (capped at its head). A
    // head below the mark means its inbox is behind (restored): follow it.
    const inbox = this._stream(0n);
    const resumed = min(this._resumeSent, ok.inboxHead);
    inbox.confirmed = max(inbox.confirmed, resumed);
    if (ok.inboxHead < inbox.mark) this._lowerMark(inbox, ok.inboxHead);
    // Acks of the old connection that were never confirmed are owed again.
    for (const s of this._streams.values()) s.acked = s.confirmed;

    this._initial = { unread: false, streams: new Set() };
    this._setState("syncing");
    this._emit("login", { ...ok });

    // Pending sends, in send order, same msg ids.
    for (const m of [...this._outbox.values()]) {
      if (m.firstSent !== null && now() - m.firstSent > o.dedupWindowMs) {
        this._fail(m, "expired");
        continue;
      }
      m.retries = 0;
      this._transmit(m);
    }
    for (const r of this._readMarks.values()) {
      if (r.want > r.sent) {
        r.sent = r.want;
        this._write(encode.readR(r.group, r.peer, r.want));
      }
    }
    if (o.unreadOnLogin) {
      this._unreadPending = true;
      this._initial.unread = true;
      this._write(encode.unreadR());
    }
    // Pulls the old connection interrupted, then the inbox if it is behind.
    for (const s of this._streams.values()) {
      if (s.pull && !s.pull.sent) {
        this._initial.streams.add(s.group);
        this._sendPage(s);
      }
    }
    if (ok.inboxHead > inbox.mark && (inbox.pull || this._startPull(0n))) this._initial.streams.add(0n);
    for (const s of this._streams.values()) this._settle(s, true);
    this._armLiveness();
    this._checkInitial();
  }

  _checkInitial() {
    const i = this._initial;
    if (!i || i.unread || i.streams.size > 0 || this._state !== "syncing") return;
    this._initial = null;
    this._setState("online");
  }

  /** Pings when idle for a heartbeat; drops the connection when the server went silent. */
  _armLiveness() {
    clearTimeout(this._timers.live);
    this._timers.live = null;
    if (!this._live()) return;
    const t = now();
    const hb = this._hbMs;
    const deadAt = this.options.deadAfter > 0 ? this._lastRx + hb * this.options.deadAfter : Infinity;
    if (t >= deadAt) {
      this._drop(`nothing from the server for ${Math.round(t - this._lastRx)} ms`, "retry");
      return;
    }
    if (t >= this._lastTx + hb) this.ping();
    const next = Math.min(deadAt, this._lastTx + hb);
    this._timers.live = setTimeout(() => this._armLiveness(), Math.max(10, next - now() + 5));
  }

  _onKick(k) {
    const name = KICK_NAMES[k.reason] ?? `kick ${k.reason}`;
    this._emit("kick", { reason: k.reason, name, text: k.text });
    // replaced: another instance of this device is connected, and coming
    // back would kick it in turn; admin and revoked: the operator's or the
    // application's decision.
    let policy = "retry";
    if (k.reason === 2 || k.reason === 6 || k.reason === 10) policy = "stop";
    else if (k.reason === 4) policy = "slow";
    if (this._closing === "stop") policy = "stop";
    this._drop(`kicked: ${name}${k.text ? ` (${k.text})` : ""}`, policy);
  }

  _onError(e) {
    const code = e.code;
    const name = ERROR_NAMES[code] ?? `error ${code}`;
    const closes = CLOSING_CODES.has(code);
    const transient = TRANSIENT_CODES.has(code);
    this._emit("error", {
      code, name, refKind: e.refKind, refKindName: KIND_NAMES.get(e.refKind) ?? null,
      refId: e.refId, text: e.text, closes,
    });
    switch (e.refKind) {
      case Kind.MSG_R: {
        const m = this._outbox.get(e.refId);
        // Transient refusals are retransmitted on the message's timer.
        if (m && !transient) this._fail(m, "rejected", code);
        break;
      }
      case Kind.SYNC_R: {
        const s = this._streams.get(e.refId);
        if (s?.pull) {
          s.pull = null;
          if (transient && this._live()) {
            // Try again a little later; the stream stays in the initial set.
            const conn = this._conn;
            setTimeout(() => conn === this._conn && this._live() && this._startPull(s.group), this.options.pullRetryMs);
          } else {
            this._initial?.streams.delete(s.group);
          }
          this._settle(s, false);
        }
        break;
      }
      case Kind.ACK_R: {
        const s = this._streams.get(e.refId);
        if (s) s.acked = s.confirmed;
        break;
      }
      case Kind.UNREAD_R:
        this._unreadPending = false;
        if (this._initial) this._initial.unread = false;
        break;
      case Kind.GROUP_R:
      case Kind.RECEIPTS_R: {
        const r = this._requests.get(e.refId);
        if (r && r.kind === e.refKind) {
          this._requests.delete(e.refId);
          r.reject(Object.assign(new Error(`${name}${e.text ? `: ${e.text}` : ""}`), { code, name }));
        }
        break;
      }
    }
    if (closes) {
      // Stop sending; the server closes (after a kick for protocol errors).
      let policy = "retry";
      if (code === E.UNSUPPORTED_VERSION || code === E.DEVICE_REVOKED) policy = "stop";
      else if (code === E.BAD_TOKEN || code === E.TOKEN_EXPIRED) policy = typeof this.token === "function" ? "retry" : "stop";
      else if (code <= 5) policy = "slow";
      this._quiet = true;
      this._closing = policy;
      const conn = this._conn;
      clearTimeout(this._timers.quiet);
      this._timers.quiet = setTimeout(() => conn === this._conn && this._drop(`error ${name}`, policy), 1000);
    } else {
      this._checkInitial();
    }
  }

  // ---- sending -----------------------------------------------------------

  _send(group, to, body, noPush = false) {
    const limit = this._maxFrame - BODY_OVERHEAD;
    if (body.length > limit) throw new RangeError(`a message body is at most ${limit} bytes`);
    if (this._outbox.size >= this.options.maxInFlight) throw new Error(`${this._outbox.size} messages are waiting for their msg:A`);
    let msgId;
    do {
      msgId = this._nextMsgId;
      this._nextMsgId = msgId === U64_MAX ? 1n : msgId + 1n;
    } while (msgId === 0n || this._outbox.has(msgId));
    const m = { msgId, group, to, body, noPush, retries: 0, firstSent: null, timer: null };
    this._outbox.set(msgId, m);
    if (this._live()) this._transmit(m);
    return msgId;
  }

  _transmit(m) {
    const retry = m.firstSent !== null;
    if (!retry) m.firstSent = now();
    else this.stats.retransmits++;
    this._write(encode.msgR(m.msgId, m.group, m.to, m.body, retry, m.noPush));
    const o = this.options;
    const wait = Math.min(o.maxRtoMs, o.rtoMs * o.rtoBackoff ** m.retries);
    clearTimeout(m.timer);
    m.timer = setTimeout(() => this._onRto(m), wait);
  }

  _onRto(m) {
    m.timer = null;
    if (this._outbox.get(m.msgId) !== m || !this._live()) return;
    if (m.retries >= this.options.maxRetries) return this._fail(m, "timeout");
    if (now() - m.firstSent > this.options.dedupWindowMs) return this._fail(m, "expired");
    m.retries++;
    this._transmit(m);
  }

  _fail(m, reason, code = 0) {
    clearTimeout(m.timer);
    this._outbox.delete(m.msgId);
    this._emit("failed", {
      msgId: m.msgId, group: m.group, to: m.to, reason, code, name: code ? ERROR_NAMES[code] ?? `error ${code}` : null,
    });
  }

  _onMsgA(a) {
    const m = this._outbox.get(a.msgId);
    if (!m) return; // a second answer
    clearTimeout(m.timer);
    this._outbox.delete(a.msgId);
    this._emit("sent", { msgId: a.msgId, group: a.group, to: m.to, seq: a.seq, ownSeq: a.ownSeq, time: a.time });
    if (a.group === 0n && m.to !== 0n) {
      // A receipt may have come first (after a reconnection).
      if (this._delivered.track(m.to, a.seq, a.msgId)) this._emit("delivered", { msgId: a.msgId, peer: m.to, seq: a.seq });
      if (this._read.track(m.to, a.seq, a.msgId)) this._emit("read", { msgId: a.msgId, peer: m.to, seq: a.seq });
    }
    // This device holds what it sent: not a gap, not delivered back.
    if (a.ownSeq !== 0n) this._takeIn(0n, a.ownSeq, OWN);
    if (a.group !== 0n && a.seq !== 0n) this._takeIn(a.group, a.seq, OWN);
  }

  _settleDelivered(peer, seq) {
    for (const d of this._delivered.settle(peer, seq)) this._emit("delivered", { msgId: d.msgId, peer, seq: d.seq });
  }

  _onReadN(n) {
    if (n.reader === this.user) {
      this._emit("readelsewhere", { group: n.group, peer: n.peer, seq: n.seq });
    } else if (n.group === 0n) {
      // Read implies delivered.
      this._settleDelivered(n.reader, n.seq);
      for (const d of this._read.settle(n.reader, n.seq)) this._emit("read", { msgId: d.msgId, peer: n.reader, seq: d.seq });
    }
  }

  _request(kind, build) {
    if (!this._live()) return Promise.reject(new Error("not connected"));
    const req = this._nextReq++;
    const p = new Promise((resolve, reject) => this._requests.set(req, { resolve, reject, kind }));
    this._write(build(req));
    return p;
  }

  _answer(f, type) {
    this._emit(type, f);
    const r = this._requests.get(f.req);
    if (r) {
      this._requests.delete(f.req);
      r.resolve(f);
    }
  }

  // ---- receiving ---------------------------------------------------------

  _stream(group) {
    let s = this._streams.get(group);
    if (!s) this._streams.set(group, (s = new Stream(group)));
    return s;
  }

  /** Takes in a pushed message or an own send, then updates timers and acks. */
  _takeIn(group, seq, item) {
    const s = this._stream(group);
    const arrival = this._accept(s, seq, item);
    if (arrival === "overflow" && this._startPull(group)) this.stats.gapPulls++;
    this._settle(s, arrival === "in-order");
  }

  /**
   * Section 5.8: drop a duplicate, deliver the next seq and what it
   * uncovers, hold the rest. Returns `duplicate`, `in-order`, `held` or
   * `overflow` (held, the highest held message dropped for a pull to bring).
   */
  _accept(s, seq, item) {
    if (seq <= s.mark || s.held.has(seq)) {
      if (item !== OWN) {
        this.stats.duplicates++;
        // The server pushed again what this device holds: it missed the ack.
        if (!item.pulled && seq <= s.mark) s.reack = true;
      }
      return "duplicate";
    }
    if (seq === s.mark + 1n) {
      this._deliver(s, seq, item);
      let next;
      while (s.held.has((next = s.mark + 1n))) {
        const held = s.held.get(next);
        s.held.delete(next);
        this._deliver(s, next, held);
      }
      return "in-order";
    }
    if (item !== OWN) this.stats.held++;
    if (s.held.size >= this.options.maxHeld) {
      let top = 0n;
      for (const k of s.held.keys()) top = max(top, k);
      if (top > seq) {
        s.held.delete(top);
        s.held.set(seq, item);
      }
      return "overflow";
    }
    s.held.set(seq, item);
    return "held";
  }

  _deliver(s, seq, item) {
    s.mark = seq;
    if (item === OWN) return;
    this.stats.messages++;
    const body = item.body;
    this._emit("message", {
      group: s.group, seq, from: item.from, to: item.to, msgId: item.msgId, time: item.time,
      body, text: utf8Decoder.decode(body), own: item.from === this.user, pulled: item.pulled,
    });
  }

  /** Moves the mark up over seqs this device will not get, delivering what that uncovers. */
  _raiseMark(s, seq) {
    if (seq <= s.mark) return;
    s.mark = seq;
    for (const k of [...s.held.keys()]) if (k <= seq) s.held.delete(k);
    let next;
    while (s.held.has((next = s.mark + 1n))) {
      const held = s.held.get(next);
      s.held.delete(next);
      this._deliver(s, next, held);
    }
  }

  _lowerMark(s, seq) {
    if (seq >= s.mark) return;
    s.mark = seq;
    s.acked = min(s.acked, seq);
    s.confirmed = min(s.confirmed, seq);
    s.held.clear();
    s.reack = false;
  }

  /**
   * After a change to a stream: (re)arm its gap timer, and ack at once
   * after `ackEvery` deliveries or arm the ack timer. `advanced`: the mark
   * moved, so a gap still open is a new one.
   */
  _settle(s, advanced) {
    if (!this._live()) return; // timers run while logged in; login settles every stream
    const o = this.options;
    if (s.held.size === 0 || s.pull) {
      clearTimeout(s.gapTimer);
      s.gapTimer = null;
    } else if (advanced || !s.gapTimer) {
      clearTimeout(s.gapTimer);
      s.gapTimer = setTimeout(() => {
        s.gapTimer = null;
        if (s.held.size > 0 && this._live() && this._startPull(s.group)) this.stats.gapPulls++;
      }, o.gapTimeoutMs);
    }
    // While a pull runs, its next sync:R is the ack.
    if (s.pull || !s.owesAck()) return;
    if (s.mark - s.acked >= BigInt(o.ackEvery)) {
      this._sendAck(s);
    } else if (!s.ackTimer) {
      s.ackTimer = setTimeout(() => {
        s.ackTimer = null;
        if (!s.pull && s.owesAck() && this._live()) this._sendAck(s);
      }, s.group === 0n ? o.ackDelayMs : o.groupAckDelayMs);
    }
  }

  _sendAck(s) {
    clearTimeout(s.ackTimer);
    s.ackTimer = null;
    s.acked = s.mark;
    s.reack = false;
    this.stats.acksSent++;
    this._write(encode.ackR(s.group, s.mark));
  }

  /** Starts a pull of a stream unless one runs; its first sync:R goes out if logged in. */
  _startPull(group) {
    const s = this._stream(group);
    if (s.pull) return false;
    s.pull = { after: 0n, sent: false };
    clearTimeout(s.gapTimer);
    s.gapTimer = null;
    if (this._live()) this._sendPage(s);
    return true;
  }

  /** The next sync:R of the pull: it asks from the mark, and so acknowledges it. */
  _sendPage(s) {
    s.pull.after = s.mark;
    s.pull.sent = true;
    s.acked = max(s.acked, s.mark);
    s.reack = false;
    clearTimeout(s.ackTimer);
    s.ackTimer = null;
    this.stats.syncRequests++;
    this._write(encode.syncR(s.group, s.mark, this.options.syncLimit));
  }

  _onPage(p) {
    const s = this._stream(p.group);
    const answers = s.pull !== null && s.pull.sent && s.pull.after === p.after;
    let advanced = false;
    if (answers) {
      s.confirmed = max(s.confirmed, min(p.after, p.head));
      // Where history starts (5.8): seqs between `after` and the first
      // entry, or up to the head of an empty page, are not there for us.
      const start = p.entries.length > 0 ? p.entries[0].seq - 1n : p.head;
      if (start > max(s.mark, p.after)) {
        this._raiseMark(s, start);
        advanced = true;
      }
    }
    let overflow = false;
    for (const e of p.entries) {
      const arrival = this._accept(s, e.seq, { ...e, group: p.group, pulled: true });
      if (arrival === "in-order") advanced = true;
      else if (arrival === "overflow") overflow = true;
    }
    let step = "unsolicited";
    if (answers) step = p.entries.length === 0 ? "done" : s.mark > s.pull.after ? "next" : "stalled";
    if (step === "next") {
      this._sendPage(s);
    } else if (step === "done" || step === "stalled") {
      // A stalled pull (entries that moved nothing) would stall again if
      // repeated at once; the gap timer retries it.
      s.pull = null;
      this._initial?.streams.delete(s.group);
      this._emit("syncdone", { group: s.group });
    }
    if (overflow && step !== "stalled" && this._startPull(s.group)) this.stats.gapPulls++;
    this._settle(s, advanced);
    this._checkInitial();
  }

  _onUnread(u) {
    this._unreadPending = false;
    this._emit("unread", u);
    if (this.options.pullGroupsWithNews) {
      for (const e of u.entries) {
        if (e.group === 0n || e.lastSeq <= this.mark(e.group)) continue;
        const s = this._stream(e.group);
        if (s.pull || this._startPull(e.group)) this._initial?.streams.add(e.group);
      }
    }
    if (this._initial) this._initial.unread = false;
    this._checkInitial();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

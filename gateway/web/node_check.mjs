// Checks imgate.js in Node 20: `node --experimental-websocket gateway/web/node_check.mjs`
// (from the repository root, with target/release/imgate built).
//
// Part 1 drives the client against a scripted fake server (exact bytes of
// protocol.md section 7, gaps, re-pushes, retransmission, receipts, a broken
// message, reconnection with resume, heartbeat and dead server, kicks).
// Part 2 starts a real gateway on loopback ports with a WebSocket listener
// and runs two and three users against it. Everything stops by itself.

import { Client, Kind, splitFrames } from "./imgate.js";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import assert from "node:assert/strict";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.IMGATE_BIN ?? join(here, "../../target/release/imgate");
const TCP_PORT = 17410;
const WS_PORT = 17411;

let gateway = null;
let dataDir = null;
function cleanup() {
  if (gateway && gateway.exitCode === null) gateway.kill("SIGKILL");
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}
const hardStop = setTimeout(() => {
  console.error("FAIL: the check ran out of time");
  cleanup();
  process.exit(2);
}, 120_000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hex = (s) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g), (h) => parseInt(h, 16));
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The next `type` event whose detail passes `pred`. */
function once(client, type, pred = () => true, timeout = 3000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeout} ms`));
    }, timeout);
    const off = client.on(type, (d) => {
      if (!pred(d)) return;
      clearTimeout(t);
      off();
      resolve(d);
    });
  });
}

function collect(client, type) {
  const out = [];
  client.on(type, (d) => out.push(d));
  return out;
}

async function until(cond, timeout, what) {
  const end = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ---- a scripted fake server ---------------------------------------------

/** Builds a server frame from [type, value] fields. */
function sframe(kind, fields, flags = 0) {
  const size = { u8: 1, u16: 2, u32: 4, u64: 8 };
  const len = fields.reduce((n, [t, v]) => n + (t === "bytes" ? v.length : size[t]), 0);
  const b = new Uint8Array(8 + len);
  const v = new DataView(b.buffer);
  v.setUint32(0, 4 + len);
  v.setUint8(4, 1);
  v.setUint8(5, kind);
  v.setUint16(6, flags);
  let o = 8;
  for (const [t, x] of fields) {
    if (t === "u8") v.setUint8(o, x);
    else if (t === "u16") v.setUint16(o, x);
    else if (t === "u32") v.setUint32(o, x);
    else if (t === "u64") v.setBigUint64(o, BigInt(x));
    else b.set(x, o);
    o += t === "bytes" ? x.length : size[t];
  }
  return b;
}
const enc = new TextEncoder();
const S = {
  loginOk: ({ user = 1001n, hb = 30000, head = 0n, maxFrame = 65536 } = {}) =>
    sframe(Kind.LOGIN_OK, [["u64", user], ["u32", 1], ["u32", hb], ["u64", Date.now()], ["u64", head],
      ["u32", maxFrame], ["u64", 77n], ["u32", 1000], ["u32", 2000], ["u32", 10]]),
  msgA: (msgId, seq, ownSeq, group = 0n) =>
    sframe(Kind.MSG_A, [["u64", msgId], ["u64", group], ["u64", seq], ["u64", ownSeq], ["u64", Date.now()]]),
  msgN: (seq, from, to, msgId, text, retry = false) =>
    sframe(Kind.MSG_N, [["u64", 0n], ["u64", seq], ["u64", from], ["u64", to], ["u64", msgId], ["u64", Date.now()],
      ["bytes", enc.encode(text)]], retry ? 1 : 0),
  page: (group, after, head, entries) =>
    sframe(Kind.SYNC_PAGE, [["u64", group], ["u64", after], ["u64", head], ["u16", entries.length],
      ...entries.flatMap(([seq, from, to, msgId, text]) => {
        const body = enc.encode(text);
        return [["u64", seq], ["u64", from], ["u64", to], ["u64", msgId], ["u64", Date.now()], ["u32", body.length], ["bytes", body]];
      })]),
  unread: () => sframe(Kind.UNREAD_A, []),
  ackN: (peer, seq) => sframe(Kind.ACK_N, [["u64", peer], ["u64", 0n], ["u64", seq]]),
  readN: (reader, peer, seq) => sframe(Kind.READ_N, [["u64", reader], ["u64", 0n], ["u64", peer], ["u64", seq]]),
  pong: (nonce) => sframe(Kind.PONG, [["u64", nonce]]),
  kick: (reason, text) => sframe(Kind.KICK, [["u8", reason], ["bytes", enc.encode(text)]]),
  error: (code, refKind, refId, text) =>
    sframe(Kind.ERROR, [["u16", code], ["u8", refKind], ["u64", refId], ["bytes", enc.encode(text)]]),
};

function makeFakeWebSocket(sockets) {
  return class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.binaryType = "blob";
      this.inbox = [];
      this.wake = null;
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 1);
    }
    send(bytes) {
      const copy = new Uint8Array(bytes).slice();
      const [f] = splitFrames(copy.buffer);
      this.inbox.push({ kind: f.kind, flags: f.flags, body: f.body, bytes: copy });
      this.wake?.();
    }
    close() {
      this.readyState = 3;
    }
    /** Server side: sends frames in one WebSocket message. */
    push(...frames) {
      const total = frames.reduce((n, f) => n + f.length, 0);
      const buf = new Uint8Array(total);
      let o = 0;
      for (const f of frames) {
        buf.set(f, o);
        o += f.length;
      }
      this.onmessage?.({ data: buf.buffer });
    }
    /** The next frame of `kind` the client sent (others stay queued). */
    async next(kind, timeout = 2000) {
      const end = Date.now() + timeout;
      for (;;) {
        const i = this.inbox.findIndex((f) => f.kind === kind);
        if (i >= 0) return this.inbox.splice(i, 1)[0];
        const left = end - Date.now();
        if (left <= 0) throw new Error(`the client sent no 0x${kind.toString(16)} within ${timeout} ms`);
        await new Promise((r) => {
          this.wake = r;
          setTimeout(r, left);
        });
      }
    }
    none(kind) {
      return !this.inbox.some((f) => f.kind === kind);
    }
  };
}

const u64At = (f, o) => f.body.getBigUint64(o);

async function mockChecks() {
  const sockets = [];
  const FakeWebSocket = makeFakeWebSocket(sockets);
  const c = new Client({
    url: "ws://mock/ws", user: 1001n, device: 1, token: "tok", WebSocket: FakeWebSocket,
    firstMsgId: 0x119b76daa801n, rtoMs: 300, maxRtoMs: 300, backoffMinMs: 50, backoffMaxMs: 100,
  });
  const messages = collect(c, "message");
  const states = collect(c, "state");
  const online = c.connect();
  await until(() => sockets.length === 1, 1000, "a socket");
  let ws = sockets[0];

  // login: user, device, resume 0, token.
  const login = await ws.next(Kind.LOGIN);
  assert.equal(toHex(login.bytes), "0000001b" + "01010000" + "00000000000003e9" + "00000001" + "0000000000000000" + toHex(enc.encode("tok")));
  ws.push(S.loginOk({ head: 41n }));
  await ws.next(Kind.UNREAD_R);
  const sync0 = await ws.next(Kind.SYNC_R);
  assert.deepEqual([u64At(sync0, 0), u64At(sync0, 8), sync0.body.getUint16(16)], [0n, 0n, 100]);
  assert.equal(c.state, "syncing");
  ws.push(S.unread(), S.page(0n, 0n, 41n, [])); // nothing stored: history starts at 42
  await online;
  assert.equal(c.state, "online");
  assert.equal(c.mark(), 41n);
  let ack = await ws.next(Kind.ACK_R);
  assert.deepEqual([u64At(ack, 0), u64At(ack, 8)], [0n, 41n]);
  console.log("ok   mock: login bytes, login:ok, initial pull with the history rule, state online");

  // Section 7.1: msg:R and msg:A, byte for byte.
  const id1 = c.send(1002n, "hi");
  assert.equal(id1, 0x119b76daa801n);
  const m1 = await ws.next(Kind.MSG_R);
  assert.equal(toHex(m1.bytes), toHex(hex(`00 00 00 1e 01 10 00 00  00 00 11 9b 76 da a8 01
    00 00 00 00 00 00 00 00  00 00 00 00 00 00 03 ea 68 69`)));
  const sent1 = once(c, "sent");
  ws.push(hex(`00 00 00 2c 01 11 00 00  00 00 11 9b 76 da a8 01
    00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 07
    00 00 00 00 00 00 00 2a  00 00 01 9b 76 da a8 7b`));
  const s1 = await sent1;
  assert.deepEqual([s1.msgId, s1.seq, s1.ownSeq, s1.time], [id1, 7n, 42n, 1767225600123]);
  assert.equal(c.mark(), 42n); // the own copy is held, not a gap
  ack = await ws.next(Kind.ACK_R);
  assert.equal(u64At(ack, 8), 42n);
  console.log("ok   mock: msg:R and msg:A match protocol.md 7.1 byte for byte; own_seq counts as held and is acked");

  // A push, a gap, the pull that fills it, a re-push.
  ws.push(S.msgN(43n, 1002n, 1001n, 500n, "yo"));
  ack = await ws.next(Kind.ACK_R);
  assert.equal(u64At(ack, 8), 43n);
  ws.push(S.msgN(45n, 1002n, 1001n, 502n, "b"));
  await sleep(100);
  assert.deepEqual(messages.map((m) => m.seq), [43n]);
  const gapSync = await ws.next(Kind.SYNC_R, 1000);
  assert.equal(u64At(gapSync, 8), 43n);
  ws.push(S.page(0n, 43n, 45n, [[44n, 1002n, 1001n, 501n, "a"], [45n, 1002n, 1001n, 502n, "b"]]));
  const nextSync = await ws.next(Kind.SYNC_R);
  assert.equal(u64At(nextSync, 8), 45n); // asking for the next page acknowledges this one
  const done = once(c, "syncdone");
  ws.push(S.page(0n, 45n, 45n, []));
  await done;
  assert.deepEqual(messages.map((m) => `${m.seq}:${m.text}`), ["43:yo", "44:a", "45:b"]);
  ws.push(S.msgN(45n, 1002n, 1001n, 502n, "b", true));
  ack = await ws.next(Kind.ACK_R);
  assert.equal(u64At(ack, 8), 45n);
  assert.equal(messages.length, 3);
  assert.ok(ws.none(Kind.ACK_R));
  console.log("ok   mock: gap held, pulled after 200 ms, delivered once in order; a re-push is dropped and acked again");

  // Receipts, two frames in one WebSocket message.
  const delivered = collect(c, "delivered");
  const read = collect(c, "read");
  ws.push(S.ackN(1002n, 7n), S.readN(1002n, 1001n, 7n));
  assert.deepEqual(delivered.map((d) => d.msgId), [id1]);
  assert.deepEqual(read.map((d) => d.msgId), [id1]);

  // Retransmission with the same msg id and the RETRY flag.
  const id2 = c.send(1002n, "again");
  const first = await ws.next(Kind.MSG_R);
  assert.equal(first.flags, 0);
  const t0 = Date.now();
  const again = await ws.next(Kind.MSG_R, 1000);
  assert.equal(again.flags, 1);
  assert.ok(Date.now() - t0 >= 250);
  assert.equal(toHex(again.bytes.slice(8)), toHex(first.bytes.slice(8)));
  assert.equal(u64At(again, 0), id2);
  ws.push(S.msgA(id2, 8n, 46n));
  await until(() => c.pending === 0, 500, "msg:A");

  // A receipt before the msg:A it covers (section 5.4).
  ws.push(S.ackN(1002n, 9n)); // covers id2 (seq 8) and the next one
  assert.deepEqual(delivered.map((d) => d.msgId), [id1, id2]);
  const id3 = c.send(1002n, "early");
  await ws.next(Kind.MSG_R);
  ws.push(S.msgA(id3, 9n, 47n));
  assert.deepEqual(delivered.map((d) => d.msgId), [id1, id2, id3]);
  console.log("ok   mock: ack:N/read:N in one message; msg:R retransmitted with RETRY and the same id; early receipt applied at msg:A");

  // A message ending in half a frame: reconnect, resume, resend pending.
  const id4 = c.send(1002n, "pending");
  await ws.next(Kind.MSG_R);
  const disconnect = once(c, "disconnect");
  ws.push(S.ackN(1002n, 9n).slice(0, 20));
  const d = await disconnect;
  assert.match(d.why, /bad frame/);
  assert.equal(c.state, "offline");
  await until(() => sockets.length === 2, 1000, "a new socket");
  ws = sockets[1];
  const login2 = await ws.next(Kind.LOGIN);
  assert.equal(u64At(login2, 12), 47n); // resume = the inbox mark
  ws.push(S.loginOk({ head: 47n }));
  const resent = await ws.next(Kind.MSG_R);
  assert.deepEqual([u64At(resent, 0), resent.flags], [id4, 1]);
  await ws.next(Kind.UNREAD_R);
  ws.push(S.unread(), S.msgA(id4, 10n, 48n));
  await until(() => c.state === "online" && c.pending === 0, 500, "online again");
  assert.ok(ws.none(Kind.SYNC_R));
  console.log("ok   mock: a broken message drops the connection; reconnect resumes at 47 and resends the pending msg:R with RETRY");

  // Kick replaced: surfaced, and no reconnection.
  const kick = once(c, "kick");
  ws.push(S.kick(2, "logged in elsewhere"));
  const k = await kick;
  assert.deepEqual([k.name, k.text], ["replaced", "logged in elsewhere"]);
  assert.equal(c.state, "closed");
  await sleep(300);
  assert.equal(sockets.length, 2);
  assert.equal(messages.length, 3);
  assert.deepEqual(states.slice(0, 4).map((s) => s.state), ["connecting", "syncing", "online", "offline"]);
  console.log("ok   mock: kick(replaced) surfaces as an event and the client stays closed");

  // Heartbeat and a dead server.
  const sockets2 = [];
  const h = new Client({
    url: "ws://mock/ws", user: 1001n, token: "tok", WebSocket: makeFakeWebSocket(sockets2),
    backoffMinMs: 5000, unreadOnLogin: false,
  });
  h.connect();
  await until(() => sockets2.length === 1, 1000, "a socket");
  const hw = sockets2[0];
  await hw.next(Kind.LOGIN);
  hw.push(S.loginOk({ hb: 200 }));
  const ping = await hw.next(Kind.PING, 400);
  const pong = once(h, "pong");
  hw.push(S.pong(u64At(ping, 0)));
  await pong;
  const dead = await once(h, "disconnect", () => true, 1500);
  assert.match(dead.why, /nothing from the server/);
  assert.equal(h.state, "offline");
  h.close();
  console.log("ok   mock: ping after an idle heartbeat, pong event; 3 silent heartbeats drop the connection");

  // A refused login with a fixed token: stop, and connect() rejects.
  const sockets3 = [];
  const b = new Client({ url: "ws://mock/ws", user: 1001n, token: "bad", WebSocket: makeFakeWebSocket(sockets3) });
  const refused = b.connect().then(() => "resolved", (e) => `rejected: ${e.message}`);
  await until(() => sockets3.length === 1, 1000, "a socket");
  await sockets3[0].next(Kind.LOGIN);
  const err = once(b, "error");
  sockets3[0].push(S.error(6, Kind.LOGIN, 0n, "bad token"));
  assert.equal((await err).name, "bad_token");
  sockets3[0].onclose?.({ code: 1000, reason: "" });
  assert.match(await refused, /^rejected/);
  assert.equal(b.state, "closed");
  console.log("ok   mock: error(bad_token) surfaces, the client stops, connect() rejects");

  // A silent message carries NO_PUSH (0x0004), with RETRY when resent.
  const sockets4 = [];
  const q = new Client({
    url: "ws://mock/ws", user: 1001n, token: "tok", WebSocket: makeFakeWebSocket(sockets4),
    rtoMs: 200, maxRtoMs: 200, unreadOnLogin: false,
  });
  const qOnline = q.connect();
  await until(() => sockets4.length === 1, 1000, "a socket");
  const qw = sockets4[0];
  await qw.next(Kind.LOGIN);
  qw.push(S.loginOk({ head: 0n }));
  await qOnline;
  const silentId = q.send(1002n, "typing", { noPush: true });
  const silent = await qw.next(Kind.MSG_R);
  assert.equal(silent.flags, 4);
  const silentAgain = await qw.next(Kind.MSG_R, 1000);
  assert.deepEqual([u64At(silentAgain, 0), silentAgain.flags], [silentId, 5]);
  q.close();
  console.log("ok   mock: send(..., { noPush: true }) sets NO_PUSH, kept with RETRY on the retransmission");
}

// ---- against a real gateway ------------------------------------------------

function token(user, device = 1) {
  return execFileSync(BIN, ["token", "--user", String(user), "--device", String(device)], { encoding: "utf8" }).trim();
}

async function waitPort(port, timeout) {
  const end = Date.now() + timeout;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`port ${port} did not open`);
    await sleep(100);
  }
}

async function liveChecks() {
  dataDir = mkdtempSync(join(tmpdir(), "imgate-webcheck-"));
  gateway = spawn(BIN, [
    "--listen", `127.0.0.1:${TCP_PORT}`, "--ws-listen", `127.0.0.1:${WS_PORT}`, "--no-metrics",
    "--data-dir", dataDir, "--workers", "1", "--tick-ms", "100", "--heartbeat-ms", "500",
    "--log-level", "warn",
  ], { stdio: ["ignore", "inherit", "inherit"] });
  console.log(`gateway pid ${gateway.pid}, ws://127.0.0.1:${WS_PORT}/ws`);
  await waitPort(WS_PORT, 10_000);
  const url = `ws://127.0.0.1:${WS_PORT}/ws`;
  const make = (user, extra = {}) => new Client({ url, user, device: 1, token: token(user), ...extra });

  // Two users: message, stored, delivered, read.
  const c1 = make(1);
  const c2 = make(2);
  const got1 = collect(c1, "message");
  await Promise.all([c1.connect(), c2.connect()]);
  const sent = once(c2, "sent");
  const delivered = once(c2, "delivered");
  const id = c2.send(1n, "hello from 2");
  const s = await sent;
  assert.equal(s.msgId, id);
  await until(() => got1.length === 1, 2000, "user 1 to receive");
  assert.deepEqual([got1[0].from, got1[0].seq, got1[0].text, got1[0].msgId], [2n, s.seq, "hello from 2", id]);
  const dv = await delivered;
  assert.equal(dv.msgId, id);
  const read = once(c2, "read");
  assert.equal(c1.markRead(2n, got1[0].seq), true);
  assert.equal((await read).msgId, id);
  console.log(`ok   live: 2 -> 1 "${got1[0].text}": msg:A seq ${s.seq} own_seq ${s.ownSeq}, then delivered, then read`);

  // Heartbeat: idle for 2.5 s with a 500 ms heartbeat: pings, no kick.
  const kicks = collect(c1, "kick");
  const drops = collect(c1, "disconnect");
  const pings0 = c1.stats.pings;
  await sleep(2500);
  assert.ok(c1.stats.pings - pings0 >= 3, `pings: ${c1.stats.pings - pings0}`);
  assert.equal(kicks.length + drops.length, 0);
  assert.equal(c1.state, "online");
  console.log(`ok   live: ${c1.stats.pings - pings0} pings in 2.5 s idle with heartbeat_ms 500, no kick`);

  // Offline user 3: 120 messages wait, then one pull in pages of 25.
  const N = 120;
  const ids = [];
  const stored = collect(c2, "sent");
  for (let i = 0; i < N; i++) ids.push(c2.send(3n, `m${i}`));
  await until(() => stored.length >= N, 10_000, "120 msg:A");
  const c3 = make(3, { syncLimit: 25 });
  const got3 = collect(c3, "message");
  await c3.connect();
  await sleep(500); // anything extra (a duplicate, a late push) would show now
  assert.equal(got3.length, N);
  got3.forEach((m, i) => {
    assert.equal(m.seq, BigInt(i + 1));
    assert.equal(m.text, `m${i}`);
    assert.equal(m.msgId, ids[i]);
    assert.equal(m.pulled, true);
  });
  assert.equal(c3.stats.syncRequests, Math.ceil(N / 25) + 1);
  assert.equal(c3.mark(), BigInt(N));
  console.log(`ok   live: user 3 came online after ${N} messages: all ${N} once, seq 1..${N} in order, in ${c3.stats.syncRequests} sync:R (pages of 25 + the empty one)`);
  c3.close();

  // User 3 again on the same device resuming at 120: nothing more; a new message is pushed.
  const c3b = make(3, { inboxMark: BigInt(N) });
  const got3b = collect(c3b, "message");
  await c3b.connect();
  c2.send(3n, "after resume");
  await until(() => got3b.length === 1, 2000, "the push");
  await sleep(200);
  assert.deepEqual(got3b.map((m) => [m.seq, m.text, m.pulled]), [[BigInt(N + 1), "after resume", false]]);
  assert.equal(c3b.stats.syncRequests, 0);
  console.log("ok   live: resume at 120 pulls nothing, the next message is pushed as seq 121");
  c3b.close();

  // Reconnection: user 1's socket breaks; a message sent meanwhile arrives once, and one it sent while offline goes out.
  const got1Before = got1.length;
  const back = once(c1, "state", (x) => x.state === "online", 5000);
  c1._ws.close(); // the transport breaks under the client
  await once(c1, "state", (x) => x.state === "offline", 2000);
  const idOffline = c1.send(2n, "sent while offline");
  const from2 = c2.send(1n, "while 1 was away");
  const stored1 = once(c1, "sent", (x) => x.msgId === idOffline, 5000);
  await back;
  await stored1;
  await until(() => got1.length === got1Before + 1, 3000, "the message sent while away");
  await sleep(300);
  assert.equal(got1.length, got1Before + 1);
  assert.deepEqual([got1.at(-1).msgId, got1.at(-1).text], [from2, "while 1 was away"]);
  console.log(`ok   live: after a broken socket user 1 reconnected (resume ${c1._resumeSent}), got the missed message once, and its offline send was stored`);

  // Group: create, send, receive.
  const g = await c1.groupRequest("create", 0n, [2n]);
  assert.deepEqual(g.members, [1n, 2n]);
  const gmsg = once(c2, "message", (m) => m.group === g.group);
  const gid = c1.sendGroup(g.group, "to the group");
  const gm = await gmsg;
  assert.deepEqual([gm.from, gm.msgId, gm.text, gm.seq], [1n, gid, "to the group", 1n]);
  console.log(`ok   live: group ${g.group} created with members 1, 2; a group message reached 2`);

  // A second login of user 1 device 1 kicks the first: surfaced, no reconnection.
  const kick = once(c1, "kick");
  const c1b = make(1);
  await c1b.connect();
  const k = await kick;
  assert.equal(k.name, "replaced");
  await sleep(1500);
  assert.equal(c1.state, "closed");
  assert.equal(c1b.state, "online");
  console.log("ok   live: kick(replaced) reached the older connection, which stays closed; the new one stays online");

  // A bad token.
  const bad = new Client({ url, user: 9, token: "v1.9.1.1.00" });
  const errors = collect(bad, "error");
  const outcome = await bad.connect().then(() => "online", () => "rejected");
  assert.equal(outcome, "rejected");
  assert.equal(errors[0]?.name, "bad_token");
  console.log("ok   live: a bad token gives error(bad_token) and the client stops");

  c1b.close();
  c2.close();
}

try {
  await mockChecks();
  await liveChecks();
  console.log("all checks passed");
} catch (err) {
  console.error("FAIL:", err);
  process.exitCode = 1;
} finally {
  cleanup();
  clearTimeout(hardStop);
}

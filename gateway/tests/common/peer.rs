//! A real client over a real socket, driven by the codec's client state
//! machine: what an application built on imgate-codec does.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use imgate_codec::client::{Client, Config, Dest, Event};

use super::token;

pub struct Peer {
    pub client: Client,
    stream: Option<TcpStream>,
    addr: SocketAddr,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Every event seen, in order.
    pub events: Vec<Event>,
}

impl Peer {
    /// Connects and logs in; waits for login:ok.
    pub fn login(addr: SocketAddr, user: u64, device: u32) -> Peer {
        Peer::with(addr, user, device, |_| {})
    }

    pub fn with(addr: SocketAddr, user: u64, device: u32, f: impl FnOnce(&mut Config)) -> Peer {
        let mut cfg = Config::new(user, device, token(user, device));
        cfg.first_msg_id = (u64::from(device) << 44) | 1;
        cfg.ack_delay = Duration::from_millis(5);
        cfg.group_ack_delay = Duration::from_millis(5);
        f(&mut cfg);
        let client = Client::new(cfg).expect("client config");
        let mut p = Peer {
            client,
            stream: None,
            addr,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            events: Vec::new(),
        };
        p.reconnect();
        p
    }

    /// Opens a new connection (after a disconnect) and logs in again.
    pub fn reconnect(&mut self) {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        self.stream = Some(s);
        self.rbuf.clear();
        self.client.connect(Instant::now());
        // A new login:ok, not one from an earlier connection.
        let before = self.events.len();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.events[before..]
            .iter()
            .any(|e| matches!(e, Event::LoggedIn { .. }))
        {
            assert!(
                self.stream.is_some(),
                "the connection dropped before login:ok; events {:?}",
                &self.events[before..]
            );
            assert!(
                Instant::now() < deadline,
                "no login:ok; state {:?}, events {:?}",
                self.client.state(),
                &self.events[before..]
            );
            self.pump(Duration::from_millis(20));
        }
    }

    /// Drops the connection without a goodbye.
    pub fn drop_connection(&mut self) {
        self.stream = None;
        self.client.handle_disconnect();
    }

    pub fn send_to(&mut self, to: u64, body: &[u8]) -> u64 {
        let id = self
            .client
            .send(Dest::User(to), Bytes::copy_from_slice(body), Instant::now())
            .expect("send");
        self.flush();
        id
    }

    pub fn send_group(&mut self, group: u64, body: &[u8]) -> u64 {
        let id = self
            .client
            .send(
                Dest::Group(group),
                Bytes::copy_from_slice(body),
                Instant::now(),
            )
            .expect("send");
        self.flush();
        id
    }

    pub fn flush(&mut self) {
        self.wbuf.clear();
        self.client.poll_transmit(&mut self.wbuf);
        if !self.wbuf.is_empty()
            && let Some(s) = self.stream.as_mut()
            && s.write_all(&self.wbuf).is_err()
        {
            // The server went away; the next pump sees it.
            self.stream = None;
            self.client.handle_disconnect();
        }
    }

    /// Runs the client for up to `t`, collecting events. Returns false if
    /// the server closed the connection.
    pub fn pump(&mut self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        loop {
            let now = Instant::now();
            self.client.handle_timeout(now);
            self.flush();
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if now >= deadline {
                return true;
            }
            let Some(s) = self.stream.as_mut() else {
                return false;
            };
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |d| d.min(deadline));
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            s.set_read_timeout(Some(wait)).expect("timeout");
            let mut tmp = [0u8; 65536];
            match s.read(&mut tmp) {
                Ok(0) => {
                    self.stream = None;
                    self.client.handle_disconnect();
                    while let Some(e) = self.client.poll_event() {
                        self.events.push(e);
                    }
                    return false;
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&tmp[..n]);
                    self.client
                        .handle_input(&mut self.rbuf, Instant::now())
                        .expect("server frames decode");
                }
                // EINTR: io_uring runtimes in this process signal threads.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    self.stream = None;
                    self.client.handle_disconnect();
                    return false;
                }
            }
        }
    }

    /// Pumps until an event matches, within 5 s; returns it.
    pub fn wait(&mut self, mut pred: impl FnMut(&Event) -> bool, what: &str) -> Event {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = 0;
        loop {
            if let Some(e) = self.events[seen..].iter().find(|e| pred(e)) {
                return e.clone();
            }
            seen = self.events.len();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events: {:?}",
                self.events
            );
            self.pump(Duration::from_millis(20));
        }
    }

    /// The messages delivered to the application, in order: (group, seq,
    /// from, body).
    pub fn messages(&self) -> Vec<(u64, u64, u64, Bytes)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    group,
                    seq,
                    from,
                    body,
                    ..
                } => Some((*group, *seq, *from, body.clone())),
                _ => None,
            })
            .collect()
    }
}

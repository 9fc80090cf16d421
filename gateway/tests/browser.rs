//! The browser client in a real browser: the gateway serves its demo page
//! and ES module, headless Chromium runs them, and the test drives the page
//! through its DOM over the DevTools protocol, as a person would: type,
//! click, read what is shown.
//!
//! A: two users online chat both ways; the sender's message goes
//! `sending` → `stored` → `delivered` → `read`. B: a user who was offline
//! opens the page and is shown what was sent to her meanwhile, each message
//! once and in order. The pages run on a 500 ms heartbeat and must stay
//! online, with nothing in their logs, to the end. Over TLS: A again, from
//! an `https://` page over `wss://`.
//!
//! Needs Chromium (see `common/cdp.rs` for where it is looked for); without
//! one the test is skipped, except under `CI=true`, where it fails. A
//! screenshot and each page's final DOM are written under
//! `CARGO_TARGET_TMPDIR`, also when the test fails.

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use cdp::{Cdp, Chromium, Page};
use common::{Gw, token};
use serde::Deserialize;
use serde_json::Value;

const ALICE: u64 = 1001;
const BOB: u64 = 1002;
const CAROL: u64 = 1003;

/// How long any one thing the page should do may take.
const WAIT: Duration = Duration::from_secs(30);
/// The heartbeat the gateway announces: short, so that a page whose
/// heartbeat does not keep it online is kicked while the test runs.
const HEARTBEAT_MS: u64 = 500;
/// Long enough for a page without a heartbeat to be kicked (three silent
/// intervals), with a margin.
const HOLD: Duration = Duration::from_millis(3 * HEARTBEAT_MS + 700);
/// How long a list that looks complete is watched for late duplicates.
const SETTLE: Duration = Duration::from_millis(500);

/// The order a sent message's `data-status` moves in.
const STATUSES: [&str; 4] = ["sending", "stored", "delivered", "read"];

#[test]
fn the_demo_page_chats_and_pulls_offline_messages_in_chromium() {
    let Some(binary) = Chromium::find() else {
        return;
    };
    let t0 = Instant::now();
    let gw = Gw::start(|c| {
        c.ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.demo_path = Some("/demo".into());
        c.heartbeat_ms = HEARTBEAT_MS;
    });
    let chromium = Chromium::launch(&binary);
    let mut demo = Demo {
        cdp: chromium.connect(),
        base: format!("http://{}/demo/", gw.ws_addr()),
        tabs: Vec::new(),
        t0,
    };
    demo.note("gateway and chromium started");

    // A: alice and bob, both online.
    let alice = demo.open("alice", ALICE, 1, BOB);
    let bob = demo.open("bob", BOB, 1, ALICE);
    demo.wait_online(alice);
    demo.wait_online(bob);
    demo.note("alice and bob online");
    demo.chat(alice, bob, "hello from alice");
    demo.chat(bob, alice, "hello from bob");
    demo.note("alice and bob chatted both ways");

    // B: alice (a second device) writes to carol, who is offline.
    let alice2 = demo.open("alice-2", ALICE, 2, CAROL);
    demo.wait_online(alice2);
    demo.track_statuses(alice2);
    let texts: Vec<String> = (1..=3).map(|i| format!("offline {i}")).collect();
    let mut ids = Vec::new();
    for text in &texts {
        let id = demo.send(alice2, text);
        let status = demo.wait_status(alice2, &id, |s| s != "sending");
        if status != "stored" {
            demo.fail(&format!(
                "{text:?} to offline carol went from sending to {status:?}, not stored"
            ));
        }
        ids.push(id);
    }
    demo.note("3 messages stored for carol");
    let carol = demo.open("carol", CAROL, 1, ALICE);
    demo.bring_to_front(carol);
    demo.wait_online(carol);
    demo.check_offline_pull(carol, ALICE, &texts);
    for id in &ids {
        demo.wait_status(alice2, id, |s| s == "read");
        demo.check_statuses(alice2, id);
    }
    demo.note("carol pulled the 3 in order; alice-2 saw them read");

    // Every page stays online through several heartbeat timeouts.
    thread::sleep(HOLD);
    for tab in [alice, bob, alice2, carol] {
        let shown = demo.shown(tab);
        if shown.state.as_deref() != Some("online") || !shown.log.trim().is_empty() {
            demo.fail(&format!(
                "{} is not quietly online after {HOLD:?}",
                demo.tabs[tab].name
            ));
        }
    }
    demo.note("all pages still online with empty logs");

    let png = demo
        .cdp
        .screenshot(&demo.tabs[bob].page.clone())
        .unwrap_or_else(|e| demo.fail(&format!("screenshot: {e}")));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-demo.png");
    fs::write(&shot, png).expect("write the screenshot");
    eprintln!("screenshot of bob's page: {}", shot.display());
    demo.save_doms();
    demo.note("done");
}

/// The same page from an `https://` origin, so that it opens `wss://`:
/// the gateway terminates TLS on its WebSocket listener, and Chromium
/// trusts the test's certificate by its public key alone.
#[test]
fn the_demo_page_chats_over_tls_in_chromium() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let Some(binary) = Chromium::find() else {
        return;
    };
    let t0 = Instant::now();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("names")
        .self_signed(&key)
        .expect("certificate");
    let dir = std::env::temp_dir().join(format!("imgate-browser-tls-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("dir");
    fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
    fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
    let gw = Gw::start(|c| {
        c.ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.demo_path = Some("/demo".into());
        c.heartbeat_ms = HEARTBEAT_MS;
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
    });
    let spki = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&key),
    ));
    let chromium = Chromium::launch_with(
        &binary,
        &[format!("--ignore-certificate-errors-spki-list={spki}")],
    );
    let mut demo = Demo {
        cdp: chromium.connect(),
        base: format!("https://{}/demo/", gw.ws_addr()),
        tabs: Vec::new(),
        t0,
    };
    let alice = demo.open("alice-tls", ALICE, 1, BOB);
    let bob = demo.open("bob-tls", BOB, 1, ALICE);
    demo.wait_online(alice);
    demo.wait_online(bob);
    demo.note("alice and bob online over wss");
    demo.chat(alice, bob, "hello over tls");
    demo.chat(bob, alice, "and back");
    demo.note("chatted both ways over wss");
    // Two page loads (the page, the module) and two WebSockets, at least.
    let handshakes: u64 =
        gw.0.as_ref()
            .expect("running")
            .metrics()
            .cores
            .iter()
            .map(|c| c.tls_handshakes.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
    assert!(handshakes >= 4, "{handshakes} TLS handshakes");
    let _ = fs::remove_dir_all(&dir);
}

/// Where a tab is in [`Demo::tabs`].
type Tab = usize;

/// The browser with the demo pages open in it.
struct Demo {
    cdp: Cdp,
    /// `http://<ws_addr>/demo/`.
    base: String,
    tabs: Vec<Opened>,
    t0: Instant,
}

/// An open demo page and who it is logged in as.
struct Opened {
    /// Used in messages and file names.
    name: String,
    user: u64,
    device: u32,
    page: Page,
}

/// A received message as the page shows it (`li.in`).
#[derive(Debug, Deserialize)]
struct Incoming {
    from: Option<String>,
    seq: Option<String>,
    body: Option<String>,
}

/// A sent message as the page shows it (`li.out`), with the statuses it
/// was seen in (see [`TRACK_STATUSES`]).
#[derive(Debug, Deserialize)]
struct Outgoing {
    id: Option<String>,
    status: Option<String>,
    body: Option<String>,
    statuses: Vec<String>,
}

/// What a page shows apart from its messages.
#[derive(Debug, Deserialize)]
struct Shown {
    state: Option<String>,
    log: String,
}

const INCOMING: &str = "[...document.querySelectorAll('#messages li.in')].map(li => ({
    from: li.getAttribute('data-from'),
    seq: li.getAttribute('data-seq'),
    body: li.querySelector('.body')?.textContent ?? null,
}))";

const OUTGOING: &str = "[...document.querySelectorAll('#messages li.out')].map(li => ({
    id: li.getAttribute('data-msg-id'),
    status: li.getAttribute('data-status'),
    body: li.querySelector('.body')?.textContent ?? null,
    statuses: li.__imgateStatuses ?? [],
}))";

const SHOWN: &str = "({
    state: document.querySelector('#state')?.textContent ?? null,
    log: document.querySelector('#log')?.textContent ?? '',
})";

/// Records every `data-status` each `li.out` takes, on the element, so a
/// test can check the order without polling fast enough to see each one.
/// Mutation records come in batches, after the task that made them (two
/// receipts handled in one task change the status twice before the
/// observer runs): each change's old value is recorded from its record,
/// and the value after the batch at its end.
const TRACK_STATUSES: &str = "(() => {
    if (window.__imgateTracking) return true;
    window.__imgateTracking = true;
    const list = document.querySelector('#messages');
    if (!list) throw new Error('no #messages');
    const note = (li, s) => {
        const seen = (li.__imgateStatuses ??= []);
        if (s !== null && seen[seen.length - 1] !== s) seen.push(s);
    };
    const now = li => note(li, li.getAttribute('data-status'));
    list.querySelectorAll('li.out').forEach(now);
    new MutationObserver(records => {
        const touched = new Set();
        for (const r of records) {
            if (r.type === 'attributes') {
                if (!r.target.matches?.('li.out')) continue;
                note(r.target, r.oldValue);
                touched.add(r.target);
            } else {
                for (const n of r.addedNodes) if (n.matches?.('li.out')) touched.add(n);
            }
        }
        touched.forEach(now);
    }).observe(list, { subtree: true, childList: true, attributes: true,
                       attributeOldValue: true, attributeFilter: ['data-status'] });
    return true;
})()";

impl Demo {
    /// Opens the demo page logged in as `user`/`device`, chatting with
    /// `peer`, and waits until it has loaded.
    fn open(&mut self, name: &str, user: u64, device: u32, peer: u64) -> Tab {
        let tok = token(user, device);
        let tok = std::str::from_utf8(&tok).expect("a token is text");
        let url = format!(
            "{}?user={user}&device={device}&token={}&peer={peer}",
            self.base,
            query_value(tok)
        );
        let page = self
            .cdp
            .open(&url)
            .unwrap_or_else(|e| self.fail(&format!("open {name}'s page: {e}")));
        self.tabs.push(Opened {
            name: name.into(),
            user,
            device,
            page,
        });
        let tab = self.tabs.len() - 1;
        // Until the page has replaced the blank document it starts from,
        // an evaluation may land in a context that is going away: retry.
        let mut last = String::new();
        let base = self.base.clone();
        self.wait(&format!("{name}'s page to load"), |d| {
            let expr = "[location.href, document.readyState]";
            match d.cdp.eval(&d.tabs[tab].page, expr) {
                Ok(v) => {
                    let href = v.get(0).and_then(Value::as_str).unwrap_or("");
                    let ready = v.get(1).and_then(Value::as_str) == Some("complete");
                    Ok((href.starts_with(&base) && ready).then_some(()))
                }
                Err(e) => {
                    last = e;
                    Ok(None)
                }
            }
        });
        if !last.is_empty() {
            eprintln!("{name}'s page while loading: {last}");
        }
        tab
    }

    /// Waits until the page says `online` (logged in, initial sync done).
    fn wait_online(&mut self, tab: Tab) {
        let what = format!("{}'s #state to be online", self.tabs[tab].name);
        self.wait(&what, |d| {
            let shown: Shown = d.query(tab, SHOWN)?;
            Ok((shown.state.as_deref() == Some("online")).then_some(()))
        });
    }

    /// `from` sends `text` to `to`, which shows it; the sender's status
    /// goes all the way to `read`, in order.
    fn chat(&mut self, from: Tab, to: Tab, text: &str) {
        self.track_statuses(from);
        let id = self.send(from, text);
        let sender = self.tabs[from].user;
        // The receiver reads it: its tab comes to the front.
        self.bring_to_front(to);
        self.wait_incoming(to, sender, text);
        self.wait_status(from, &id, |s| s == "read");
        self.check_statuses(from, &id);
        // The receiver shows it once, however many pushes and syncs came.
        thread::sleep(SETTLE);
        let shown = self.incoming(to);
        let n = shown
            .iter()
            .filter(|m| m.body.as_deref() == Some(text))
            .count();
        if n != 1 {
            self.fail(&format!("{} shows {text:?} {n} times", self.tabs[to].name));
        }
    }

    /// Switches to `tab`, as a person would to read it; the page marks
    /// what it shows as read only while it is visible.
    fn bring_to_front(&mut self, tab: Tab) {
        let page = self.tabs[tab].page.clone();
        if let Err(e) = self.cdp.bring_to_front(&page) {
            self.fail(&format!("bring {} to the front: {e}", self.tabs[tab].name));
        }
    }

    fn track_statuses(&mut self, tab: Tab) {
        self.eval(tab, TRACK_STATUSES);
    }

    /// Types `text` into `#text`, clicks `#send`, and returns the
    /// `data-msg-id` of the `li.out` the page adds for it.
    fn send(&mut self, tab: Tab, text: &str) -> String {
        let literal = Value::from(text).to_string();
        let before = self.outgoing(tab).len();
        self.eval(
            tab,
            &format!(
                "(() => {{
                    const input = document.querySelector('#text');
                    const button = document.querySelector('#send');
                    if (!input || !button) throw new Error('no #text or #send');
                    input.value = {literal};
                    input.dispatchEvent(new Event('input', {{ bubbles: true }}));
                    button.click();
                    return true;
                }})()"
            ),
        );
        let what = format!("{}'s li.out for {text:?}", self.tabs[tab].name);
        self.wait(&what, |d| {
            let out = d.outgoing(tab);
            Ok(out
                .into_iter()
                .skip(before)
                .find(|m| m.body.as_deref() == Some(text))
                .and_then(|m| m.id))
        })
    }

    /// Waits until the sent message `id` has a status that `done` accepts;
    /// returns that status.
    fn wait_status(&mut self, tab: Tab, id: &str, done: impl Fn(&str) -> bool) -> String {
        let what = format!(
            "the status of {}'s message {id} to move on",
            self.tabs[tab].name
        );
        self.wait(&what, |d| {
            let m = d.sent(tab, id)?;
            Ok(m.status.filter(|s| done(s)))
        })
    }

    /// The statuses message `id` was seen in start at `sending` and only
    /// move forward.
    fn check_statuses(&mut self, tab: Tab, id: &str) {
        let seen = match self.sent(tab, id) {
            Ok(m) => m.statuses,
            Err(e) => self.fail(&e),
        };
        let ranks: Option<Vec<usize>> = seen
            .iter()
            .map(|s| STATUSES.iter().position(|k| k == s))
            .collect();
        let ok = ranks.is_some_and(|r| r.first() == Some(&0) && r.is_sorted());
        if !ok {
            self.fail(&format!(
                "{}'s message {id} went through {seen:?}, not in the order {STATUSES:?}",
                self.tabs[tab].name
            ));
        }
        eprintln!(
            "{}: message {id}: {}",
            self.tabs[tab].name,
            seen.join(" → ")
        );
    }

    /// Waits until the page shows `text` received from `from`.
    fn wait_incoming(&mut self, tab: Tab, from: u64, text: &str) {
        let what = format!("{} to show {text:?} from {from}", self.tabs[tab].name);
        let from = from.to_string();
        self.wait(&what, |d| {
            let shown: Vec<Incoming> = d.query(tab, INCOMING)?;
            Ok(shown
                .iter()
                .any(|m| m.from.as_ref() == Some(&from) && m.body.as_deref() == Some(text))
                .then_some(()))
        });
    }

    /// The page shows exactly `texts` from `from`, in order, each once,
    /// with increasing `data-seq`.
    fn check_offline_pull(&mut self, tab: Tab, from: u64, texts: &[String]) {
        let name = self.tabs[tab].name.clone();
        self.wait(&format!("{name} to show {} messages", texts.len()), |d| {
            Ok((d.incoming(tab).len() >= texts.len()).then_some(()))
        });
        thread::sleep(SETTLE);
        let shown = self.incoming(tab);
        let bodies: Vec<&str> = shown
            .iter()
            .map(|m| m.body.as_deref().unwrap_or("(no .body)"))
            .collect();
        if bodies != texts {
            self.fail(&format!("{name} shows {bodies:?}, not {texts:?}"));
        }
        let from = from.to_string();
        if let Some(m) = shown.iter().find(|m| m.from.as_ref() != Some(&from)) {
            self.fail(&format!("{name} shows {m:?}, not from {from}"));
        }
        let seqs: Option<Vec<u64>> = shown
            .iter()
            .map(|m| m.seq.as_deref()?.parse().ok())
            .collect();
        match seqs {
            Some(s) if s.windows(2).all(|w| w[0] < w[1]) => {
                eprintln!("{name}: pulled {} messages, seqs {s:?}", s.len());
            }
            _ => self.fail(&format!("{name}'s data-seq do not increase: {shown:?}")),
        }
    }

    fn incoming(&mut self, tab: Tab) -> Vec<Incoming> {
        match self.query(tab, INCOMING) {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    fn outgoing(&mut self, tab: Tab) -> Vec<Outgoing> {
        match self.query(tab, OUTGOING) {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    fn shown(&mut self, tab: Tab) -> Shown {
        match self.query(tab, SHOWN) {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    /// The sent message `id`; an error if the page shows none or several.
    fn sent(&mut self, tab: Tab, id: &str) -> Result<Outgoing, String> {
        let mut all: Vec<Outgoing> = self.query(tab, OUTGOING)?;
        all.retain(|m| m.id.as_deref() == Some(id));
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(format!(
                "{} shows {n} li.out with data-msg-id {id}",
                self.tabs[tab].name
            )),
        }
    }

    /// `expr`'s value in the page, as `T`.
    fn query<T: for<'de> Deserialize<'de>>(&mut self, tab: Tab, expr: &str) -> Result<T, String> {
        let v = self.cdp.eval(&self.tabs[tab].page, expr)?;
        serde_json::from_value(v.clone())
            .map_err(|e| format!("{}: unexpected {v} from the page: {e}", self.tabs[tab].name))
    }

    fn eval(&mut self, tab: Tab, expr: &str) -> Value {
        let page = self.tabs[tab].page.clone();
        self.cdp
            .eval(&page, expr)
            .unwrap_or_else(|e| self.fail(&format!("{}: {e}", self.tabs[tab].name)))
    }

    /// Polls `probe` for up to [`WAIT`]; fails the test, with what the
    /// pages show, when it runs out or the probe errs.
    fn wait<T>(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&mut Demo) -> Result<Option<T>, String>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        match cdp::wait_until(deadline, what, || probe(self)) {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    fn note(&self, what: &str) {
        eprintln!("[{:>7.3}s] {what}", self.t0.elapsed().as_secs_f64());
    }

    /// Fails the test with `why` and what each page shows; the pages'
    /// DOMs are saved first.
    fn fail(&mut self, why: &str) -> ! {
        let mut report = format!("{why}\n");
        for i in 0..self.tabs.len() {
            let page = self.tabs[i].page.clone();
            let expr = "({
                url: location.href,
                state: document.querySelector('#state')?.textContent ?? null,
                log: document.querySelector('#log')?.textContent ?? null,
                messages: document.querySelector('#messages')?.innerHTML ?? null,
            })";
            let shown = match self.cdp.eval(&page, expr) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
                Err(e) => format!("(unreadable: {e})"),
            };
            let _ = writeln!(report, "--- {}: {shown}", self.tabs[i].name);
        }
        self.save_doms();
        panic!("{report}");
    }

    /// Writes each page's DOM as `browser-demo-<user>[-<device>].html`
    /// under `CARGO_TARGET_TMPDIR`.
    fn save_doms(&mut self) {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for i in 0..self.tabs.len() {
            let Opened {
                user, device, page, ..
            } = &self.tabs[i];
            let file = match device {
                1 => format!("browser-demo-{user}.html"),
                d => format!("browser-demo-{user}-{d}.html"),
            };
            let path = dir.join(file);
            match self.cdp.eval(page, "document.documentElement.outerHTML") {
                Ok(Value::String(html)) => match fs::write(&path, html) {
                    Ok(()) => eprintln!("DOM of {}: {}", self.tabs[i].name, path.display()),
                    Err(e) => eprintln!("write {}: {e}", path.display()),
                },
                other => eprintln!("no DOM for {}: {other:?}", self.tabs[i].name),
            }
        }
    }
}

/// `s` percent-encoded for a URL's query, all but the unreserved
/// characters escaped.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

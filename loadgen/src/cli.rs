//! The command line: common flags, one subcommand per scenario.
//!
//! Every flag has a default that runs on a laptop against a gateway started
//! with no arguments. The parsed command line is also the run's parameter
//! record in `--json` (the secret excepted).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Serialize, Serializer};

use crate::placement::Placement;

/// imgate load generator: real connections against an imgate gateway,
/// open-loop schedules, latency percentiles corrected for coordinated
/// omission, and a ledger that proves nothing was lost or duplicated.
///
/// Exit status: 0 when the run held, 1 when a message was lost or delivered
/// twice (or the capacity objective could not be met at the lowest rate),
/// 2 on a usage error, 3 when the run could not be carried out (gateway
/// unreachable, a scenario the backend refuses).
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "imgate-loadgen", version, about, long_about)]
pub struct Cli {
    /// Settings shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Flags shared by every scenario.
#[derive(Args, Debug, Clone, Serialize)]
pub struct Common {
    /// Gateway addresses: one host:port, or several (comma-separated, or
    /// the flag repeated) for a cluster's nodes. `--placement` decides which
    /// connection goes where; a connection that cannot reach its target
    /// moves to the next one in the list.
    #[arg(
        long,
        value_name = "HOST:PORT[,...]",
        value_delimiter = ',',
        default_value = "127.0.0.1:7000",
        global = true
    )]
    #[serde(serialize_with = "comma_list")]
    pub target: Vec<SocketAddr>,
    /// Which target each connection goes to, when there are several. It
    /// depends on the connection's index alone, so every --shard places a
    /// user alike.
    #[arg(long, value_enum, default_value_t = Placement::Spread, global = true)]
    pub placement: Placement,
    /// Gateway metrics endpoints (host:port, comma-separated, one per
    /// gateway process) for RSS and CPU readings, summed over them, or
    /// `none`.
    #[arg(
        long,
        value_name = "HOST:PORT[,...]|none",
        default_value = "127.0.0.1:9100",
        global = true
    )]
    pub metrics: String,
    /// Worker threads, one monoio runtime each; 0 = one per CPU.
    #[arg(long, default_value_t = 0, global = true)]
    pub threads: usize,
    /// Source addresses to spread connections over: a count N
    /// (127.0.0.1 ..= 127.0.0.N) or a comma-separated list. Each address
    /// gives about 28,000 local ports.
    #[arg(long, default_value = "1", global = true)]
    pub source_ips: String,
    /// This process's share of the scenario, I/N with I from 0: N processes
    /// run the same scenario on disjoint users.
    #[arg(long, default_value = "0/1", global = true)]
    pub shard: Shard,
    /// Secret the gateway checks tokens with.
    #[arg(long, env = "IMGATE_SECRET", default_value = imgate_codec::token::DEV_SECRET, global = true, hide_default_value = true)]
    #[serde(skip)]
    pub secret: String,
    /// I/O driver: auto (io_uring if the kernel has it), uring, epoll.
    #[arg(long, value_enum, default_value_t = Driver::Auto, global = true)]
    pub driver: Driver,
    /// How connections carry frames: tcp, or ws (binary WebSocket messages
    /// after an upgrade at --ws-path; point --target at the gateway's
    /// ws_listen).
    #[arg(long, value_enum, default_value_t = Transport::Tcp, global = true)]
    pub transport: Transport,
    /// Request path of the WebSocket upgrade.
    #[arg(long, default_value = "/ws", global = true)]
    pub ws_path: String,
    /// Speak TLS (1.2 or 1.3) to the gateway: over tcp the frames, over ws
    /// the upgrade and the messages travel in TLS. Needs --tls-ca or
    /// --tls-insecure.
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM file of the certificates to trust with --tls: the CA that
    /// signed the gateway's certificate, or that certificate itself when
    /// it is self-signed.
    #[arg(long, value_name = "PEM", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// With --tls, accept any certificate without verifying it: the traffic
    /// is encrypted but the gateway is not authenticated. For benchmarks
    /// against self-signed certificates only.
    #[arg(long, global = true)]
    pub tls_insecure: bool,
    /// With --tls, the name the gateway's certificate must carry (a DNS
    /// name, also sent as SNI, or an IP address); default: the address of
    /// the target each connection goes to.
    #[arg(long, value_name = "NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// First user id: connection i of the scenario logs in as base + i
    /// (device 1); shards own disjoint ranges of i.
    #[arg(long, default_value_t = 1_000_000, global = true)]
    pub user_base: u64,
    /// Message body size in bytes (at least 32).
    #[arg(long, default_value_t = 64, global = true)]
    pub size: usize,
    /// Connections being opened at once, per thread.
    #[arg(long, default_value_t = 256, global = true)]
    pub connect_concurrency: usize,
    /// Attempts after a failed first connection before it counts as failed.
    #[arg(long, default_value_t = 3, global = true)]
    pub connect_retries: u32,
    /// Messages awaiting msg:A per connection before sends wait.
    #[arg(long, default_value_t = 1024, global = true)]
    pub max_in_flight: usize,
    /// Do not track delivered receipts (saves work when the backend sends none).
    #[arg(long, global = true)]
    pub no_receipts: bool,
    /// After sending stops, wait this long for the last answers before
    /// counting anything as lost.
    #[arg(long, default_value = "5s", global = true)]
    pub drain: Dur,
    /// Warn when the p99 schedule lag (actual send - scheduled send) is
    /// above this. The pacer's timer has 1 ms resolution.
    #[arg(long, default_value = "2ms", global = true)]
    pub lag_warn: Dur,
    /// Write every figure and the run's parameters as JSON.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Write percentile distributions (.hgrm) into this directory.
    #[arg(long, global = true)]
    pub hgrm: Option<PathBuf>,
    /// Write a percentile plot of the latencies (SVG).
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// How connections carry frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Frames straight on TCP.
    Tcp,
    /// Frames in binary WebSocket messages.
    Ws,
}

/// I/O driver of the worker threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// io_uring where available, else epoll.
    Auto,
    /// io_uring only.
    Uring,
    /// epoll only.
    Epoll,
}

/// The scenarios.
#[derive(Subcommand, Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Scenario {
    /// N connections log in and hold, heartbeating: connect and login rate,
    /// the gateway's memory per connection and CPU while idle.
    Idle(IdleArgs),
    /// P sender/receiver pairs at an aggregate rate: ack, delivery and
    /// receipt latency, losses, duplicates.
    Chat(ChatArgs),
    /// G groups of S members, messages at a rate: latency to every member
    /// and to the last member of each message.
    Group(GroupArgs),
    /// Messages to offline users, who then log in and page through sync:
    /// pull throughput and completeness.
    Offline(OfflineArgs),
    /// Every connection drops and reconnects at once: time until all are
    /// logged in again, anything lost.
    Storm(StormArgs),
    /// Chat while a fraction of connections is cut at random and
    /// reconnects: nothing may be lost or duplicated.
    Chaos(ChaosArgs),
    /// Steps the chat rate up until the latency objective breaks; reports
    /// the highest rate that held.
    Capacity(CapacityArgs),
}

impl Scenario {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Idle(_) => "idle",
            Scenario::Chat(_) => "chat",
            Scenario::Group(_) => "group",
            Scenario::Offline(_) => "offline",
            Scenario::Storm(_) => "storm",
            Scenario::Chaos(_) => "chaos",
            Scenario::Capacity(_) => "capacity",
        }
    }
}

/// `idle`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct IdleArgs {
    /// Connections (over all shards).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: u32,
    /// How long to hold them after all logged in.
    #[arg(long, default_value = "30s")]
    pub hold: Dur,
    /// Pause after the last login before the "after" reading.
    #[arg(long, default_value = "2s")]
    pub settle: Dur,
}

/// Traffic flags shared by chat-like scenarios.
#[derive(Args, Debug, Clone, Serialize)]
pub struct Traffic {
    /// Aggregate rate, messages per second (over all shards).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Measured time.
    #[arg(long, default_value = "20s")]
    pub duration: Dur,
    /// Sending before measuring starts.
    #[arg(long, default_value = "3s")]
    pub warmup: Dur,
}

/// `chat`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct ChatArgs {
    /// Sender/receiver pairs (over all shards).
    #[arg(long, short = 'p', default_value_t = 1000)]
    pub pairs: u32,
    /// Rate and durations.
    #[command(flatten)]
    pub traffic: Traffic,
}

/// `group`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct GroupArgs {
    /// Groups (over all shards).
    #[arg(long, short = 'g', default_value_t = 10)]
    pub groups: u32,
    /// Members per group; every member sends.
    #[arg(long, short = 's', default_value_t = 20)]
    pub members: u32,
    /// Rate and durations (rate: messages sent per second, before fan-out).
    #[command(flatten)]
    pub traffic: Traffic,
}

/// `offline`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct OfflineArgs {
    /// Offline receivers, each with its own online sender.
    #[arg(long, short = 'u', default_value_t = 100)]
    pub users: u32,
    /// Messages per receiver.
    #[arg(long, short = 'm', default_value_t = 500)]
    pub messages: u32,
    /// Aggregate send rate, messages per second.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Longest wait for the receivers' pulls.
    #[arg(long, default_value = "120s")]
    pub pull_timeout: Dur,
}

/// `storm`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct StormArgs {
    /// Connections (pairs of sender and receiver; over all shards).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: u32,
    /// Background chat rate during the storm, messages per second (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Storms, one after the other.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Pause before each storm.
    #[arg(long, default_value = "2s")]
    pub pause: Dur,
}

/// `chaos`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct ChaosArgs {
    /// Sender/receiver pairs (over all shards).
    #[arg(long, short = 'p', default_value_t = 200)]
    pub pairs: u32,
    /// Rate and durations.
    #[command(flatten)]
    pub traffic: Traffic,
    /// Fraction of connections cut at each cut.
    #[arg(long, default_value_t = 0.05)]
    pub cut_fraction: f64,
    /// Time between cuts.
    #[arg(long, default_value = "1s")]
    pub cut_every: Dur,
    /// Longest delay before a cut connection reconnects (random below it).
    #[arg(long, default_value = "500ms")]
    pub reconnect_max: Dur,
}

/// `capacity`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct CapacityArgs {
    /// Sender/receiver pairs (over all shards).
    #[arg(long, short = 'p', default_value_t = 1000)]
    pub pairs: u32,
    /// First rate, messages per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub start: f64,
    /// Rate added per step.
    #[arg(long, default_value_t = 5_000.0)]
    pub step: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max: f64,
    /// Measured time per step.
    #[arg(long, default_value = "5s")]
    pub step_duration: Dur,
    /// Sending at a step's rate before its measurement starts.
    #[arg(long, default_value = "1s")]
    pub settle: Dur,
    /// The objective: this percentile of delivery latency ...
    #[arg(long, default_value_t = 99.0)]
    pub percentile: f64,
    /// ... at or below this.
    #[arg(long, default_value = "10ms")]
    pub objective: Dur,
}

/// `I/N`: this process is shard I of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u32,
    /// Shards.
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 0/2")?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("bad shard index `{i}`"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad shard count `{n}`"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Serialize for Shard {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Shard {
    /// The items `0..total` this shard owns (a contiguous range).
    pub fn range(&self, total: u32) -> std::ops::Range<u32> {
        let per = total / self.count;
        let extra = total % self.count;
        let start = self.index * per + self.index.min(extra);
        let len = per + u32::from(self.index < extra);
        start..start + len
    }
}

/// A list as one comma-separated string, as it was given.
fn comma_list<S: Serializer, T: fmt::Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = v.iter().map(ToString::to_string).collect();
    s.serialize_str(&text.join(","))
}

/// A duration on the command line: `250ms`, `30s`, `2m`, `1h`, or plain
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let v: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
        let secs = match unit {
            "" | "s" => v,
            "ms" => v / 1000.0,
            "us" => v / 1e6,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            _ => return Err(format!("bad duration unit in `{s}` (use ms, s, m or h)")),
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("bad duration `{s}`"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("250ms".parse::<Dur>(), Ok(Dur(Duration::from_millis(250))));
        assert_eq!("2".parse::<Dur>(), Ok(Dur(Duration::from_secs(2))));
        assert_eq!("1.5s".parse::<Dur>(), Ok(Dur(Duration::from_millis(1500))));
        assert_eq!("2m".parse::<Dur>(), Ok(Dur(Duration::from_secs(120))));
        assert!("2 weeks".parse::<Dur>().is_err());
        assert!("ms".parse::<Dur>().is_err());
    }

    #[test]
    fn shards_partition_without_overlap() {
        assert!("2/2".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        for n in 1..5u32 {
            let mut all = Vec::new();
            for i in 0..n {
                all.extend(Shard { index: i, count: n }.range(10));
            }
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_command_line_parses() {
        let c = Cli::try_parse_from([
            "imgate-loadgen",
            "chat",
            "--pairs",
            "3",
            "--rate",
            "100",
            "--target",
            "127.0.0.1:1",
        ])
        .expect("parses");
        assert_eq!(c.common.target, vec!["127.0.0.1:1".parse().expect("addr")]);
        assert_eq!(c.common.placement, Placement::Spread);
        match c.scenario {
            Scenario::Chat(a) => assert_eq!(a.pairs, 3),
            other => panic!("{other:?}"),
        }
    }

    fn targets(args: &[&str]) -> Result<Vec<SocketAddr>, clap::Error> {
        let mut argv = vec!["imgate-loadgen", "idle"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.common.target)
    }

    #[test]
    fn a_target_list_parses_from_commas_and_repeats() {
        let a: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.2:7001".parse().expect("addr");
        let c: SocketAddr = "[::1]:7002".parse().expect("addr");
        assert_eq!(targets(&[]).expect("default"), vec![a]);
        assert_eq!(
            targets(&["--target", "127.0.0.1:7000,127.0.0.2:7001"]).expect("commas"),
            vec![a, b]
        );
        assert_eq!(
            targets(&[
                "--target",
                "127.0.0.1:7000",
                "--target",
                "127.0.0.2:7001,[::1]:7002"
            ])
            .expect("repeated"),
            vec![a, b, c]
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:7000,",
            "x:1",
            "127.0.0.1:7000,,127.0.0.2:7001",
        ] {
            let e = targets(&["--target", bad]).expect_err(bad);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn the_target_list_is_recorded_as_given() {
        let c = Cli::try_parse_from([
            "imgate-loadgen",
            "chat",
            "--target",
            "127.0.0.1:7000,127.0.0.1:7001",
            "--placement",
            "round-robin",
        ])
        .expect("parses");
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["common"]["target"], "127.0.0.1:7000,127.0.0.1:7001");
        assert_eq!(v["common"]["placement"], "round-robin");
        assert!(Cli::try_parse_from(["imgate-loadgen", "chat", "--placement", "scatter"]).is_err());
    }
}

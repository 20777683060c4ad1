//! The listener's bounds as `interop-server` flags (`ListenerConfig`: connections,
//! handshakes, message sizes, the receive and send budgets, the receive deadline, pings; and
//! of its connections' `Limits`, the send deadline). Each flag left out keeps the library's
//! default, which `bunite-rpc info` prints.

use std::time::Duration;

use bunite_rpc::transport::{ByteBudget, ListenerConfig, ReceiveDeadline};
use bunite_rpc::Limits;

use crate::call::parse_duration;

/// Flags that set a listener's bounds.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListenerArgs {
    /// Live connections at once, per listener (more wait to be accepted).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// WebSocket handshakes in progress at once.
    #[arg(long, value_name = "N")]
    max_handshakes: Option<usize>,
    /// How long one WebSocket handshake may take (500ms, 10s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    handshake_timeout: Option<Duration>,
    /// The largest inbound message (bytes, or with a suffix: 64KiB, 16MiB), announced in
    /// each connection's hello; a larger one gets a goaway `resource_exhausted`
    /// (`max_frame_bytes`).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    max_bytes: Option<usize>,
    /// Bytes of messages being received across all connections of both listeners;
    /// reading pauses above it.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    receive_budget: Option<usize>,
    /// Bytes waiting to be written to peers across all connections of both listeners,
    /// beyond 16 KiB each; a connection that cannot pay for its answers stops reading its
    /// peer until they are written, and an answer longer than the budget can pay for (and
    /// 256 KiB more, `--answer-overdraft`) is refused with `resource_exhausted`.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    send_budget: Option<usize>,
    /// How far one connection's answers may go beyond what the send budget can pay for
    /// (default 256 KiB): less holds less per connection whose peer does not read, and
    /// refuses more answers while the budget is held (0: any the budget cannot pay for).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    answer_overdraft: Option<usize>,
    /// Once a message has started, the time it has, before one second per 256 KiB of it
    /// that arrives is added; a peer that falls behind is let go (`off`: no deadline).
    #[arg(long, value_name = "DURATION|off", value_parser = parse_optional_duration)]
    receive_deadline: Option<OrOff>,
    /// While the send budget pays for what waits for a peer, the time it has to take it,
    /// before one second per 256 KiB it takes is added; a peer that falls behind is let go
    /// (`off`: no deadline).
    #[arg(long, value_name = "DURATION|off", value_parser = parse_optional_duration)]
    send_deadline: Option<OrOff>,
    /// WebSocket pings after this long without a frame from the peer (`off`: none).
    #[arg(long, value_name = "DURATION|off", value_parser = parse_optional_duration)]
    ping_interval: Option<OrOff>,
}

impl ListenerArgs {
    /// The library's defaults with these flags applied.
    pub fn config(&self) -> ListenerConfig {
        let mut config = ListenerConfig::default();
        if let Some(n) = self.max_connections {
            config = config.max_connections(n);
        }
        if let Some(n) = self.max_handshakes {
            config = config.max_handshakes(n);
        }
        if let Some(t) = self.handshake_timeout {
            config = config.handshake_timeout(t);
        }
        if let Some(n) = self.max_bytes {
            config = config.max_bytes(n);
        }
        if let Some(n) = self.receive_budget {
            config = config.receive_budget(ByteBudget::new(n));
        }
        if let Some(n) = self.send_budget {
            config = config.send_budget(ByteBudget::new(n));
        }
        if let Some(n) = self.answer_overdraft {
            let budget = config.send_budget.clone().with_answer_overdraft(n);
            config = config.send_budget(budget);
        }
        if let Some(grace) = self.receive_deadline {
            config = config.receive_deadline(grace.deadline());
        }
        if let Some(OrOff(interval)) = self.ping_interval {
            config = config.ping_interval(interval);
        }
        config
    }

    /// The library's connection limits with these flags applied.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(grace) = self.send_deadline {
            limits.send_deadline = grace.deadline();
        }
        limits
    }
}

/// The library's listener defaults, for `bunite-rpc info`.
pub fn describe_defaults() -> Vec<String> {
    let c = ListenerConfig::default();
    let deadline = match c.receive_deadline {
        Some(d) => format!("{:?} + 1 s per {} bytes arrived", d.grace, d.min_rate),
        None => "none".to_owned(),
    };
    vec![
        format!("listener max connections {}", c.max_connections),
        format!("listener max handshakes {}", c.max_handshakes),
        format!("listener handshake timeout {:?}", c.handshake_timeout),
        format!("listener receive budget {}", c.receive_budget.limit()),
        format!("listener send budget {}", c.send_budget.limit()),
        format!(
            "listener answer overdraft {}",
            c.send_budget.answer_overdraft()
        ),
        format!("listener receive deadline {deadline}"),
        format!(
            "listener ping interval {}",
            c.ping_interval
                .map_or("none".to_owned(), |d| format!("{d:?}"))
        ),
    ]
}

/// A byte count: digits, then optionally `K`/`KiB`, `M`/`MiB` or `G`/`GiB` (powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 4096, 64KiB or 16MiB"))?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(format!("unknown unit {unit:?}: use KiB, MiB or GiB")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A duration, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct OrOff(Option<Duration>);

impl OrOff {
    /// A deadline of this grace and the default rate, or none.
    fn deadline(self) -> Option<ReceiveDeadline> {
        let rate = ReceiveDeadline::default().min_rate;
        self.0.map(|grace| ReceiveDeadline::new(grace, rate))
    }
}

/// A duration, or `off` for none.
fn parse_optional_duration(text: &str) -> Result<OrOff, String> {
    match text {
        "off" | "none" => Ok(OrOff(None)),
        _ => parse_duration(text).map(|d| OrOff(Some(d))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        listener: ListenerArgs,
    }

    fn parse(args: &[&str]) -> ListenerArgs {
        let cli =
            Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).expect("parses");
        cli.listener
    }

    fn config(args: &[&str]) -> ListenerConfig {
        parse(args).config()
    }

    fn limits(args: &[&str]) -> Limits {
        parse(args).limits()
    }

    #[test]
    fn flags_left_out_keep_the_defaults() {
        let (got, want) = (config(&[]), ListenerConfig::default());
        assert_eq!(got.max_connections, want.max_connections);
        assert_eq!(got.max_bytes, want.max_bytes);
        assert_eq!(got.receive_budget.limit(), want.receive_budget.limit());
        assert_eq!(got.send_budget.limit(), want.send_budget.limit());
        assert_eq!(
            got.send_budget.answer_overdraft(),
            want.send_budget.answer_overdraft()
        );
        assert_eq!(got.receive_deadline, want.receive_deadline);
        assert_eq!(got.ping_interval, want.ping_interval);
    }

    #[test]
    fn flags_set_the_bounds() {
        let c = config(&[
            "--max-connections",
            "7",
            "--max-handshakes",
            "3",
            "--handshake-timeout",
            "2s",
            "--max-bytes",
            "64KiB",
            "--receive-budget",
            "16MiB",
            "--send-budget",
            "8MiB",
            "--answer-overdraft",
            "64KiB",
            "--receive-deadline",
            "5s",
            "--ping-interval",
            "off",
        ]);
        assert_eq!((c.max_connections, c.max_handshakes), (7, 3));
        assert_eq!(c.handshake_timeout, Duration::from_secs(2));
        assert_eq!(c.max_bytes, 64 * 1024);
        assert_eq!(c.receive_budget.limit(), 16 << 20);
        assert_eq!(c.send_budget.limit(), 8 << 20);
        assert_eq!(c.send_budget.answer_overdraft(), 64 << 10);
        let overdraft_alone = config(&["--answer-overdraft", "0"]).send_budget;
        assert_eq!(overdraft_alone.answer_overdraft(), 0);
        assert_eq!(
            overdraft_alone.limit(),
            ListenerConfig::default().send_budget.limit()
        );
        let d = c.receive_deadline.expect("a deadline");
        assert_eq!(d.grace, Duration::from_secs(5));
        assert_eq!(d.min_rate, ReceiveDeadline::default().min_rate);
        assert_eq!(c.ping_interval, None);
        assert_eq!(
            config(&["--receive-deadline", "off"]).receive_deadline,
            None
        );
    }

    #[test]
    fn the_send_deadline_flag_sets_the_connections_limit() {
        assert_eq!(limits(&[]), Limits::default());
        let d = limits(&["--send-deadline", "3s"])
            .send_deadline
            .expect("a deadline");
        assert_eq!(d.grace, Duration::from_secs(3));
        assert_eq!(d.min_rate, ReceiveDeadline::default().min_rate);
        assert_eq!(limits(&["--send-deadline", "off"]).send_deadline, None);
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("2K"), Ok(2048));
        assert_eq!(parse_bytes("3GiB"), Ok(3 << 30));
        assert!(parse_bytes("12kb").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes(&format!("{}GiB", usize::MAX)).is_err());
    }
}

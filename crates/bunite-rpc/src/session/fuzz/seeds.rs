//! The seed corpus of `session_ops`: short scripts, each a scenario a fuzzer would take long
//! to find from nothing (a bootstrap then a call, a stream with credit, caps returned and
//! released, cancels, deadlines, revocation, policy, hostile frames, small limits). The
//! ignored test `write_session_seed_corpus` writes them to `fuzz/corpus/session_ops`; the
//! other tests check that each still reaches what it is named for.

use super::{session_ops, Report};

/// Builds an input: the two config bytes, then operations as `(kind << 1) | side` and their
/// parameter bytes, in the order the harness reads them.
struct Script(Vec<u8>);

const A: u8 = 0;
const B: u8 = 1;

impl Script {
    fn new(config_a: u8, config_b: u8) -> Script {
        Script(vec![config_a, config_b])
    }

    fn op(mut self, side: u8, kind: u8, params: &[u8]) -> Script {
        self.0.push((kind << 1) | side);
        self.0.extend_from_slice(params);
        self
    }

    fn pump_all(self) -> Script {
        self.op(A, 21, &[])
    }

    /// `side` bootstraps `f.parent` (or `NAMES[name]`) without a version.
    fn bootstrap(self, side: u8, name: u8) -> Script {
        self.op(side, 3, &[name, 0])
    }

    /// `side` calls `METHODS[method]` on the held cap at `held` (of `n` held), with `flags`
    /// (1 parent, 2/4 deadline, 8 context) and undefined args.
    fn call(self, side: u8, method: u8, held: u8, flags: u8) -> Script {
        let mut p = vec![method, 4 + held, flags];
        if flags & 1 != 0 {
            p.push(0);
        }
        p.push(0); // args: undefined
        self.op(side, 1, &p)
    }

    /// `side` finishes its first live call run with outcome `kind` (0 value, 1 cap, 2 two
    /// caps in an array, 3 in a record, 4 the wrong cap, 5 an error, 6 a long string) and
    /// the outcome's parameter bytes.
    fn finish(self, side: u8, kind: u8, params: &[u8]) -> Script {
        let mut p = vec![0, 2, kind];
        p.extend_from_slice(params);
        self.op(side, 11, &p)
    }

    fn advance(self, step: u8) -> Script {
        self.op(A, 15, &[step])
    }

    fn bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Every seed, by name.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Default limits (in-flight and caps 1024), no policy, no hello timeout.
    let boot = || Script::new(0x0f, 0).pump_all().bootstrap(B, 0).pump_all();
    vec![
        (
            "call",
            boot()
                .call(B, 0, 0, 0)
                .pump_all()
                .finish(A, 0, &[1])
                .pump_all()
                .bytes(),
        ),
        (
            "stream",
            boot()
                .op(B, 2, &[0, 4, 0, 0]) // ticks on the held cap
                .pump_all()
                .op(A, 12, &[0, 8, 1, 1, 1, 1, 1, 1, 1, 1])
                .pump_all()
                .op(B, 6, &[0, 7])
                .pump_all()
                .op(A, 12, &[0, 5, 1, 1, 1, 1, 1])
                .op(A, 11, &[0, 0]) // the source ends
                .pump_all()
                .bytes(),
        ),
        (
            "caps",
            boot()
                .call(B, 4, 0, 0) // make
                .pump_all()
                .finish(A, 1, &[])
                .pump_all()
                .call(B, 9, 1, 0) // ping on the child
                .pump_all()
                .finish(A, 0, &[1])
                .call(B, 5, 0, 0) // many
                .pump_all()
                .finish(A, 2, &[])
                .pump_all()
                .op(B, 5, &[0])
                .op(B, 5, &[1])
                .pump_all()
                .bytes(),
        ),
        (
            "cancel",
            boot()
                .call(B, 1, 0, 0) // slow, keeps running on cancel
                .call(B, 0, 0, 0)
                .pump_all()
                .op(B, 4, &[1])
                .op(B, 4, &[2])
                .pump_all()
                .finish(A, 0, &[1])
                .pump_all()
                .bytes(),
        ),
        (
            // A pays from a budget of 4096 bytes, with a room half as large again as what
            // it will pay for: of four long results queued unread, the last is encoded and
            // then refused. Then from none: a stream's first value ends it.
            "refused-answers",
            boot()
                .op(A, 20, &[])
                .call(B, 0, 0, 0)
                .call(B, 0, 0, 0)
                .call(B, 0, 0, 0)
                .call(B, 0, 0, 0)
                .pump_all()
                .finish(A, 6, &[255, 0])
                .finish(A, 6, &[255, 0])
                .finish(A, 6, &[255, 0])
                .finish(A, 6, &[255, 0])
                .pump_all()
                .op(A, 20, &[])
                .op(A, 20, &[])
                .op(B, 2, &[0, 4, 0, 0]) // ticks on the held cap
                .pump_all()
                .op(A, 12, &[0, 1, 1])
                .pump_all()
                .bytes(),
        ),
        (
            "deadline",
            boot()
                .call(B, 0, 0, 4) // 10 ms
                .call(B, 2, 0, 6) // idempotent, 1 s
                .pump_all()
                .advance(5)
                .advance(7)
                .pump_all()
                .finish(A, 0, &[1])
                .pump_all()
                .bytes(),
        ),
        (
            "revoke",
            Script::new(0x0f, 0)
                .pump_all()
                .op(B, 3, &[1, 1]) // f.v version 1
                .pump_all()
                .op(A, 9, &[1]) // unserve f.v
                .call(B, 11, 0, 0)
                .pump_all()
                .call(B, 11, 0, 0)
                .bytes(),
        ),
        (
            "policy",
            Script::new(0x1f, 0)
                .pump_all()
                .bootstrap(B, 0)
                .bootstrap(B, 0)
                .pump_all()
                .op(A, 13, &[0, 0])
                .op(A, 13, &[0, 1])
                .pump_all()
                .bytes(),
        ),
        (
            "reused-id",
            boot()
                .call(B, 1, 0, 0)
                .pump_all()
                .op(B, 18, &[0, 0, 0, 4, 0, 0, 0]) // a call reusing a live id
                .pump_all()
                .bytes(),
        ),
        (
            "hostile-credit-and-drops",
            boot()
                .op(B, 2, &[1, 4, 0, 0]) // flood
                .pump_all()
                .op(B, 18, &[4, 0, 0, 5]) // credit u64::MAX
                .op(B, 18, &[6, 2, 4, 1, 4, 3]) // drop the parent's only reference, twice
                .op(A, 12, &[[0, 39].as_slice(), &[1; 39]].concat())
                .pump_all()
                .call(B, 0, 0, 0) // on a cap the hostile drop freed
                .pump_all()
                .bytes(),
        ),
        (
            "garbage",
            boot()
                .op(B, 19, &[3, 0xc1, 0x92, 0x01, 0x02, 0x03, 0x04])
                .bytes(),
        ),
        (
            "close-mid-call",
            boot()
                .call(B, 0, 0, 0)
                .op(B, 2, &[0, 4, 0, 0])
                .pump_all()
                .op(A, 16, &[0]) // close at once
                .pump_all()
                .call(B, 0, 0, 0)
                .bytes(),
        ),
        (
            "drain-mid-call",
            boot()
                .call(B, 0, 0, 0)
                .pump_all()
                .op(A, 16, &[2]) // drain, no grace: closes once the call is done
                .call(B, 0, 0, 0) // refused
                .pump_all()
                .bytes(),
        ),
        (
            "small-limits",
            Script::new(0x80, 0) // max_in_flight 1, max_caps 3, maxBytes 400
                .pump_all()
                .bootstrap(B, 0)
                .pump_all()
                .call(B, 4, 0, 0)
                .call(B, 0, 0, 0)
                .pump_all()
                .finish(A, 1, &[])
                .pump_all()
                .call(B, 0, 0, 0)
                .pump_all()
                .finish(A, 6, &[200])
                .pump_all()
                .bytes(),
        ),
        (
            "hello-timeout",
            Script::new(0x43, 0).advance(7).pump_all().bytes(),
        ),
        (
            "too-slow-mid-call",
            boot()
                .call(B, 1, 0, 0)
                .op(B, 2, &[0, 4, 0, 0])
                .pump_all()
                .op(A, 17, &[3]) // A's transport: a message took too long to arrive
                .pump_all()
                .call(B, 0, 0, 0)
                .pump_all()
                .bytes(),
        ),
        (
            "write-stalled-mid-stream",
            boot()
                .op(B, 2, &[0, 4, 0, 0])
                .call(B, 1, 0, 0)
                .pump_all()
                .op(A, 12, &[0, 2, 1, 1])
                .op(A, 17, &[4]) // A's transport: the peer stopped reading
                .pump_all()
                .call(B, 0, 0, 0)
                .pump_all()
                .bytes(),
        ),
    ]
}

fn run(name: &str) -> Report {
    let (_, input) = seeds()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a seed");
    session_ops(&input)
}

#[test]
fn the_seeds_reach_what_they_are_named_for() {
    let call = run("call");
    assert_eq!((call.invocations, call.drained), (1, 1), "{call:?}");
    let stream = run("stream");
    assert!(stream.items >= 13, "{stream:?}");
    assert_eq!(stream.drained, 1);
    assert!(run("caps").invocations >= 3);
    assert_eq!(run("caps").drained, 1);
    assert_eq!(
        run("reused-id").closed,
        2,
        "a reused live id closes the connection"
    );
    assert!(run("garbage").hostile > 0);
    assert_eq!(run("close-mid-call").closed, 2);
    let drain = run("drain-mid-call");
    assert_eq!((drain.drain_closes, drain.closed), (1, 2), "{drain:?}");
    assert_eq!(
        drain.invocations, 1,
        "the call made while draining never runs"
    );
    let refused = run("refused-answers");
    assert!(refused.refused >= 2, "{refused:?}");
    assert_eq!(run("hello-timeout").closed, 2);
    // Too slow: A sends its goaway, which closes B too. Write-stalled: A writes nothing
    // more, so B learns of it only from its own transport (another operation).
    for (name, closed) in [("too-slow-mid-call", 2), ("write-stalled-mid-stream", 1)] {
        let r = run(name);
        assert!(r.invocations >= 2, "{name}: {r:?}");
        assert_eq!(r.closed, closed, "{name}: {r:?}");
    }
    for (name, input) in seeds() {
        let r = session_ops(&input);
        println!("{name}: {r:?}");
        assert!(r.replies > 0 || name == "hello-timeout", "{name}: {r:?}");
    }
}

/// Writes the seeds to `fuzz/corpus/session_ops` (run by hand after changing them).
#[test]
#[ignore]
fn write_session_seed_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/session_ops");
    std::fs::create_dir_all(dir).unwrap();
    for (name, input) in seeds() {
        std::fs::write(format!("{dir}/seed-{name}"), input).unwrap();
    }
}

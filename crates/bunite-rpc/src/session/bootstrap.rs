//! Bootstrap (PROTOCOL §8), both ways.
//!
//! Serving: the checks in order, the policy, and the per-connection instance of each served
//! name. Calling: a bootstrap waits for the peer's hello (PROTOCOL §6), parked here until it
//! arrives.

use std::sync::Arc;
use std::time::Instant;

use bunite_wire::{Call, CallId, CapId, Frame, Payload, Record, ResultFrame, Text, Value};

use super::inbound::PolicyCheck;
use super::outbound::{CallRequest, Expect, Parent, Parked};
use super::output::Output;
use super::{Session, Types};
use crate::events::{BootstrapEvent, BootstrapResult, ErrorEvent, Event};
use crate::status::{reason, Code, Status};

/// The one method of cap-id 0.
pub(crate) const BOOTSTRAP_METHOD: &str = "bootstrap";

impl<T: Types> Session<T> {
    /// Bootstraps the peer's cap `name` (with `version` when the client's cap has one); the
    /// outcome is a CapRef. Waits for the peer's hello.
    #[cfg(any(test, feature = "test-util"))]
    pub fn bootstrap(
        &mut self,
        id: CallId,
        name: &str,
        version: Option<&str>,
        reply: T::Reply,
        now: Instant,
    ) {
        self.bootstrap_within(None, id, name, version, reply, now);
    }

    /// A bootstrap (as `bootstrap` above) made inside the handler `parent`: a bootstrap is a
    /// call (on cap-id 0), so it carries `meta.parentCallId` and a cancel of the handler's
    /// call cancels it (PROTOCOL §8, §11).
    pub fn bootstrap_within(
        &mut self,
        parent: Option<Parent>,
        id: CallId,
        name: &str,
        version: Option<&str>,
        reply: T::Reply,
        now: Instant,
    ) {
        let mut args = Record::new().with("name", name);
        if let Some(v) = version {
            args.insert("version", v);
        }
        let mut req = CallRequest {
            id,
            cap_id: CapId::BOOTSTRAP,
            method: Text::from_static(BOOTSTRAP_METHOD),
            parent,
            deadline: None,
            context: Vec::new(),
            expect: Expect::Caps,
            args: Value::Record(args).into(),
        };
        if self.peer_hello.is_some() {
            return self.start_call(&mut req, reply, now);
        }
        match self.check_call(&req) {
            Ok(()) => self.outbound.parked.push(Parked { req, reply }),
            Err(error) => self.outputs.push_back(Output::Reply {
                to: reply,
                outcome: Err(error),
                caps: true,
            }),
        }
    }

    /// The peer's hello arrived: send the bootstraps that waited for it.
    pub(super) fn send_parked_bootstraps(&mut self, now: Instant) {
        for Parked { mut req, reply } in std::mem::take(&mut self.outbound.parked) {
            match self.send_call(&mut req) {
                Ok(()) => self.track(&req, reply, now),
                Err(error) => self.outputs.push_back(Output::Reply {
                    to: reply,
                    outcome: Err(error),
                    caps: true,
                }),
            }
        }
    }

    pub(super) fn on_bootstrap(&mut self, call: Call<Payload>) {
        // Small by construction (a name and a version); within the frame's decode budget.
        let args = call.args.to_value().unwrap_or_default();
        let args = args.as_record();
        let Some(name) = args.and_then(|a| a.get("name")).and_then(Value::as_str) else {
            let shown = args
                .and_then(|a| a.get("name"))
                .map_or("undefined".to_owned(), js_string);
            self.emit_bootstrap(shown, None, BootstrapResult::InvalidArgument, None);
            return self.reply_err(
                call.id,
                &Status::invalid_argument("bootstrap requires {name: string}"),
            );
        };
        let name = name.to_owned();
        let version = args
            .and_then(|a| a.get("version"))
            .filter(|v| !matches!(v, Value::Undefined | Value::Null))
            .map(js_string);
        let checked = self.check_bootstrap(&name, version.as_deref());
        // Compared whole; kept (for the policy's answer and the events) cut, as any text
        // the peer chose. A name that passed is one we serve; one that did not, the event
        // has cut.
        let version = version.map(super::clip_peer_text);
        if let Err((result, status)) = checked {
            self.emit_bootstrap(super::clip_peer_text(name), version, result, None);
            return self.reply_err(call.id, &status);
        }
        if !self.cfg.has_policy {
            return self.finish_bootstrap(call.id, name, version, Ok(true));
        }
        let max = self.cfg.limits.max_pending_policy_checks;
        if self.inbound.policy.len() >= max {
            let status = Status::resource_exhausted(
                format!("pending bootstrap limit {max}"),
                reason::MAX_CONCURRENT_CALLS,
            );
            self.emit_bootstrap(name, version, BootstrapResult::ResourceExhausted, None);
            return self.reply_err(call.id, &status);
        }
        let check = PolicyCheck {
            name: name.clone(),
            version,
        };
        self.inbound.policy.insert(call.id, check);
        self.outputs.push_back(Output::Policy {
            call_id: call.id,
            name,
        });
    }

    fn check_bootstrap(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(), (BootstrapResult, Status)> {
        let Some(entry) = self.registry.get(name) else {
            let name = super::clipped(name);
            let status = Status::not_found(format!("cap \"{name}\" not served"));
            return Err((BootstrapResult::NotFound, status));
        };
        if let (Some(server), Some(client)) = (entry.def.version(), version) {
            if server != client {
                let client = super::clipped(client);
                let msg = format!("version mismatch (server \"{server}\", client \"{client}\")");
                return Err((
                    BootstrapResult::VersionMismatch,
                    Status::failed_precondition(msg, reason::VERSION_MISMATCH),
                ));
            }
        }
        Ok(())
    }

    /// The policy answered a bootstrap (`Err` = the policy failed).
    pub fn policy_done(&mut self, id: CallId, allowed: Result<bool, String>) {
        let Some(check) = crate::hashing::take(&mut self.inbound.policy, &id) else {
            return;
        };
        if self.closed.is_none() {
            self.finish_bootstrap(id, check.name, check.version, allowed);
        }
    }

    fn finish_bootstrap(
        &mut self,
        id: CallId,
        name: String,
        version: Option<String>,
        allowed: Result<bool, String>,
    ) {
        let denied = match allowed {
            Ok(true) => None,
            Ok(false) => Some((
                BootstrapResult::Denied,
                Status::failed_precondition("policy denied", reason::UNAUTHORIZED),
            )),
            Err(error) => {
                self.emit(|| {
                    Event::Error(ErrorEvent {
                        phase: "policy",
                        error,
                    })
                });
                Some((BootstrapResult::Internal, Status::internal("policy threw")))
            }
        };
        // The registry may have changed while the policy ran.
        let outcome = match denied {
            Some(d) => Err(d),
            None => self
                .check_bootstrap(&name, version.as_deref())
                .and_then(|()| {
                    self.instance_for(&name).map_err(|s| {
                        let r = if s.code == Code::ResourceExhausted {
                            BootstrapResult::ResourceExhausted
                        } else {
                            BootstrapResult::Internal
                        };
                        (r, s)
                    })
                }),
        };
        match outcome {
            Ok(cap_id) => {
                self.send(&Frame::Result(ResultFrame {
                    id,
                    outcome: Ok(Value::CapRef(cap_id)),
                }));
                self.emit_bootstrap(name, version, BootstrapResult::Ok, Some(cap_id));
            }
            Err((result, status)) => {
                self.emit_bootstrap(name, version, result, None);
                self.reply_err(id, &status);
            }
        }
    }

    /// The name's instance on this connection (refcount + 1), or a new one.
    fn instance_for(&mut self, name: &str) -> Result<CapId, Status> {
        if let Some(id) = self.registry.instance(name) {
            if let Some(entry) = self.table.get_mut(id) {
                entry.refcount = entry.refcount.saturating_add(1);
                return Ok(id);
            }
            self.registry.forget_instance(name, id);
        }
        let entry = self
            .registry
            .get(name)
            .ok_or_else(|| Status::not_found(format!("cap \"{name}\" not served")))?;
        let (def, imp) = (Arc::clone(&entry.def), entry.imp.clone());
        let id = self.table.allocate(def, imp)?;
        self.registry.set_instance(name, id);
        Ok(id)
    }

    fn emit_bootstrap(
        &mut self,
        name: String,
        version: Option<String>,
        result: BootstrapResult,
        cap_id: Option<CapId>,
    ) {
        let attestation = &self.cfg.attestation;
        if self.observed {
            let event = Event::Bootstrap(BootstrapEvent {
                name,
                version,
                attestation: attestation.clone(),
                result,
                cap_id,
            });
            self.outputs.push_back(Output::Event(event));
        }
    }
}

/// `String(v)` of JS for the scalar values a bootstrap may carry (the reference compares
/// `String(args.version)`; the web client spells a number as its engine does).
fn js_string(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => js_number(*f),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Undefined => "undefined".to_owned(),
        _ => "[object Object]".to_owned(),
    }
}

/// A float as JS's `Number.prototype.toString()` spells it (ECMA-262 `Number::toString`, radix
/// 10): the shortest digits that read back as `f`, as Rust's, but `0` for `-0`, `Infinity`,
/// and an exponent (`1e+21`, `1e-7`) outside 1e-7 < |f| < 1e21, where Rust's `Display` writes
/// every digit (`1000000000000000000000`, `0.0000001`) and `-0`, `inf`.
fn js_number(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f == 0.0 {
        return "0".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    // `{:e}` gives the shortest digits too, as `d.ddde±x`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i64;
    // The decimal point goes after the n-th digit.
    let n = exp.parse::<i64>().unwrap_or(0) + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e = if e >= 0 {
            format!("+{e}")
        } else {
            e.to_string()
        };
        match digits.split_at(1) {
            (d, "") => format!("{d}e{e}"),
            (d, rest) => format!("{d}.{rest}e{e}"),
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each as `String(x)` spells it in Node 20 (the web client's test pins the same table).
    #[test]
    fn a_float_version_is_spelled_as_js_spells_it() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (1.5, "1.5"),
            (-1.5, "-1.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (-0.0, "0"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (2.5e25, "2.5e+25"),
            (4294967296.5, "4294967296.5"),
            (9007199254740993.0, "9007199254740992"),
        ];
        for &(f, want) in cases {
            assert_eq!(js_string(&Value::Float(f)), want, "{f:?}");
        }
        assert_eq!(js_string(&Value::Int(-3)), "-3");
        assert_eq!(js_string(&Value::UInt(u64::MAX)), "18446744073709551615");
    }

    proptest::proptest! {
        /// Any finite float is spelled as a number that reads back as itself (the shortest
        /// digits, as JS's), in JS's form: digits and at most one point, or one digit, an
        /// optional fraction and a signed exponent; never a panic.
        #[test]
        fn every_float_is_spelled_as_a_number_that_reads_back(bits: u64) {
            let f = f64::from_bits(bits);
            let text = js_number(f);
            if f.is_finite() {
                let back: f64 = text.parse().expect("a number");
                proptest::prop_assert!(back == f, "{f:?} spelled {text}");
                let body = text.strip_prefix('-').unwrap_or(&text);
                let (mantissa, exp) = body.split_once('e').unwrap_or((body, ""));
                proptest::prop_assert!(mantissa.chars().all(|c| c.is_ascii_digit() || c == '.'));
                proptest::prop_assert!(mantissa.matches('.').count() <= 1, "{text}");
                if !exp.is_empty() {
                    proptest::prop_assert!(exp.starts_with('+') || exp.starts_with('-'), "{text}");
                    proptest::prop_assert!(mantissa.split('.').next().map(str::len) == Some(1), "{text}");
                }
            }
        }
    }
}

//! Bootstrap (PROTOCOL §8): the checks in order, the policy, and the per-connection instance
//! of each served name.

use std::sync::Arc;

use bunite_wire::{Call, CallId, CapId, Frame, ResultFrame, Value};

use super::{Action, Session};
use crate::events::{BootstrapEvent, BootstrapResult, Event};
use crate::status::{reason, Code, Status};

/// The one method of cap-id 0.
pub(crate) const BOOTSTRAP_METHOD: &str = "bootstrap";

impl Session {
    pub(super) fn on_bootstrap(&mut self, call: Call) {
        let args = call.args.as_record();
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
        if let Err((result, status)) = self.check_bootstrap(&name, version.as_deref()) {
            self.emit_bootstrap(name, version, result, None);
            return self.reply_err(call.id, &status);
        }
        if self.cfg.policy.is_some() {
            let max = self.cfg.limits.max_pending_policy_checks;
            if self.policy_checks >= max {
                let status = Status::resource_exhausted(
                    format!("pending bootstrap limit {max}"),
                    reason::MAX_CONCURRENT_CALLS,
                );
                self.emit_bootstrap(name, version, BootstrapResult::ResourceExhausted, None);
                return self.reply_err(call.id, &status);
            }
            self.policy_checks += 1;
            self.fx.actions.push(Action::Policy {
                call_id: call.id,
                name,
                version,
            });
        } else {
            self.finish_bootstrap(call.id, name, version, Ok(true));
        }
    }

    fn check_bootstrap(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(), (BootstrapResult, Status)> {
        let Some(entry) = self.registry.get(name) else {
            let status = Status::not_found(format!("cap \"{name}\" not served"));
            return Err((BootstrapResult::NotFound, status));
        };
        if let (Some(server), Some(client)) = (entry.def.version(), version) {
            if server != client {
                let msg = format!("version mismatch (server \"{server}\", client \"{client}\")");
                return Err((
                    BootstrapResult::VersionMismatch,
                    Status::failed_precondition(msg, reason::VERSION_MISMATCH),
                ));
            }
        }
        Ok(())
    }

    /// Completes a bootstrap once the policy answered (`Err` = the policy failed).
    pub fn finish_bootstrap(
        &mut self,
        id: CallId,
        name: String,
        version: Option<String>,
        allowed: Result<bool, String>,
    ) {
        if self.cfg.policy.is_some() {
            self.policy_checks = self.policy_checks.saturating_sub(1);
        }
        if self.closed.is_some() {
            return;
        }
        let denied = match allowed {
            Ok(true) => None,
            Ok(false) => Some((
                BootstrapResult::Denied,
                Status::failed_precondition("policy denied", reason::UNAUTHORIZED),
            )),
            Err(e) => {
                self.emit(Event::Error(crate::events::ErrorEvent {
                    phase: "policy",
                    error: e,
                }));
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
                entry.refcount += 1;
                return Ok(id);
            }
            self.registry.forget_instance(name, id);
        }
        let entry = self
            .registry
            .get(name)
            .ok_or_else(|| Status::not_found(format!("cap \"{name}\" not served")))?;
        let (def, imp) = (Arc::clone(&entry.def), Arc::clone(&entry.imp));
        let id = self.table.allocate(def, imp, Some(name.to_owned()))?;
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
        let attestation = self.cfg.attestation.clone();
        self.emit(Event::Bootstrap(BootstrapEvent {
            name,
            version,
            attestation,
            result,
            cap_id,
        }));
    }
}

/// `String(v)` of JS for the scalar values a bootstrap may carry.
fn js_string(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Undefined => "undefined".to_owned(),
        _ => "[object Object]".to_owned(),
    }
}

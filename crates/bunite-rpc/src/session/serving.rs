//! Registry operations (PROTOCOL §8): serve (one or a batch, atomically), replace, unserve
//! with revocation.

use std::sync::Arc;

use bunite_wire::{CapRevoked, Frame};

use super::output::Output;
use super::registry::Plan;
use super::{Session, Types};
use crate::events::{Event, RevokeEvent, RevokeReason};
use crate::schema::{CapDef, IfExists};
use crate::status::Status;

impl<T: Types> Session<T> {
    /// Serves caps (one, or a batch atomically). Returns the names now owned by the
    /// caller (none for names `IfExists::Skip` left alone).
    pub fn serve(
        &mut self,
        caps: Vec<(Arc<CapDef>, T::Imp)>,
        if_exists: IfExists,
    ) -> Result<Vec<String>, Status> {
        let defs: Vec<&CapDef> = caps.iter().map(|(d, _)| d.as_ref()).collect();
        let plans = match defs.as_slice() {
            [one] => vec![self.registry.plan(one, if_exists, false)?],
            _ => self.registry.plan_all(&defs, if_exists)?,
        };
        let mut names = Vec::new();
        for ((def, imp), plan) in caps.into_iter().zip(plans) {
            match plan {
                Plan::Skip => continue,
                Plan::Insert => {}
                Plan::Replace => self.switch_instance(&def, &imp),
            }
            names.push(def.name().to_owned());
            self.registry.insert(def, imp);
        }
        Ok(names)
    }

    /// `replace`: same name and version, new implementation, live instance switched.
    pub fn replace(&mut self, def: Arc<CapDef>, imp: T::Imp) -> Result<(), Status> {
        self.registry.check_replace(&def)?;
        self.switch_instance(&def, &imp);
        self.registry.insert(def, imp);
        Ok(())
    }

    fn switch_instance(&mut self, def: &Arc<CapDef>, imp: &T::Imp) {
        let id = self.registry.instance(def.name());
        if let Some(entry) = id.and_then(|id| self.table.get_mut(id)) {
            entry.imp = imp.clone();
            entry.def = Arc::clone(def);
        }
        self.emit(|| {
            Event::Revoke(RevokeEvent {
                cap_ids: id.into_iter().collect(),
                reason: RevokeReason::Replace,
            })
        });
    }

    /// Unserves names: disposes and frees their live instances and sends one `cap_revoked`
    /// with all of them. Names not served are ignored.
    pub fn unserve(&mut self, names: &[String]) {
        let mut revoked = Vec::new();
        for name in names {
            let Some((_, instance)) = self.registry.remove(name) else {
                continue;
            };
            let Some(id) = instance else { continue };
            if let Some(entry) = self.table.remove(id) {
                if let Some(method) = entry.def.disposal() {
                    self.outputs.push_back(Output::Dispose {
                        imp: entry.imp,
                        method: method.to_owned(),
                        cap_id: id,
                    });
                }
            }
            revoked.push(id);
        }
        if revoked.is_empty() || self.closed.is_some() {
            return;
        }
        for call in self.inbound.active.values_mut() {
            if revoked.contains(&call.cap_id) {
                call.target_revoked = true;
            }
        }
        self.send(&Frame::CapRevoked(CapRevoked {
            cap_ids: revoked.clone(),
        }));
        self.stop_streams_on(&revoked);
        self.emit(|| {
            Event::Revoke(RevokeEvent {
                cap_ids: revoked,
                reason: RevokeReason::Unserve,
            })
        });
    }
}

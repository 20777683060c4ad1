//! Registry operations (PROTOCOL §8): serve (one or a batch, atomically), replace, unserve
//! with revocation.

use std::sync::Arc;

use bunite_wire::{CapRevoked, Frame};

use super::registry::{IfExists, Plan};
use super::{Action, Session};
use crate::events::{Event, RevokeEvent, RevokeReason};
use crate::handler::CapImpl;
use crate::schema::CapDef;
use crate::status::Status;

impl Session {
    /// Serves caps (one, or a batch atomically). Returns the names the handle owns.
    pub fn serve(
        &mut self,
        caps: Vec<(Arc<CapDef>, Arc<dyn CapImpl>)>,
        if_exists: IfExists,
    ) -> Result<Vec<String>, Status> {
        let defs: Vec<&CapDef> = caps.iter().map(|(d, _)| d.as_ref()).collect();
        let plans = if defs.len() == 1 {
            vec![self.registry.plan(defs[0], if_exists, false)?]
        } else {
            self.registry.plan_all(&defs, if_exists)?
        };
        let mut names = Vec::new();
        for ((def, imp), plan) in caps.into_iter().zip(plans) {
            match plan {
                Plan::Skip => continue,
                Plan::Insert => {}
                Plan::Replace => self.switch_instance(&def, &imp),
            }
            names.push(def.name().to_owned());
            self.fx.graveyard.extend(self.registry.insert(def, imp));
        }
        Ok(names)
    }

    /// `replace`: same name and version, new implementation, live instance switched.
    pub fn replace(&mut self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Result<(), Status> {
        self.registry.check_replace(&def)?;
        self.switch_instance(&def, &imp);
        self.fx.graveyard.extend(self.registry.insert(def, imp));
        Ok(())
    }

    fn switch_instance(&mut self, def: &Arc<CapDef>, imp: &Arc<dyn CapImpl>) {
        let id = self.registry.instance(def.name());
        if let Some(entry) = id.and_then(|id| self.table.get_mut(id)) {
            let old = std::mem::replace(&mut entry.imp, Arc::clone(imp));
            entry.def = Arc::clone(def);
            self.fx.graveyard.push(old);
        }
        let cap_ids = id.into_iter().collect();
        self.emit(Event::Revoke(RevokeEvent {
            cap_ids,
            reason: RevokeReason::Replace,
        }));
    }

    /// Unserves names: disposes and frees their live instances and sends one
    /// `cap_revoked` with all of them. Names not served are ignored.
    pub fn unserve(&mut self, names: &[String]) {
        let mut revoked = Vec::new();
        for name in names {
            let Some((imp, instance)) = self.registry.remove(name) else {
                continue;
            };
            self.fx.graveyard.push(imp);
            let Some(id) = instance else { continue };
            if let Some(entry) = self.table.remove(id) {
                if let Some(method) = entry.def.disposal() {
                    self.fx.actions.push(Action::Dispose {
                        imp: Arc::clone(&entry.imp),
                        method: method.to_owned(),
                        cap_id: id,
                    });
                }
                self.fx.graveyard.push(entry.imp);
            }
            revoked.push(id);
        }
        if revoked.is_empty() || self.closed.is_some() {
            return;
        }
        self.send(&Frame::CapRevoked(CapRevoked {
            cap_ids: revoked.clone(),
        }));
        self.emit(Event::Revoke(RevokeEvent {
            cap_ids: revoked,
            reason: RevokeReason::Unserve,
        }));
    }
}

//! The registry (PROTOCOL §8): served names → (definition, implementation), plus the cached
//! bootstrap instance of each name on this connection. Pure decisions, no I/O.

use crate::hashing::{Map, Set};
use std::sync::Arc;

use bunite_wire::CapId;

use crate::schema::{CapDef, IfExists, RESERVED_PREFIX};
use crate::status::{reason, Code, Status};

pub(crate) struct RegEntry<I> {
    pub def: Arc<CapDef>,
    pub imp: I,
}

pub(crate) struct Registry<I> {
    names: Map<String, RegEntry<I>>,
    instances: Map<String, CapId>,
}

impl<I> Default for Registry<I> {
    fn default() -> Self {
        Registry {
            names: Map::default(),
            instances: Map::default(),
        }
    }
}

/// What serving one cap will do, decided before anything changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    Insert,
    Skip,
    Replace,
}

/// JS renders a missing version as `undefined` in messages; so do we.
fn show(v: Option<&str>) -> &str {
    v.unwrap_or("undefined")
}

impl<I> Registry<I> {
    pub fn get(&self, name: &str) -> Option<&RegEntry<I>> {
        self.names.get(name)
    }

    pub fn instance(&self, name: &str) -> Option<CapId> {
        self.instances.get(name).copied()
    }

    pub fn set_instance(&mut self, name: &str, id: CapId) {
        self.instances.insert(name.to_owned(), id);
    }

    /// Forgets a freed bootstrap instance, so the next bootstrap allocates a new id.
    pub fn forget_instance(&mut self, name: &str, id: CapId) {
        if self.instances.get(name) == Some(&id) {
            self.instances.remove(name);
        }
    }

    /// Checks one cap against the registry for `serve`/`serveAll`.
    pub fn plan(&self, def: &CapDef, if_exists: IfExists, batch: bool) -> Result<Plan, Status> {
        let name = def.name();
        if name.starts_with(RESERVED_PREFIX) {
            return Err(Status::new(
                Code::AlreadyExists,
                format!("cap name \"{name}\" uses reserved prefix \"{RESERVED_PREFIX}\""),
            )
            .with_reason(reason::RESERVED_NAMESPACE));
        }
        let Some(existing) = self.names.get(name) else {
            return Ok(Plan::Insert);
        };
        match if_exists {
            IfExists::Throw => Err(collision(name)),
            IfExists::Skip => Ok(Plan::Skip),
            IfExists::Replace => {
                if existing.def.version() != def.version() {
                    let (cur, new) = (show(existing.def.version()), show(def.version()));
                    let message = if batch {
                        format!("version mismatch on replace for \"{name}\" (current \"{cur}\", new \"{new}\")")
                    } else {
                        format!("version mismatch (current \"{cur}\", new \"{new}\")")
                    };
                    return Err(Status::failed_precondition(
                        message,
                        reason::VERSION_MISMATCH,
                    ));
                }
                Ok(Plan::Replace)
            }
        }
    }

    /// Checks a whole batch (atomic `serveAll`): every check passes before anything changes,
    /// including names repeated inside the batch.
    pub fn plan_all(&self, defs: &[&CapDef], if_exists: IfExists) -> Result<Vec<Plan>, Status> {
        let mut seen = Set::default();
        defs.iter()
            .map(|def| {
                let plan = self.plan(def, if_exists, true)?;
                if !seen.insert(def.name()) {
                    return Err(collision(def.name()));
                }
                Ok(plan)
            })
            .collect()
    }

    /// Checks `replace`: the name must be served with the same version.
    pub fn check_replace(&self, def: &CapDef) -> Result<(), Status> {
        match self.plan(def, IfExists::Replace, false) {
            Ok(Plan::Replace) => Ok(()),
            Ok(_) => Err(Status::not_found(format!(
                "cap \"{}\" not served",
                def.name()
            ))),
            Err(e) => Err(e),
        }
    }

    /// Registers a name; returns the implementation it replaced.
    pub fn insert(&mut self, def: Arc<CapDef>, imp: I) -> Option<I> {
        let old = self
            .names
            .insert(def.name().to_owned(), RegEntry { def, imp });
        old.map(|e| e.imp)
    }

    /// Removes a name; returns its implementation and its live instance, if any.
    pub fn remove(&mut self, name: &str) -> Option<(I, Option<CapId>)> {
        let entry = self.names.remove(name)?;
        Some((entry.imp, self.instances.remove(name)))
    }
}

fn collision(name: &str) -> Status {
    Status::new(
        Code::AlreadyExists,
        format!("cap \"{name}\" already served"),
    )
    .with_reason(reason::NAME_COLLISION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, version: Option<&str>) -> Arc<CapDef> {
        let b = CapDef::builder(name);
        match version {
            Some(v) => b.version(v).build(),
            None => b.build(),
        }
    }

    #[test]
    fn reserved_prefix_is_refused() {
        let r = Registry::<()>::default();
        let e = r
            .plan(&def("bunite.Window", None), IfExists::Throw, false)
            .unwrap_err();
        assert_eq!(e.code, Code::AlreadyExists);
        assert_eq!(e.reason(), Some("reserved_namespace"));
        assert_eq!(
            e.message,
            "cap name \"bunite.Window\" uses reserved prefix \"bunite.\""
        );
    }

    #[test]
    fn if_exists_decides_collisions() {
        let mut r = Registry::<()>::default();
        r.insert(def("a", Some("1")), ());
        let e = r
            .plan(&def("a", Some("1")), IfExists::Throw, false)
            .unwrap_err();
        assert_eq!(
            (e.code, e.reason()),
            (Code::AlreadyExists, Some("name_collision"))
        );
        assert_eq!(e.message, "cap \"a\" already served");
        assert_eq!(
            r.plan(&def("a", Some("1")), IfExists::Skip, false),
            Ok(Plan::Skip)
        );
        assert_eq!(
            r.plan(&def("a", Some("1")), IfExists::Replace, false),
            Ok(Plan::Replace)
        );
        let e = r
            .plan(&def("a", Some("2")), IfExists::Replace, false)
            .unwrap_err();
        assert_eq!(e.reason(), Some("version_mismatch"));
        assert_eq!(e.message, "version mismatch (current \"1\", new \"2\")");
    }

    #[test]
    fn a_batch_is_checked_whole_including_repeats() {
        let r = Registry::<()>::default();
        let (a, b) = (def("a", None), def("a", None));
        let e = r.plan_all(&[&a, &b], IfExists::Throw).unwrap_err();
        assert_eq!(e.reason(), Some("name_collision"));
    }

    #[test]
    fn replace_needs_a_served_name() {
        let r = Registry::<()>::default();
        let e = r.check_replace(&def("a", None)).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::NotFound, "cap \"a\" not served")
        );
    }
}

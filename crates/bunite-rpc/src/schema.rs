//! Cap definitions: names, versions, methods and their kinds (PROTOCOL §8–10).
//!
//! A [`CapDef`] is plain data shared by both peers' views of a cap. The typed macro API
//! generates one per trait; the dynamic API builds them at run time with [`CapDef::builder`].

use crate::hashing::Map;
use std::fmt;
use std::sync::Arc;

/// The reserved cap-name prefix of the bunite framework caps.
pub const RESERVED_PREFIX: &str = "bunite.";

/// Default initial stream credit (PROTOCOL §5).
pub const DEFAULT_INITIAL_CREDIT: u32 = 32;
/// Largest initial stream credit (PROTOCOL §5).
pub const MAX_INITIAL_CREDIT: u32 = 1024;
/// Smallest initial stream credit we grant, so 0.10 clients that return credit only per 8
/// values cannot deadlock (PROTOCOL §13.1).
pub const MIN_INITIAL_CREDIT: u32 = 8;

/// Up to this many methods a cap's methods are found by comparing names, at most this many
/// comparisons, most of them of lengths only: cheaper than hashing the name (about a
/// hundred instructions a call on the server, callgrind of `examples/pipelined`).
const SCAN_METHODS: usize = 8;

/// A capability definition.
#[derive(Debug, Clone)]
pub struct CapDef {
    name: String,
    version: Option<String>,
    methods: Vec<MethodDef>,
    /// Method name (its bytes) → position in `methods`, for a cap of more than
    /// [`SCAN_METHODS`] methods: dispatch looks a method up per call, by the bytes of the
    /// name that came in (a `str` of a short received name costs a UTF-8 check each time it
    /// is made, as `Text` keeps it inline as bytes). Empty for a smaller cap.
    index: Map<Box<[u8]>, usize>,
    disposal: Option<String>,
}

impl CapDef {
    /// Starts a definition named `name`.
    pub fn builder(name: impl Into<String>) -> CapDefBuilder {
        CapDefBuilder {
            def: CapDef {
                name: name.into(),
                version: None,
                methods: Vec::new(),
                index: Map::default(),
                disposal: None,
            },
        }
    }

    /// The cap name (the registry key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The methods, in declaration order.
    pub fn methods(&self) -> &[MethodDef] {
        &self.methods
    }

    /// The method named `name`.
    pub fn method(&self, name: &str) -> Option<&MethodDef> {
        self.find(name.as_bytes()).map(|(_, m)| m)
    }

    /// The method whose name is `name`'s bytes, and its position in [`CapDef::methods`].
    pub(crate) fn find(&self, name: &[u8]) -> Option<(usize, &MethodDef)> {
        if self.methods.len() <= SCAN_METHODS {
            return (self.methods.iter().enumerate()).find(|(_, m)| m.name.as_bytes() == name);
        }
        let i = *self.index.get(name)?;
        Some((i, self.methods.get(i)?))
    }

    /// The name of the method at `position` in [`CapDef::methods`] (empty if there is none).
    pub(crate) fn method_name(&self, position: usize) -> &str {
        self.methods.get(position).map_or("", MethodDef::name)
    }

    /// The disposal method's name, if the cap declares one.
    pub fn disposal(&self) -> Option<&str> {
        self.disposal.as_deref()
    }
}

/// Builds a [`CapDef`].
#[derive(Debug)]
pub struct CapDefBuilder {
    def: CapDef,
}

impl CapDefBuilder {
    /// Sets the version string.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.def.version = Some(version.into());
        self
    }

    /// Adds a method. A later method with the same name replaces the earlier one.
    pub fn method(mut self, method: MethodDef) -> Self {
        self.def.methods.retain(|m| m.name != method.name);
        self.def.methods.push(method);
        self
    }

    /// Names the disposal method (it must also be declared as a method).
    pub fn disposal(mut self, method: impl Into<String>) -> Self {
        self.def.disposal = Some(method.into());
        self
    }

    /// Finishes the definition.
    pub fn build(mut self) -> Arc<CapDef> {
        if self.def.methods.len() > SCAN_METHODS {
            self.def.index = (self.def.methods.iter().enumerate())
                .map(|(i, m)| (m.name.as_bytes().into(), i))
                .collect();
        }
        Arc::new(self.def)
    }
}

/// What kind of method this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// A unary call.
    Call,
    /// A server stream.
    Stream,
}

/// One method of a cap.
#[derive(Debug, Clone)]
pub struct MethodDef {
    name: String,
    kind: MethodKind,
    idempotent: bool,
    initial_credit: u32,
    returns: Returns,
    drop_on_cancel: bool,
    own_task: bool,
}

impl MethodDef {
    /// A unary call method returning a plain value.
    pub fn call(name: impl Into<String>) -> Self {
        MethodDef {
            name: name.into(),
            kind: MethodKind::Call,
            idempotent: false,
            initial_credit: DEFAULT_INITIAL_CREDIT,
            returns: Returns::Value,
            drop_on_cancel: true,
            own_task: false,
        }
    }

    /// A server-stream method.
    pub fn stream(name: impl Into<String>) -> Self {
        MethodDef {
            kind: MethodKind::Stream,
            ..MethodDef::call(name)
        }
    }

    /// Marks the method idempotent: the server ignores its deadline (PROTOCOL §11).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Sets a stream's initial credit, clamped to 8..=1024 (PROTOCOL §13.1).
    pub fn initial_credit(mut self, credit: u32) -> Self {
        self.initial_credit = credit.clamp(MIN_INITIAL_CREDIT, MAX_INITIAL_CREDIT);
        self
    }

    /// Declares what the method returns.
    pub fn returns(mut self, returns: Returns) -> Self {
        self.returns = returns;
        self
    }

    /// Keeps the handler running after a cancel (it still sees the cancellation signal and
    /// its result is still suppressed). By default a cancelled handler's future is dropped.
    pub fn keep_running_on_cancel(mut self) -> Self {
        self.drop_on_cancel = false;
        self
    }

    /// Runs the handler on a task of its own from the start, for CPU-heavy or blocking
    /// work. By default a handler is first polled on the connection's task, so one that
    /// completes at once costs no task hop; one that has to wait moves to its own task.
    pub fn own_task(mut self) -> Self {
        self.own_task = true;
        self
    }

    /// Whether the handler starts on a task of its own ([`MethodDef::own_task`]).
    pub fn runs_on_own_task(&self) -> bool {
        self.own_task
    }

    /// Whether a cancel drops the handler's future.
    pub fn drops_on_cancel(&self) -> bool {
        self.drop_on_cancel
    }

    /// The wire name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Call or stream.
    pub fn kind(&self) -> MethodKind {
        self.kind
    }

    /// Whether the method is idempotent.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The stream's initial credit (always within 8..=1024).
    pub fn stream_initial_credit(&self) -> u32 {
        self.initial_credit
    }

    /// What the method returns.
    pub fn return_shape(&self) -> &Returns {
        &self.returns
    }
}

/// What a call method returns (PROTOCOL §9, cap-returning methods).
#[derive(Debug, Clone)]
pub enum Returns {
    /// A plain value.
    Value,
    /// One cap of the given definition.
    Cap(CapDefRef),
    /// An array of caps of one definition.
    CapArray(CapDefRef),
    /// A string-keyed record of caps of one definition.
    CapRecord(CapDefRef),
}

impl Returns {
    /// The definition of the returned caps, if the method returns caps.
    pub fn cap(&self) -> Option<Arc<CapDef>> {
        match self {
            Returns::Value => None,
            Returns::Cap(r) | Returns::CapArray(r) | Returns::CapRecord(r) => Some(r.get()),
        }
    }
}

/// A reference to a cap definition that may be resolved lazily, so a cap can return itself
/// (the typed API generates a `fn` that builds its definition once).
#[derive(Clone)]
pub enum CapDefRef {
    /// A definition produced by a function, resolved when first needed.
    Lazy(fn() -> Arc<CapDef>),
    /// A definition at hand.
    Shared(Arc<CapDef>),
}

impl CapDefRef {
    /// The definition.
    pub fn get(&self) -> Arc<CapDef> {
        match self {
            CapDefRef::Lazy(f) => f(),
            CapDefRef::Shared(d) => Arc::clone(d),
        }
    }
}

impl fmt::Debug for CapDefRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapDefRef::Lazy(_) => f.write_str("CapDefRef::Lazy"),
            CapDefRef::Shared(d) => write!(f, "CapDefRef::Shared({:?})", d.name()),
        }
    }
}

impl From<Arc<CapDef>> for CapDefRef {
    fn from(d: Arc<CapDef>) -> Self {
        CapDefRef::Shared(d)
    }
}

/// What serving a name that is already served does (PROTOCOL §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfExists {
    /// Fail `already_exists` `{reason:"name_collision"}` (the default).
    #[default]
    Throw,
    /// Leave the existing registration; the returned handle owns nothing.
    Skip,
    /// Replace the implementation (same version required), as
    /// [`replace`](crate::Connection::replace).
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(methods: usize) -> Arc<CapDef> {
        (0..methods)
            .fold(CapDef::builder("t"), |b, i| {
                b.method(MethodDef::call(format!("m{i}")))
            })
            .method(MethodDef::stream("m1"))
            .build()
    }

    /// Found by name at its position, by comparing names in a small cap and through the
    /// index in a large one; a name that is a prefix or an extension of one is no method.
    #[test]
    fn methods_are_found_by_their_names_bytes_in_small_and_large_caps() {
        for n in [2, SCAN_METHODS, SCAN_METHODS + 1, 40] {
            let def = cap(n);
            assert_eq!(def.index.is_empty(), n <= SCAN_METHODS, "{n} methods");
            assert_eq!(def.methods().len(), n);
            for (i, m) in def.methods().iter().enumerate() {
                let (at, found) = def.find(m.name().as_bytes()).expect("found");
                assert_eq!((at, found.name()), (i, m.name()));
                assert_eq!(def.method_name(at), m.name());
            }
            // Declared again: the later declaration, last in order.
            let (at, m1) = def.find(b"m1").expect("m1");
            assert_eq!((at, m1.kind()), (n - 1, MethodKind::Stream));
            for missing in [&b""[..], b"m", b"m00", b"M0", b"m0\0", b"m9999"] {
                assert!(def.find(missing).is_none(), "{n}: {missing:?}");
            }
        }
    }
}

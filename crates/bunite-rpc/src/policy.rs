//! Who the peer is ([`Attestation`]) and who may bootstrap what ([`Policy`]) (PROTOCOL §8).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::handler::BoxFuture;

/// How much the host trusts the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustLevel {
    /// The app's own code.
    AppInternal,
    /// An origin the app trusts.
    TrustedOrigin,
    /// Anything else (the default).
    Untrusted,
}

impl TrustLevel {
    /// The wire string (`"app-internal"`, `"trusted-origin"`, `"untrusted"`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::AppInternal => "app-internal",
            TrustLevel::TrustedOrigin => "trusted-origin",
            TrustLevel::Untrusted => "untrusted",
        }
    }
}

/// What the hosting process knows about the peer of a connection. Security decisions use
/// this, never the peer's own `hello.origin` claim (PROTOCOL §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The peer's origin.
    pub origin: String,
    /// The top-level origin.
    pub top_origin: String,
    /// The storage partition.
    pub partition: String,
    /// Whether the peer is the app's own resource.
    pub is_app_res: bool,
    /// Whether the peer is a main frame.
    pub is_main_frame: bool,
    /// Whether a user gesture is active.
    pub user_gesture: bool,
    /// The trust level.
    pub level: TrustLevel,
}

impl Default for Attestation {
    /// Untrusted: empty origins, partition `"default"`, booleans false (the 0.10 default).
    fn default() -> Self {
        Attestation {
            origin: String::new(),
            top_origin: String::new(),
            partition: "default".to_owned(),
            is_app_res: false,
            is_main_frame: false,
            user_gesture: false,
            level: TrustLevel::Untrusted,
        }
    }
}

impl Attestation {
    /// An app-internal attestation for `origin`.
    pub fn app_internal(origin: impl Into<String>) -> Self {
        let origin = origin.into();
        Attestation {
            top_origin: origin.clone(),
            origin,
            is_app_res: true,
            is_main_frame: true,
            level: TrustLevel::AppInternal,
            ..Attestation::default()
        }
    }
}

/// Decides whether a bootstrap of `name` is allowed for a peer with this attestation.
///
/// `Ok(false)` fails the bootstrap `failed_precondition` `policy denied`
/// `{reason:"unauthorized"}`; `Err(_)` fails it `internal` `policy threw`.
#[derive(Clone)]
pub struct Policy {
    check: Arc<CheckFn>,
}

type CheckFn = dyn Fn(&str, &Attestation) -> BoxFuture<Result<bool, String>> + Send + Sync;

impl Policy {
    /// A synchronous policy.
    pub fn new(check: impl Fn(&str, &Attestation) -> bool + Send + Sync + 'static) -> Self {
        Policy {
            check: Arc::new(move |name, att| {
                let allowed = check(name, att);
                Box::pin(async move { Ok(allowed) })
            }),
        }
    }

    /// An asynchronous policy that may fail.
    pub fn from_async<F, Fut>(check: F) -> Self
    where
        F: Fn(String, Attestation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, String>> + Send + 'static,
    {
        Policy {
            check: Arc::new(move |name, att| Box::pin(check(name.to_owned(), att.clone()))),
        }
    }

    pub(crate) fn check(&self, name: &str, att: &Attestation) -> BoxFuture<Result<bool, String>> {
        (self.check)(name, att)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Policy")
    }
}

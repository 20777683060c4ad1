//! Who may bootstrap what: the [`Policy`] over the peer's [`Attestation`] (PROTOCOL §8).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::attestation::Attestation;
use crate::handler::BoxFuture;

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

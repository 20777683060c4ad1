//! Who the peer is, as the hosting process knows it ([`Attestation`], PROTOCOL §8). Plain
//! data: the session reports it in events and the policy decides on it.

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

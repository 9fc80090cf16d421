//! Login tokens: who a connection is.
//!
//! The gateway verifies a token on every login through a [`Verifier`]; the
//! default is [`HmacVerifier`], which needs no call to anything else: the
//! application server that knows the user mints a token with the shared
//! secret, the gateway checks it with the same secret. The token format is
//! protocol and lives in the codec ([`imgate_codec::token`]); this module
//! is the server's seam for other verifiers.

pub use imgate_codec::token::TokenError;
use imgate_codec::token::TokenKey;

/// Checks a login's token. Runs on the accepting core: keep it fast and
/// non-blocking (no network calls).
pub trait Verifier: Send + Sync + 'static {
    /// Accepts or refuses `token` for `user` on `device` at `now` (Unix s).
    fn verify(&self, user: u64, device: u32, token: &[u8], now: u64) -> Result<(), TokenError>;
}

/// HMAC-SHA256 signed tokens with a shared secret (protocol section 5.1.2).
#[derive(Clone, Debug)]
pub struct HmacVerifier {
    key: TokenKey,
}

impl HmacVerifier {
    /// A verifier for `secret`.
    pub fn new(secret: &[u8]) -> HmacVerifier {
        HmacVerifier {
            key: TokenKey::new(secret),
        }
    }

    /// Mints a token for `user` on `device`, valid until `expiry` (Unix s).
    pub fn mint(&self, user: u64, device: u32, expiry: u64) -> String {
        self.key.mint(user, device, expiry)
    }
}

impl Verifier for HmacVerifier {
    fn verify(&self, user: u64, device: u32, token: &[u8], now: u64) -> Result<(), TokenError> {
        self.key.verify(user, device, token, now)
    }
}

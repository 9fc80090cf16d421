//! The login token of the default verifier (protocol section 5.1.2): minted
//! by the application's backend (or `imgate token`, or the load generator),
//! checked by the gateway. It is protocol, so it lives beside the frames,
//! and both sides take the current time from their caller.
//!
//! Token (ASCII): `v1.<user>.<device>.<expiry>.<mac>`, where `expiry` is
//! Unix seconds and `mac` is the lowercase hex of
//! HMAC-SHA256(secret, `v1.<user>.<device>.<expiry>`). Uppercase hex is
//! refused, so a token has one spelling.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret of a server started without one: fine for trying imgate on a
/// laptop, never for production. The load generator uses it by default.
pub const DEV_SECRET: &str = "imgate-development-secret";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is not of the expected form.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match.
    #[error("bad token signature")]
    BadSignature,
    /// The token is for another user or device.
    #[error("token is for another user or device")]
    Mismatch,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The user id is 0, which names no user.
    #[error("user id 0 names no user")]
    NoUser,
    /// A claim the server checks is not as required: a JWT's issuer or
    /// audience, or a `nbf` still in the future.
    #[error("token claims not accepted (issuer, audience or not yet valid)")]
    Claims,
}

/// A token secret, keyed once: mints and checks tokens.
#[derive(Clone)]
pub struct TokenKey {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey { .. }")
    }
}

const PREFIX: &str = "v1";

const HEX: &[u8; 16] = b"0123456789abcdef";

impl TokenKey {
    /// A key for `secret` (any length).
    pub fn new(secret: &[u8]) -> TokenKey {
        let key = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        TokenKey { key }
    }

    /// A token for `user` on `device`, valid until `expiry` (Unix s).
    pub fn mint(&self, user: u64, device: u32, expiry: u64) -> String {
        let claims = format!("{PREFIX}.{user}.{device}.{expiry}");
        let mut mac = self.key.clone();
        mac.update(claims.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = claims;
        out.push('.');
        for b in tag {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Accepts `token` for `user` on `device` at `now` (Unix s), or says
    /// why not.
    pub fn verify(&self, user: u64, device: u32, token: &[u8], now: u64) -> Result<(), TokenError> {
        let dot = token
            .iter()
            .rposition(|&b| b == b'.')
            .ok_or(TokenError::Malformed)?;
        let (claims, tag) = (&token[..dot], &token[dot + 1..]);
        let tag = unhex(tag).ok_or(TokenError::Malformed)?;
        let mut mac = self.key.clone();
        mac.update(claims);
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let claims = std::str::from_utf8(claims).map_err(|_| TokenError::Malformed)?;
        let mut parts = claims.split('.');
        let (Some(PREFIX), Some(u), Some(d), Some(e), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let u: u64 = u.parse().map_err(|_| TokenError::Malformed)?;
        let d: u32 = d.parse().map_err(|_| TokenError::Malformed)?;
        let e: u64 = e.parse().map_err(|_| TokenError::Malformed)?;
        if u == 0 {
            return Err(TokenError::NoUser);
        }
        if u != user || d != device {
            return Err(TokenError::Mismatch);
        }
        if e <= now {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

fn unhex(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (lower_hex_digit(pair[0])? << 4) | lower_hex_digit(pair[1])?;
    }
    Some(out)
}

/// One digit of lowercase hex.
fn lower_hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_everything_else_fails() {
        let v = TokenKey::new(b"secret");
        let t = v.mint(42, 7, 1000);
        assert!(t.starts_with("v1.42.7.1000."));
        assert_eq!(v.verify(42, 7, t.as_bytes(), 999), Ok(()));
        assert_eq!(
            v.verify(42, 7, t.as_bytes(), 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(v.verify(43, 7, t.as_bytes(), 1), Err(TokenError::Mismatch));
        assert_eq!(v.verify(42, 8, t.as_bytes(), 1), Err(TokenError::Mismatch));
        let other = TokenKey::new(b"other").mint(42, 7, 1000);
        assert_eq!(
            v.verify(42, 7, other.as_bytes(), 1),
            Err(TokenError::BadSignature)
        );
        // A forged expiry breaks the signature.
        let forged = t.replace(".1000.", ".9999.");
        assert_eq!(
            v.verify(42, 7, forged.as_bytes(), 1),
            Err(TokenError::BadSignature)
        );
        for junk in [&b""[..], b"v1", b"....", b"v1.1.1.1.zz", &[0xff; 80]] {
            assert_eq!(v.verify(1, 1, junk, 1), Err(TokenError::Malformed));
        }
    }

    #[test]
    fn the_mac_is_lowercase_hex_only() {
        let v = TokenKey::new(b"secret");
        let t = v.mint(42, 7, 1000);
        let dot = t.rfind('.').expect("a mac");
        let upper = format!("{}{}", &t[..=dot], t[dot + 1..].to_ascii_uppercase());
        assert_ne!(upper, t, "the mac has letters");
        assert_eq!(
            v.verify(42, 7, upper.as_bytes(), 1),
            Err(TokenError::Malformed)
        );
        assert_eq!(v.verify(42, 7, t.as_bytes(), 1), Ok(()));
    }

    #[test]
    fn a_token_for_user_0_is_refused() {
        let v = TokenKey::new(b"secret");
        let t = v.mint(0, 1, 1000);
        assert_eq!(v.verify(0, 1, t.as_bytes(), 1), Err(TokenError::NoUser));
    }

    #[test]
    fn the_documented_example_verifies() {
        // protocol.md section 5.1.2.
        let v = TokenKey::new(b"example-secret-do-not-use");
        let t =
            "v1.1001.1.1767312000.df5e372c88d6417f35375341f48a380b5b33a3368c5928f43a4cd5dc9d040cff";
        assert_eq!(v.mint(1001, 1, 1_767_312_000), t);
        assert_eq!(v.verify(1001, 1, t.as_bytes(), 1_767_311_999), Ok(()));
    }
}

//! JSON Web Tokens as login tokens, for a backend that already mints them
//! for its other services.
//!
//! A login's token is a JWT when it is not in imgate's own format (which
//! starts with `v1.`); [`Tokens`] sends each to its verifier. A JWT is
//! accepted when its signature checks with a configured key (HS256 with a
//! shared secret; RS256 or ES256 with a public key, so the backend keeps
//! its private key to itself), `sub` is the login's user id (a decimal
//! string or a number), the device claim (`device` by default) is the
//! login's device, `exp` is in the future and `nbf`, if present, in the
//! past (both with `jwt_leeway_s` of clock skew), and `iss`/`aud` match
//! when configured. `alg: none` and any algorithm without a key are
//! refused. Signatures are checked by the `jsonwebtoken` crate; the times
//! are checked here, against the time the caller passes, so that tests
//! and the login path share one clock.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

use crate::token::{HmacVerifier, TokenError, Verifier};

/// Why the JWT settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The public key file could not be read.
    #[error("jwt_public_key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The JWT settings (docs/operations.md, "Login tokens").
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// HS256 shared secret; empty for none.
    pub secret: String,
    /// PEM public key (RSA for RS256, EC P-256 for ES256).
    pub public_key: Option<std::path::PathBuf>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's, when it has several).
    pub audience: Option<String>,
    /// The claim that names the device.
    pub device_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
}

/// Checks JWTs with the configured keys.
pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    validation: Validation,
    device_claim: String,
    leeway_s: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<Algorithm> = self.keys.iter().map(|(a, _)| *a).collect();
        f.debug_struct("JwtVerifier")
            .field("algorithms", &algs)
            .field("device_claim", &self.device_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `s`, or None when no key is configured.
    pub fn new(s: &JwtSettings) -> Result<Option<JwtVerifier>, JwtError> {
        let mut keys = Vec::new();
        if !s.secret.is_empty() {
            let key = DecodingKey::from_secret(s.secret.as_bytes()).map_err(|e| JwtError::Key {
                path: "jwt_secret".into(),
                reason: e.to_string(),
            })?;
            keys.push((Algorithm::HS256, key));
        }
        if let Some(path) = &s.public_key {
            keys.push(public_key(path)?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let mut validation = Validation::new(keys[0].0);
        validation.algorithms = keys.iter().map(|(a, _)| *a).collect();
        // Times are checked in `verify`, against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        // A configured issuer or audience is required, not only checked
        // when present.
        validation.validate_aud = s.audience.is_some();
        if let Some(aud) = &s.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &s.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Some(JwtVerifier {
            keys,
            validation,
            device_claim: s.device_claim.clone(),
            leeway_s: s.leeway_s,
        }))
    }

    /// Accepts or refuses `token` for `user` on `device` at `now` (Unix s).
    pub fn verify(&self, user: u64, device: u32, token: &[u8], now: u64) -> Result<(), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let Some((_, key)) = self.keys.iter().find(|(a, _)| *a == header.alg) else {
            return Err(TokenError::BadSignature);
        };
        let claims = jsonwebtoken::decode::<Value>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => TokenError::Claims,
                _ => TokenError::Malformed,
            })?
            .claims;
        let exp = number(&claims, "exp").ok_or(TokenError::Malformed)?;
        if exp.saturating_add(self.leeway_s) <= now {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or(TokenError::Malformed)?;
            if nbf > now.saturating_add(self.leeway_s) {
                return Err(TokenError::Claims);
            }
        }
        let sub = number(&claims, "sub").ok_or(TokenError::Malformed)?;
        let dev = number(&claims, &self.device_claim).ok_or(TokenError::Malformed)?;
        if sub != user || dev != u64::from(device) {
            return Err(TokenError::Mismatch);
        }
        Ok(())
    }
}

/// A claim that is an unsigned integer, as a JSON number or a decimal
/// string (`sub` is a string by the standard).
fn number(claims: &Value, name: &str) -> Option<u64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A PEM public key: RSA for RS256, else EC (P-256) for ES256.
fn public_key(path: &Path) -> Result<(Algorithm, DecodingKey), JwtError> {
    let err = |reason: String| JwtError::Key {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, k));
    }
    DecodingKey::from_ec_pem(&pem)
        .map(|k| (Algorithm::ES256, k))
        .map_err(|e| err(format!("neither an RSA nor an EC public key in PEM: {e}")))
}

/// The login verifier: imgate's own tokens, and JWTs when configured.
#[derive(Debug)]
pub struct Tokens {
    own: HmacVerifier,
    jwt: Option<JwtVerifier>,
}

impl Tokens {
    /// Own tokens with `secret`, and JWTs as `jwt` says.
    pub fn new(secret: &[u8], jwt: Option<JwtVerifier>) -> Tokens {
        Tokens {
            own: HmacVerifier::new(secret),
            jwt,
        }
    }
}

impl Verifier for Tokens {
    fn verify(&self, user: u64, device: u32, token: &[u8], now: u64) -> Result<(), TokenError> {
        match &self.jwt {
            Some(jwt) if !token.starts_with(b"v1.") => jwt.verify(user, device, token, now),
            _ => self.own.verify(user, device, token, now),
        }
    }
}

//! JSON Web Tokens at login, over real sockets: HS256 with a shared
//! secret, RS256 and ES256 with a public key only; refused when expired,
//! signed with another key, for another audience or issuer, for another
//! user or device, with `alg: none`, or with the public key used as an
//! HMAC secret; imgate's own tokens still accepted beside them.

mod common;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use common::{Client, Got};
use imgate::{
    config::{Config, DriverKind, Durability},
    delivery::Delivery,
    jwt::{JwtSettings, JwtVerifier, Tokens},
    server::{self, Running},
};
use imgate_codec::{ErrorCode, Frame, frame::Login};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const JWT_SECRET: &str = "backend-shared-secret";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    imgate::unix_time().as_secs()
}

/// A gateway whose logins take JWTs as `settings` says (and imgate's own
/// tokens with the test secret).
fn gateway(settings: JwtSettings) -> Running {
    let mut cfg: Config = common::config(DriverKind::Auto);
    cfg.durability = Durability::Memory;
    let store = imgate::store::open(&cfg.data_dir, Durability::Memory).expect("memory store");
    let backend = Delivery::new(store, &cfg).expect("backend");
    let jwt = JwtVerifier::new(&settings).expect("settings");
    let tokens = Tokens::new(common::SECRET.as_bytes(), jwt);
    server::start(cfg, Box::new(backend), Arc::new(tokens)).expect("gateway starts")
}

fn settings() -> JwtSettings {
    JwtSettings {
        secret: JWT_SECRET.into(),
        device_claim: "device".into(),
        leeway_s: 30,
        ..JwtSettings::default()
    }
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("encode")
}

/// What a login with `token` as user 7, device 2 gets: Ok(()) for
/// login:ok, else the error code.
fn login(addr: SocketAddr, token: &str) -> Result<(), ErrorCode> {
    let mut c = Client::connect(addr);
    c.send(Login {
        user: 7,
        device: 2,
        resume: 0,
        token: Bytes::from(token.to_owned()),
    });
    match c.next(Duration::from_secs(5)) {
        Got::Frame(Frame::LoginOk(_)) => Ok(()),
        Got::Frame(Frame::Error(e)) => Err(e.code()),
        other => panic!("expected login:ok or an error, got {other:?}"),
    }
}

#[test]
fn hs256_tokens_log_in_and_bad_ones_are_refused() {
    let g = gateway(settings());
    let addr = g.addr();
    let exp = now() + 600;
    // `sub` as the standard's string, or as a number.
    assert_eq!(
        login(addr, &hs256(&json!({"sub": "7", "device": 2, "exp": exp}))),
        Ok(())
    );
    assert_eq!(
        login(addr, &hs256(&json!({"sub": 7, "device": "2", "exp": exp}))),
        Ok(())
    );
    // imgate's own tokens still work.
    assert_eq!(
        login(
            addr,
            std::str::from_utf8(&common::token(7, 2)).expect("ascii")
        ),
        Ok(())
    );
    // Expired beyond the leeway; inside it, still good.
    assert_eq!(
        login(
            addr,
            &hs256(&json!({"sub": "7", "device": 2, "exp": now() - 120}))
        ),
        Err(ErrorCode::TokenExpired)
    );
    assert_eq!(
        login(
            addr,
            &hs256(&json!({"sub": "7", "device": 2, "exp": now() - 5}))
        ),
        Ok(())
    );
    // Not valid yet.
    let early = json!({"sub": "7", "device": 2, "exp": exp, "nbf": now() + 600});
    assert_eq!(login(addr, &hs256(&early)), Err(ErrorCode::BadToken));
    // Another user, another device, no exp, no device claim.
    for claims in [
        json!({"sub": "8", "device": 2, "exp": exp}),
        json!({"sub": "7", "device": 3, "exp": exp}),
        json!({"sub": "7", "device": 2}),
        json!({"sub": "7", "exp": exp}),
    ] {
        assert_eq!(
            login(addr, &hs256(&claims)),
            Err(ErrorCode::BadToken),
            "{claims}"
        );
    }
    // Signed with another secret.
    let other = EncodingKey::from_secret(b"not the secret").expect("key");
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "7", "device": 2, "exp": exp}),
        &other,
    )
    .expect("encode");
    assert_eq!(login(addr, &forged), Err(ErrorCode::BadToken));
    // alg: none, unsigned.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "7", "device": 2, "exp": exp}))
    );
    assert_eq!(login(addr, &none), Err(ErrorCode::BadToken));
    // Not a token at all.
    assert_eq!(login(addr, "garbage"), Err(ErrorCode::BadToken));
    assert!(g.shutdown());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let g = gateway(JwtSettings {
        issuer: Some("https://auth.example".into()),
        audience: Some("imgate".into()),
        ..settings()
    });
    let exp = now() + 600;
    let good = json!({"sub": "7", "device": 2, "exp": exp,
        "iss": "https://auth.example", "aud": ["billing", "imgate"]});
    assert_eq!(login(g.addr(), &hs256(&good)), Ok(()));
    for claims in [
        json!({"sub": "7", "device": 2, "exp": exp, "iss": "https://auth.example", "aud": "billing"}),
        json!({"sub": "7", "device": 2, "exp": exp, "iss": "https://evil.example", "aud": "imgate"}),
        json!({"sub": "7", "device": 2, "exp": exp, "aud": "imgate"}),
    ] {
        assert_eq!(
            login(g.addr(), &hs256(&claims)),
            Err(ErrorCode::BadToken),
            "{claims}"
        );
    }
    assert!(g.shutdown());
}

#[test]
fn rs256_and_es256_need_only_the_public_key() {
    let exp = now() + 600;
    let claims = json!({"sub": "7", "device": 2, "exp": exp});
    // RS256: a fixed test key pair.
    let g = gateway(JwtSettings {
        secret: String::new(),
        public_key: Some(fixture("jwt-rs256.pub")),
        ..settings()
    });
    let private = std::fs::read(fixture("jwt-rs256.key")).expect("key");
    let rs = EncodingKey::from_rsa_pem(&private).expect("rsa key");
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &rs).expect("sign");
    assert_eq!(login(g.addr(), &token), Ok(()));
    // The public key used as an HMAC secret: refused, HS256 has no key here.
    let public = std::fs::read(fixture("jwt-rs256.pub")).expect("public key");
    let confused = EncodingKey::from_secret(&public).expect("key");
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &confused).expect("sign");
    assert_eq!(login(g.addr(), &token), Err(ErrorCode::BadToken));
    assert!(g.shutdown());

    // ES256: a P-256 key made for the test.
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let dir = std::env::temp_dir().join(format!("imgate-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("es256.pub"), key.public_key_pem()).expect("write");
    let g = gateway(JwtSettings {
        secret: String::new(),
        public_key: Some(dir.join("es256.pub")),
        ..settings()
    });
    let es = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("ec key");
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &es).expect("sign");
    assert_eq!(login(g.addr(), &token), Ok(()));
    // Another P-256 key's signature.
    let other = rcgen::KeyPair::generate().expect("P-256 key");
    let es = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).expect("ec key");
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &es).expect("sign");
    assert_eq!(login(g.addr(), &token), Err(ErrorCode::BadToken));
    assert!(g.shutdown());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_public_key_file_that_is_not_one_is_a_clear_error() {
    let e = JwtVerifier::new(&JwtSettings {
        public_key: Some(fixture("jwt-rs256.key-missing")),
        ..settings()
    })
    .expect_err("missing file");
    assert!(e.to_string().starts_with("jwt_public_key"), "{e}");
    let dir = std::env::temp_dir().join(format!("imgate-jwt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("not-a-key.pem"), "not a key\n").expect("write");
    let e = JwtVerifier::new(&JwtSettings {
        public_key: Some(dir.join("not-a-key.pem")),
        ..settings()
    })
    .expect_err("not a key");
    assert!(
        e.to_string()
            .contains("neither an RSA nor an EC public key"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

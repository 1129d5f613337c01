//! Token verification: PromptFlow's `TokenVerifier::verify` (parse, algorithm check, key by
//! `kid`, Ed25519 signature, claim checks) against the bare Ed25519 signature check of the
//! same token, the floor no JWT library can go under.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signature, SigningKey, Verifier};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::{Claims, TokenVerifier};

pub fn run(rounds: u32, seconds: f64) -> anyhow::Result<()> {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let der = key.to_pkcs8_der().map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let claims = Claims {
        iss: "promptflow".into(),
        aud: "promptflow".into(),
        sub: "01a211d1-00f9-76a8-9ee7-6686b088d9ad".into(),
        sid: Some("01a211d1-012e-77e7-8acb-b94701bd82d7".into()),
        roles: vec!["user".into()],
        scope: "prompts:read prompts:write".into(),
        exp: now + 3600,
        iat: now,
        jti: "01a211d1-0130-769d-983a-9d9b0aca5606".into(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("bench".into());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))?;
    let jwk = Jwk {
        common: CommonParameters {
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some("bench".into()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
        }),
    };
    let set = JwkSet { keys: vec![jwk] };
    let verifier = TokenVerifier::new(
        "promptflow",
        "promptflow",
        Arc::new(move || {
            let set = set.clone();
            Box::pin(async move { Ok(set) })
        }),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(verifier.refresh())?;

    let (input, sig) = token
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("token"))?;
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig)?)?;
    let public = key.verifying_key();
    let duration = Duration::from_secs_f64(seconds);

    let mut bare = Vec::new();
    let mut full = Vec::new();
    for _ in 0..rounds {
        bare.push(ops_per_sec(duration, || {
            public.verify(input.as_bytes(), &signature).is_ok()
        }));
        full.push(ops_per_sec(duration, || {
            runtime.block_on(verifier.verify(&token)).is_ok()
        }));
    }
    let bare = crate::median(bare);
    let full = crate::median(full);
    println!("\n### Access-token verification (one core, release build)\n");
    println!(
        "{rounds} interleaved rounds of {seconds} s each; median. Baseline: the bare Ed25519 signature check of the same token.\n"
    );
    println!("| what | verifications/s | µs each | ratio to baseline |");
    println!("|---|---:|---:|---:|");
    println!(
        "| bare Ed25519 verify (baseline) | {bare:.0} | {:.1} | 1.00 |",
        1e6 / bare
    );
    println!(
        "| `TokenVerifier::verify` (whole JWT) | {full:.0} | {:.1} | {:.2} |",
        1e6 / full,
        full / bare
    );
    Ok(())
}

fn ops_per_sec(duration: Duration, mut op: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            assert!(op(), "verification must succeed");
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

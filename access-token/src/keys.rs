//! Where a verifier gets the public keys: auth-service over gRPC, a JWK Set from
//! configuration, or (inside auth-service) its own key ring.

use std::{future::Future, pin::Pin};

use agora_proto::auth::v1::{self as proto, auth_service_client::AuthServiceClient};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use tonic::transport::Channel;

/// Why the public keys could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("cannot fetch the token verification keys: {0}")]
pub struct KeySourceError(pub String);

/// Supplies the current public keys.
pub trait KeySource: Send + Sync + 'static {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>>;
}

/// A fixed JWK Set, for deployments that configure the keys.
pub struct StaticKeys(pub JwkSet);

impl KeySource for StaticKeys {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>> {
        let keys = self.0.clone();
        Box::pin(async move { Ok(keys) })
    }
}

/// A JWK Set file, read again at every fetch: replacing the file rotates the
/// keys of a verifier kept fresh, without a restart.
pub struct KeysFile(pub std::path::PathBuf);

impl KeysFile {
    /// The set the file holds now.
    pub fn read(&self) -> Result<JwkSet, KeySourceError> {
        let path = self.0.display();
        let text = std::fs::read_to_string(&self.0)
            .map_err(|error| KeySourceError(format!("cannot read {path}: {error}")))?;
        serde_json::from_str(&text)
            .map_err(|error| KeySourceError(format!("{path} is not a JWK Set: {error}")))
    }
}

impl KeySource for KeysFile {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>> {
        // A small local file: read in place rather than on a blocking thread.
        let keys = self.read();
        Box::pin(async move { keys })
    }
}

/// The keys that auth-service publishes through `AuthService/GetJwks`.
pub struct AuthServiceKeys {
    client: AuthServiceClient<Channel>,
}

impl AuthServiceKeys {
    /// `channel` may be lazy: nothing is sent until the first token needs a key.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

impl KeySource for AuthServiceKeys {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<JwkSet, KeySourceError>> + Send + '_>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let response = client
                .get_jwks(proto::GetJwksRequest {})
                .await
                .map_err(|status| KeySourceError(status.message().to_owned()))?;
            let keys = response
                .into_inner()
                .keys
                .iter()
                .filter_map(jwk_from_proto)
                .collect();
            Ok(JwkSet { keys })
        })
    }
}

/// The wire form of an Ed25519 public key, or `None` for a key of any other kind.
pub fn jwk_to_proto(jwk: &Jwk) -> Option<proto::Jwk> {
    let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
        return None;
    };
    if okp.curve != EllipticCurve::Ed25519 {
        return None;
    }
    Some(proto::Jwk {
        kty: "OKP".to_owned(),
        crv: "Ed25519".to_owned(),
        x: okp.x.clone(),
        kid: jwk.common.key_id.clone().unwrap_or_default(),
        alg: "EdDSA".to_owned(),
        r#use: "sig".to_owned(),
    })
}

/// The key a wire JWK describes, or `None` unless it is an Ed25519 signing key with
/// an id.
pub fn jwk_from_proto(jwk: &proto::Jwk) -> Option<Jwk> {
    let usable = jwk.kty == "OKP"
        && jwk.crv == "Ed25519"
        && jwk.alg == "EdDSA"
        && matches!(jwk.r#use.as_str(), "sig" | "")
        && !jwk.kid.is_empty();
    usable.then(|| Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(jwk.kid.clone()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: jwk.x.clone(),
        }),
    })
}

/// Whether a JWK can verify Agora tokens: EdDSA only, whatever else a set holds.
pub(crate) fn is_eddsa(jwk: &Jwk) -> bool {
    matches!(
        &jwk.algorithm,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519
    ) && jwk
        .common
        .key_algorithm
        .is_none_or(|alg| alg == KeyAlgorithm::EdDSA)
}

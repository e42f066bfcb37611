//! msgpack with named fields: each struct is a map keyed by field name.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding event: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding event: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Encodes an event as msgpack with named fields.
pub fn encode<T: Serialize>(event: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(event)?)
}

/// Decodes an event; unknown fields are ignored and missing optional fields take their defaults.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

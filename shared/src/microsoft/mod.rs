//! Talking to Microsoft: the identity platform (tokens, certificate
//! assertions, what each AADSTS code means, the claims of its tokens and
//! discovery documents) and Graph (the client and the paths it is called
//! on).

pub mod aadsts;
pub mod body_prefix;
pub mod certificate;
pub mod claims;
pub mod graph;
pub mod pacing;
pub mod paths;
pub mod sealed_tokens;
mod stored_token;
pub mod tokens;

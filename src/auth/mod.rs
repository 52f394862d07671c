//! Who is calling: bearer tokens, the principal and role each maps to, and what each role may
//! do.
//!
//! A token is `mob_` and 64 hex digits from the operating system's random source. Only its
//! SHA-256 is stored. At 256 bits of entropy a plain hash cannot be reversed by guessing, so
//! no salt or slow hash is needed. Look-ups are cached for a few seconds, so a revocation reaches
//! every instance within [`CACHE_TTL`].

pub mod policy;
pub mod tokens;

pub use policy::{Principal, Role};
pub use tokens::{CACHE_TTL, CreatedToken, Tokens};

//! The trust path: mutual TLS for agents ([`tls`]), the agent identity
//! taken from its verified certificate ([`identity`]), revocation that cuts
//! off live streams within seconds ([`revocation`]), and the campus CA and
//! issuing CA ([`pki`]). Nothing here reads events or writes ClickHouse
//! rows other than revocations.

pub mod identity;
pub mod pki;
pub mod revocation;
pub mod tls;

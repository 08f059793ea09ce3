//! Campus-wide campaigns: the correlator that finds them in every agent's
//! events ([`correlate`]), the alerts sent once per campaign state change
//! (and once per revoked PC's return, which enrollment records) ([`alert`]),
//! and the blocklist feed of outside scanners for firewalls ([`feed`]),
//! with its listing policy ([`listing`]). Nothing here talks to agents.

pub mod alert;
pub mod base64;
pub mod correlate;
pub mod feed;
pub mod listing;

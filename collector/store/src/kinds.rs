//! The closed sets that doorwatch stores in `Enum8` columns: campaign kinds
//! and states, campaign member kinds, episode states, outbound anomaly
//! kinds, alert outcomes and subjects, and triage states.
//!
//! Each is a Rust enum whose discriminants are the column's numbers, so a
//! `Row` field holds the enum itself and the `clickhouse` crate reads and
//! writes it as the `Int8` the column expects. Labels are the column's
//! labels; the CLI, the alerts and the console all print these, and the
//! console's triage form parses them. A number the column may hold but this
//! build does not know is a read error that names the set, never a silent
//! "unknown". The schema's `Enum8(...)` definitions live in the migrations;
//! a test here checks they list exactly these values.

use std::fmt;

/// Defines one `Enum8` set: the enum, its labels, and its serde form (the
/// `Int8` number).
macro_rules! enum8 {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$variant_meta:meta])* $variant:ident = $value:literal => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i8)]
        pub enum $name {
            $($(#[$variant_meta])* $variant = $value,)+
        }

        impl $name {
            /// Every value, in the column's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The column's label, also used on screens and in JSON.
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }

            /// The value with this label, if it is one.
            pub fn parse(label: &str) -> Option<Self> {
                match label {
                    $($label => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The value stored as `number`, if it is one.
            pub fn from_number(number: i8) -> Option<Self> {
                match number {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The column's `Enum8(...)` definition.
            pub fn enum8_sql() -> String {
                let values: Vec<String> = Self::ALL
                    .iter()
                    .map(|v| format!("'{}' = {}", v.label(), *v as i8))
                    .collect();
                format!("Enum8({})", values.join(", "))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_i8(*self as i8)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let number = <i8 as serde::Deserialize>::deserialize(deserializer)?;
                Self::from_number(number).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{number} is not a known {} (this build knows {})",
                        $what,
                        Self::enum8_sql(),
                    ))
                })
            }
        }
    };
}

enum8! {
    /// What a campaign is: one source sweeping many PCs, many sources in
    /// one network, a campus PC scanning others, or several PCs with the
    /// same suspicious outbound traffic.
    CampaignKind, "campaign kind" {
        Sweep = 1 => "sweep",
        Distributed = 2 => "distributed",
        Internal = 3 => "internal",
        /// Several campus PCs with the same suspicious outbound traffic.
        Outbound = 4 => "outbound",
    }
}

enum8! {
    /// Where a campaign is in its life: active, quiet for a while, or
    /// closed after a longer silence.
    CampaignState, "campaign state" {
        Open = 1 => "open",
        Quiet = 2 => "quiet",
        Closed = 3 => "closed",
    }
}

enum8! {
    /// What a campaign member is: an outside source, a campus PC (agent
    /// id), or a port.
    MemberKind, "campaign member kind" {
        Source = 1 => "source",
        Pc = 2 => "pc",
        Port = 3 => "port",
    }
}

enum8! {
    /// An episode's state as the agent reported it (scans, floods and
    /// outbound anomalies alike).
    EpisodeState, "episode state" {
        Detected = 1 => "detected",
        Active = 2 => "active",
        Closed = 3 => "closed",
    }
}

enum8! {
    /// What a PC's outbound anomaly is.
    AnomalyKind, "outbound anomaly kind" {
        UploadVolume = 1 => "upload_volume",
        Scan = 2 => "scan",
        SmtpFanout = 3 => "smtp_fanout",
        FailedConnections = 4 => "failed_connections",
    }
}

enum8! {
    /// How one alert on one channel ended.
    AlertStatus, "alert status" {
        Sent = 1 => "sent",
        GaveUp = 2 => "gave_up",
    }
}

enum8! {
    /// What an alert is about: a campaign, or a revoked PC coming back (an
    /// enrollment that claimed the hostname, or presented the key, of a
    /// revoked agent; see `revoked_returns`).
    AlertSubject, "alert subject" {
        Campaign = 1 => "campaign",
        RevokedPcReturned = 2 => "revoked_pc_returned",
    }
}

enum8! {
    /// What security staff decided about a campaign; `New` until someone
    /// triages it.
    TriageState, "triage state" {
        New = 1 => "new",
        Acknowledged = 2 => "acknowledged",
        Resolved = 3 => "resolved",
        FalsePositive = 4 => "false_positive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIGRATIONS, Step};

    /// The newest `Enum8` definition of `column` in the migrations.
    fn newest_definition(column: &str, first_label: &str) -> String {
        let needle = format!("{column} Enum8('{first_label}'");
        let sql: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| m.steps.iter())
            .map(|step| match step {
                Step::Create(table) => table.columns.to_owned(),
                Step::AddColumn {
                    column, definition, ..
                }
                | Step::ModifyColumn {
                    column, definition, ..
                } => format!("{column} {definition}"),
            })
            .collect();
        let statement = sql
            .iter()
            .rev()
            .find(|s| s.contains(&needle))
            .unwrap_or_else(|| panic!("no migration defines {needle}"));
        let start = statement.find(&needle).expect("found") + column.len() + 1;
        let end = start + statement[start..].find(')').expect("closing bracket") + 1;
        statement[start..end].to_owned()
    }

    #[test]
    fn the_schema_lists_exactly_these_values() {
        for (column, first, expected) in [
            ("kind", "sweep", CampaignKind::enum8_sql()),
            ("state", "open", CampaignState::enum8_sql()),
            ("member", "source", MemberKind::enum8_sql()),
            ("state", "detected", EpisodeState::enum8_sql()),
            ("kind", "upload_volume", AnomalyKind::enum8_sql()),
            ("status", "sent", AlertStatus::enum8_sql()),
            ("subject", "campaign", AlertSubject::enum8_sql()),
            ("state", "new", TriageState::enum8_sql()),
        ] {
            assert_eq!(newest_definition(column, first), expected, "{column}");
        }
    }

    #[test]
    fn labels_and_numbers_round_trip() {
        for kind in CampaignKind::ALL {
            assert_eq!(CampaignKind::parse(kind.label()), Some(*kind));
            assert_eq!(CampaignKind::from_number(*kind as i8), Some(*kind));
        }
        for state in TriageState::ALL {
            assert_eq!(TriageState::parse(state.label()), Some(*state));
        }
        assert_eq!(TriageState::parse("closed"), None);
        assert_eq!(EpisodeState::from_number(0), None);
    }

    #[test]
    fn an_unknown_number_is_an_error_that_names_the_set() {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::Error;
        let err = CampaignKind::deserialize(IntoDeserializer::<Error>::into_deserializer(9i8))
            .expect_err("9 is no kind");
        assert!(
            err.to_string().contains("9 is not a known campaign kind"),
            "{err}"
        );
        let ok = EpisodeState::deserialize(IntoDeserializer::<Error>::into_deserializer(3i8));
        assert_eq!(ok.expect("3 is closed"), EpisodeState::Closed);
    }
}

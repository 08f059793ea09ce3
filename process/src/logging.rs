//! The `--log-format` and `--log-level` flags every binary takes, the
//! `tracing` subscriber they set up (text for people, JSON for log
//! shippers; always on stderr), and [`error_chain`], how an error and its
//! sources read on one log line.

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging flags, for `#[command(flatten)]` into a binary's CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, e.g. "info" or "info,doorwatch_collector=debug".
    /// The RUST_LOG environment variable overrides it.
    #[arg(long, default_value = "info", global = true)]
    pub log_level: String,
}

impl LogArgs {
    /// Installs the global subscriber. Colour only for people at a
    /// terminal; journald and files get plain text.
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&self.log_level));
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}

/// An error and its sources, joined with ": ". Transport errors (tonic,
/// hyper, reqwest) hide the useful part in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach the collector")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_source() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            error_chain(&error),
            "cannot reach the collector: connection refused"
        );
    }
}

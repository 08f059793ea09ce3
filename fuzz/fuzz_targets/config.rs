//! TOML text into the agent's, the collector's and the console's config,
//! then `validate()`, which is pure (files named in a config are read only
//! later, by `read_files`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = toml::from_str::<doorwatch_agent::config::AgentConfig>(text) {
        let _ = config.validate();
    }
    if let Ok(config) = toml::from_str::<doorwatch_collector::config::CollectorConfig>(text) {
        let _ = config.validate();
    }
    if let Ok(config) = toml::from_str::<doorwatch_console::config::ConsoleConfig>(text) {
        let _ = config.validate();
    }
});

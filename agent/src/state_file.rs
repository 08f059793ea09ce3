//! Small JSON files the agent keeps beside its spool: the status file that
//! `doorwatch-agent status` reads, and the upload baseline the outbound
//! monitor has learned. Each is named after the spool folder
//! (`/var/lib/doorwatch/spool.status.json`), so agents with different
//! spools never share one, and written atomically (temporary file, fsync,
//! rename), so a crash leaves the old file or the new one, never half.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The file `suffix` ("status.json") beside `spool_dir`.
pub fn beside_spool(spool_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = spool_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "spool".into());
    name.push(".");
    name.push(suffix);
    spool_dir.with_file_name(name)
}

/// Writes `value` to `path` atomically.
pub fn write(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads `path`; a file that is not the expected JSON is an
/// `InvalidData` error.
pub fn read<T: DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_after_the_spool_and_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = beside_spool(&dir.path().join("spool"), "baseline.json");
        assert_eq!(path, dir.path().join("spool.baseline.json"));
        write(&path, &vec![1u64, 2, 3]).expect("write");
        assert_eq!(read::<Vec<u64>>(&path).expect("read"), vec![1, 2, 3]);
        std::fs::write(&path, b"{not json").expect("corrupt it");
        let error = read::<Vec<u64>>(&path).expect_err("corrupt");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }
}

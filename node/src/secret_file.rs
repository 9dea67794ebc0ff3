//! Files holding secrets (production): the chain account's key and the API access token.
//!
//! A secret file is made readable and writable by its owner only, written in full and synced
//! before it is used, and refused when others can read it (a key or token anyone on the
//! machine could copy is not a secret).

use std::io::Write;
use std::path::Path;

/// The file's text, trimmed of surrounding whitespace. Fails when the file cannot be read or
/// when its group or others can read it.
pub fn read(path: &Path) -> Result<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} can be read by others (mode {:o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Makes a new file at `path` holding `text`, readable by its owner only. Fails when the
/// file exists: a secret is never overwritten. The text is written and synced under a
/// temporary name first and then linked into place, so a crash never leaves an empty or
/// partial secret behind.
pub fn create(path: &Path, text: &str) -> Result<(), String> {
    let name = path.file_name().ok_or_else(|| format!("{} names no file", path.display()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temporary = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&temporary); // left by a crash of this same process id
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&temporary)
        .and_then(|mut file| file.write_all(text.as_bytes()).and_then(|()| file.sync_all()))
        .map_err(|e| format!("writing {}: {e}", temporary.display()));
    // A hard link, unlike a rename, fails when `path` exists.
    let linked = written.and_then(|()| {
        std::fs::hard_link(&temporary, path).map_err(|e| format!("creating {}: {e}", path.display()))
    });
    let _ = std::fs::remove_file(&temporary);
    linked?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_owner_only_never_overwritten_and_refused_when_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create(&path, "s3cret\n").unwrap();
        assert_eq!(read(&path).unwrap(), "s3cret");
        assert!(create(&path, "other").unwrap_err().contains("creating"));
        assert_eq!(read(&path).unwrap(), "s3cret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(read(&path).unwrap_err().contains("chmod 600"), "{:?}", read(&path));
        }
        assert!(read(&dir.path().join("missing")).is_err());
    }
}

//! What the snapshot directory holds, for `GET /snapshots`: read from the files, so it shows what
//! a downstream job would see.
//!
//! May import: what `serve/mod.rs` allows its layer; this module uses `crate::analytics::tables`.

use std::path::Path;

use crate::analytics::tables::{Table, SUCCESS};

/// One table's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableListing {
    /// The table's name.
    pub table: &'static str,
    /// Partitions (`dt` values) with `_SUCCESS`, ascending.
    pub closed: Vec<String>,
    /// Partitions without it (being filled, or left by the end of a finite input), ascending.
    pub incomplete: Vec<String>,
}

/// The partitions of every table present under `dir`.
///
/// # Errors
/// A directory cannot be read.
pub fn list(dir: &Path) -> std::io::Result<Vec<TableListing>> {
    let mut out = Vec::new();
    for t in Table::ALL {
        let tdir = dir.join(t.name());
        let Ok(entries) = std::fs::read_dir(&tdir) else { continue };
        let (mut closed, mut incomplete) = (Vec::new(), Vec::new());
        if t == Table::Movies && tdir.join(SUCCESS).is_file() {
            closed.push("once".to_string());
        }
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(dt) = name.strip_prefix("dt=") else { continue };
            if e.path().join(SUCCESS).is_file() {
                closed.push(dt.to_string());
            } else {
                incomplete.push(dt.to_string());
            }
        }
        closed.sort_unstable();
        incomplete.sort_unstable();
        out.push(TableListing { table: t.name(), closed, incomplete });
    }
    Ok(out)
}

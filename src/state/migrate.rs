//! What a build does with state written by another version of the stored layout.
//!
//! Today there is one answer: state of any version other than [`STATE_VERSION`] is refused with
//! a message saying so, and nothing is changed on disk (a silent reset would re-read the input
//! from the start without telling anyone). Versions 1–3 were development layouts that no release
//! wrote.
//!
//! **Adding a migration.** When a change to a stored type or key bumps [`STATE_VERSION`] from
//! `N` to `N + 1`:
//! 1. keep the old type (or a decoder for it) here, as `v{N}::UserState` or similar;
//! 2. add an arm `N => upgrade_from_{N}(store)?` to [`migrate`] that reads every affected value
//!    in the old form, writes it in the new one and rewrites the meta record's `version`, all in
//!    one sled batch (so a crash leaves either the old state or the new, never a mix);
//! 3. fall through to the next arm, so state several versions old is upgraded step by step;
//! 4. add a test that writes a store in the old layout (a fixture made by the old build) and
//!    loads it.
//!
//! May import: `crate::state::codec`, `crate::core` (never the store itself: the store calls
//! this, with its database).

use crate::state::codec::STATE_VERSION;

/// State this build cannot bring up to [`STATE_VERSION`]: why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Brings state whose meta record says `version` up to [`STATE_VERSION`], or refuses it. Called
/// by the store before it reads anything else. (The first real step will need the database to
/// rewrite, in one batch per step: it then gains a `&sled::Db` parameter.)
///
/// # Errors
/// [`Unsupported`] for a version this build cannot read.
pub fn migrate(version: u8) -> Result<(), Unsupported> {
    match version {
        STATE_VERSION => Ok(()),
        v => Err(Unsupported(format!(
            "written by state version {v}, this build reads {STATE_VERSION}; use a new --state directory"
        ))),
    }
}

//! Durable state: the sled store behind a narrow interface, and the one path to disk.
//!
//! Owns: the encoding of stored values and the rating log ([`codec`]), the checkpoint's keys, its
//! atomic batch and the [`checkpoint::Store`] that writes and reads it ([`checkpoint`]), and what
//! happens to state of another layout version ([`migrate`]), and the copy that lets a refused open
//! leave a damaged directory as it was ([`guard`]). Nothing else writes to sled.
//!
//! May import: `crate::core`, `crate::model`, `crate::analytics`, `streamflix-schemas`. Never
//! `crate::serve`, `crate::io` or `crate::cli`, nor the replay crate.

pub mod checkpoint;
pub mod codec;
pub mod guard;
pub mod migrate;

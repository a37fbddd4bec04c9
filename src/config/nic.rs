//! `network:` — which backend maqet's NIC uses: QEMU's user-mode network
//! (`user`, the default) or passt, run as a companion unit
//! (`maqet_host::companion::passt`) that QEMU reaches over a Unix socket.
//!
//! The original tool stored `network` and ignored it; a mapping there (its
//! configs had `network: {type: user}`) is still accepted with a warning.

use std::path::PathBuf;

use super::node::{Node, Value};
use super::validate::{found, Validator};
use maqet_base::suggest;

const MODES: &[&str] = &["user", "passt"];

/// The NIC's backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// Not set: a user-mode NIC when `ports`/`ssh` need one, none otherwise.
    #[default]
    Unset,
    /// `network: user`: QEMU's user-mode network, always.
    User,
    /// `network: passt`: passt (this binary, found at validation).
    Passt(PathBuf),
}

impl NetworkMode {
    pub fn is_set(&self) -> bool {
        *self != NetworkMode::Unset
    }

    pub fn passt(&self) -> Option<&PathBuf> {
        match self {
            NetworkMode::Passt(p) => Some(p),
            _ => None,
        }
    }
}

pub(crate) fn validate(v: &mut Validator, key_loc: &super::Location, node: &Node) -> NetworkMode {
    match &node.value {
        Value::Str(s) if s == "user" => NetworkMode::User,
        Value::Str(s) if s == "passt" => match maqet_base::programs::find_passt() {
            Ok(p) => NetworkMode::Passt(p),
            Err(e) => {
                v.error(&node.loc, format!("network: {e}"));
                NetworkMode::Unset
            }
        },
        Value::Str(s) => {
            v.error(
                &node.loc,
                format!(
                    "network: unknown network '{s}'{}; expected 'user' (QEMU's user-mode network) or 'passt'",
                    suggest::hint(s, MODES)
                ),
            );
            NetworkMode::Unset
        }
        Value::Map(_) => {
            v.warn(
                key_loc,
                "'network' as a mapping is the original tool's, which ignored it, and is ignored; write `network: user` or `network: passt` (or configure networking through arguments: netdev/device)",
            );
            NetworkMode::Unset
        }
        _ => {
            v.error(
                &node.loc,
                format!("network: expected 'user' or 'passt', {}", found(node)),
            );
            NetworkMode::Unset
        }
    }
}

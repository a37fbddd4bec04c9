//! What maqet knows about one VM beyond its definition: for now, whose
//! data directory a running unit and its runner belong to.

pub mod owner;

pub use owner::{owned_by, Owner, OwnerError, UnitOwner};

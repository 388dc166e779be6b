//! The store: typed values in a backend, as plain targets or as verified records.
//!
//! | file | what |
//! |---|---|
//! | `result_store` | [`ResultStore`]: targets, records, locations from templates |
//! | [`record`] | the record format: magic, version, header, payload, checks |
//! | `header_scan` | a hit's header read in one pass when it has the shape cairn writes |
//! | `header_write` | a header written as JSON without the serializer machinery |
//! | `serializer` | [`Serializer`]: JSON, MessagePack, raw bytes, text; zstd |

mod header_scan;
mod header_write;
pub mod record;
pub(crate) mod result_store;
pub(crate) mod serializer;

pub use result_store::{Record, ResultStore};
pub use serializer::{Compression, Format, Serializer};

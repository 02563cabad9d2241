//! Errors of the MongoDB store: every driver error becomes a [`StoreError`] naming the
//! collection and operation, and duplicate-key errors of unordered inserts are told apart.

use std::collections::BTreeSet;

use followup_core::store::StoreError;
use mongodb::error::{Error, ErrorKind, WriteFailure};

/// Server code of a write that would repeat a unique key (`E11000 duplicate key`).
const DUPLICATE_KEY: i32 = 11000;

/// Builds the error of a failed operation on `collection`. The driver's message names the
/// server address and the cause, never the credentials of the URI.
pub(super) fn unavailable(collection: &str, operation: &str, error: &Error) -> StoreError {
    StoreError::Unavailable(format!("mongodb: {operation} on {collection}: {error}"))
}

/// Returns the positions of the documents an unordered `insert_many` left out because their
/// key was already there, or the error when anything else failed.
pub(super) fn duplicates_of_insert(
    collection: &str,
    error: Error,
) -> Result<BTreeSet<usize>, StoreError> {
    match error.kind.as_ref() {
        ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
            let errors = failure.write_errors.as_deref().unwrap_or_default();
            if errors.iter().all(|error| error.code == DUPLICATE_KEY) {
                return Ok(errors.iter().map(|error| error.index).collect());
            }
            Err(unavailable(collection, "insert_many", &error))
        }
        _ => Err(unavailable(collection, "insert_many", &error)),
    }
}

/// Tells whether a single-document write failed on a unique key.
pub(super) fn is_duplicate_key(error: &Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(failure)) if failure.code == DUPLICATE_KEY
    )
}

//! DynamoDB failures as `StoreError`s, split by whether a retry can help.

use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

pub(super) fn invalid_request(error: BuildError) -> StoreError {
    StoreError::Corrupt(format!("could not build a DynamoDB request: {error}"))
}

/// Splits SDK failures by whether a retry can help: a request DynamoDB
/// rejects as invalid will be rejected again; anything else (throttling,
/// timeouts, connection failures, server errors, a missing table) may pass later.
pub(super) fn sdk_error<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let rejected = matches!(error.code(), Some("ValidationException" | "SerializationException"));
    let detail = format!("DynamoDB {operation}: {}", DisplayErrorContext(&error));
    if rejected { StoreError::Corrupt(format!("request rejected: {detail}")) } else { StoreError::Unavailable(detail) }
}

pub(super) fn corrupt(table: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table}: {detail}"))
}

//! Turning `aws-sdk-s3` failures into cairn's [`Error`] kinds.

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::endpoint::error::ResolveEndpointError;
use cairn_backend::{is_transient_status, Error, PutMode, Source};

/// What a failed S3 call means, before it is tied to an operation and a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The object does not exist (`NoSuchKey`, a bare 404).
    NotFound,
    /// The bucket does not exist (`NoSuchBucket`).
    NoSuchBucket,
    /// A conditional write lost (412 `PreconditionFailed`, 409 `ConditionalRequestConflict`).
    Precondition,
    /// The request's byte range is not satisfiable (416 `InvalidRange`).
    InvalidRange,
    /// The store rejected the credentials or denied access (401, 403, `AccessDenied`, ...).
    Denied,
    /// No credentials could be loaded (no provider had any, unknown profile, ...).
    NoCredentials,
    /// Worth another attempt: throttling, 5xx, timeouts, connection failures.
    Transient,
    /// Nothing listens at the endpoint (connection refused): reported at once, not
    /// retried.
    Refused,
    /// The multipart upload named is not open (`NoSuchUpload`): completed, or aborted
    /// (by a lifecycle rule, or by a writer clearing uploads a lost answer opened).
    NoSuchUpload,
    /// Anything else.
    Other,
}

/// Classifies an S3 error answer by its error code and HTTP status.
pub(crate) fn classify(code: Option<&str>, status: Option<u16>) -> Class {
    match code {
        Some("NoSuchBucket") => return Class::NoSuchBucket,
        Some("NoSuchKey") | Some("NotFound") => return Class::NotFound,
        Some("PreconditionFailed") | Some("ConditionalRequestConflict") => {
            return Class::Precondition
        }
        Some("InvalidRange") => return Class::InvalidRange,
        Some(
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AllAccessDisabled"
            | "AccountProblem"
            | "InvalidSecurity"
            | "MissingSecurityHeader"
            | "Forbidden"
            | "Unauthorized",
        ) => return Class::Denied,
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "InternalError"
            | "ServiceUnavailable"
            | "OperationAborted",
        ) => return Class::Transient,
        // A 404 that does not mean "no such object".
        Some("NoSuchUpload") => return Class::NoSuchUpload,
        _ => {}
    }
    match status {
        Some(404) => Class::NotFound,
        Some(412) => Class::Precondition,
        Some(416) => Class::InvalidRange,
        Some(401 | 403) => Class::Denied,
        Some(s) if is_transient_status(s) => Class::Transient,
        _ => Class::Other,
    }
}

/// Whether `err`, or anything in its chain of sources, is of type `T`.
fn chain_has<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// An error and its sources, as `a: b: c` (a source already part of its parent's
/// message is not repeated).
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

/// A failed S3 call, classified, with a readable message and the SDK error as source.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) class: Class,
    message: String,
    source: Option<Source>,
    /// How long the store asked to wait (`Retry-After`), for throttling answers.
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl Failure {
    /// Classifies an SDK error.
    pub(crate) fn from_sdk<E>(err: SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let retry_after = err
            .raw_response()
            .and_then(|r| r.headers().get("retry-after"))
            .and_then(cairn_backend::parse_retry_after);
        let code = err.code().map(str::to_owned);
        let service_message = err.message().map(str::to_owned);
        let (class, message) = match &err {
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let class = classify(code.as_deref(), status);
                let mut message = String::new();
                if class == Class::Denied {
                    message.push_str("the store rejected the credentials or denied access: ");
                }
                match (&code, &service_message) {
                    (Some(c), Some(m)) => message.push_str(&format!("{c}: {m}")),
                    (Some(c), None) => message.push_str(c),
                    (None, Some(m)) => message.push_str(m),
                    (None, None) => message.push_str(&chain(&err)),
                }
                if let Some(s) = status {
                    message.push_str(&format!(" (HTTP {s})"));
                }
                (class, message)
            }
            SdkError::TimeoutError(_) => (
                Class::Transient,
                format!("request timed out: {}", chain(&err)),
            ),
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
                if let Some(c) = chain_has::<CredentialsError>(&err) {
                    (
                        Class::NoCredentials,
                        format!(
                            "AWS credentials are missing or could not be loaded \
                             (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, \
                             or an existing profile): {}",
                            chain(c)
                        ),
                    )
                } else if chain_has::<ResolveEndpointError>(&err).is_some() {
                    (
                        Class::Other,
                        format!("cannot resolve the S3 endpoint: {}", chain(&err)),
                    )
                } else if chain_has::<std::io::Error>(&err)
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                {
                    (
                        Class::Refused,
                        format!(
                            "connection refused: nothing listens at the S3 endpoint (is the \
                             endpoint right and the store running?): {}",
                            chain(&err)
                        ),
                    )
                } else if let SdkError::DispatchFailure(d) = &err {
                    if d.is_user() {
                        (Class::Other, chain(&err))
                    } else {
                        (
                            Class::Transient,
                            format!("cannot reach S3: {}", chain(&err)),
                        )
                    }
                } else {
                    (Class::Other, chain(&err))
                }
            }
            _ => (Class::Other, chain(&err)),
        };
        Failure {
            class,
            message,
            source: Some(Box::new(err)),
            retry_after,
        }
    }

    /// A transient failure: an operation that ran out of time.
    pub(crate) fn timed_out(message: String) -> Failure {
        Failure {
            class: Class::Transient,
            message,
            source: None,
            retry_after: None,
        }
    }

    /// A failure of a given class with a message and no SDK error behind it.
    #[cfg(test)]
    pub(crate) fn new(class: Class, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
            source: None,
            retry_after: None,
        }
    }

    /// Adds context to the message.
    pub(crate) fn with_context(mut self, context: &str) -> Failure {
        self.message.push_str(context);
        self
    }

    fn into_source(self) -> Source {
        Box::new(Cause {
            message: self.message,
            source: self.source,
        })
    }

    /// The cairn error for this failure of operation `op` on `key`.
    pub(crate) fn into_error(self, backend: &str, bucket: &str, key: &str, op: Op<'_>) -> Error {
        let backend = backend.to_owned();
        let key = key.to_owned();
        match (self.class, op) {
            (Class::NoSuchBucket, _) => Error::BucketNotFound {
                backend,
                bucket: bucket.to_owned(),
            },
            (Class::Precondition, Op::Write(PutMode::Create)) => {
                Error::AlreadyExists { backend, key }
            }
            (Class::Precondition | Class::NotFound, Op::Write(PutMode::IfMatch(v))) => {
                Error::PreconditionFailed {
                    backend,
                    key,
                    expected: v.clone(),
                }
            }
            (Class::NotFound, Op::Read) => Error::NotFound { backend, key },
            (Class::Denied | Class::NoCredentials, _) => Error::PermissionDenied {
                backend,
                key,
                source: self.into_source(),
            },
            (Class::Refused, _) => Error::Unavailable {
                backend,
                key,
                source: Box::new(cairn_backend::ConnectionRefused(self.message)),
            },
            (Class::Transient, _) => {
                let retry_after = self.retry_after;
                let source = self.into_source();
                Error::Unavailable {
                    backend,
                    key,
                    source: match retry_after {
                        // Kept for callers that retry again (RetryPolicy::run).
                        Some(after) => Box::new(cairn_backend::RetryAfter {
                            after,
                            message: source.to_string(),
                        }),
                        None => source,
                    },
                }
            }
            _ => Error::Other {
                backend,
                key,
                source: self.into_source(),
            },
        }
    }
}

/// The operation a failure happened in; it decides what a 404 or a 412 means.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    /// head, get: a 404 is [`Error::NotFound`].
    Read,
    /// put with this mode.
    Write(&'a PutMode),
    /// delete, list and anything else.
    Other,
}

/// The source carried by cairn errors from this crate: a message, and the SDK error.
#[derive(Debug)]
struct Cause {
    message: String,
    source: Option<Source>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_backend::ErrorKind;

    #[test]
    fn chains_are_displayed_once_each() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl StdError for E {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "dispatch failure",
            Some(Box::new(E(
                "io error",
                Some(Box::new(E("io error", Some(Box::new(E("refused", None)))))),
            ))),
        );
        assert_eq!(chain(&e), "dispatch failure: io error: refused");
    }

    #[test]
    fn codes_win_over_statuses() {
        assert_eq!(
            classify(Some("NoSuchBucket"), Some(404)),
            Class::NoSuchBucket
        );
        assert_eq!(classify(Some("NoSuchKey"), Some(404)), Class::NotFound);
        assert_eq!(
            classify(Some("NoSuchUpload"), Some(404)),
            Class::NoSuchUpload
        );
        assert_eq!(classify(Some("NotFound"), Some(404)), Class::NotFound);
        assert_eq!(
            classify(Some("PreconditionFailed"), Some(412)),
            Class::Precondition
        );
        assert_eq!(
            classify(Some("ConditionalRequestConflict"), Some(409)),
            Class::Precondition
        );
        assert_eq!(
            classify(Some("InvalidRange"), Some(416)),
            Class::InvalidRange
        );
        assert_eq!(classify(Some("SlowDown"), Some(503)), Class::Transient);
        for code in [
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ] {
            assert_eq!(classify(Some(code), Some(403)), Class::Denied, "{code}");
        }
    }

    #[test]
    fn bare_statuses_are_classified() {
        assert_eq!(classify(None, Some(404)), Class::NotFound);
        assert_eq!(classify(None, Some(412)), Class::Precondition);
        assert_eq!(classify(None, Some(403)), Class::Denied);
        assert_eq!(classify(None, Some(401)), Class::Denied);
        assert_eq!(classify(None, Some(500)), Class::Transient);
        assert_eq!(classify(None, Some(503)), Class::Transient);
        assert_eq!(classify(None, Some(429)), Class::Transient);
        assert_eq!(classify(None, Some(400)), Class::Other);
        assert_eq!(classify(Some("Weird"), None), Class::Other);
        // A 409 that is not a conditional-write conflict is not a lost race.
        assert_eq!(classify(Some("BucketNotEmpty"), Some(409)), Class::Other);
    }

    #[test]
    fn the_operation_decides_what_a_precondition_means() {
        let url = "s3://b/p";
        let create = PutMode::Create;
        let if_match = PutMode::IfMatch("\"v1\"".into());
        let f = || Failure::new(Class::Precondition, "412");
        assert_eq!(
            f().into_error(url, "b", "k", Op::Write(&create)).kind(),
            ErrorKind::AlreadyExists
        );
        let e = f().into_error(url, "b", "k", Op::Write(&if_match));
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        assert!(e.to_string().contains("\"v1\""), "{e}");
        // If-Match on a missing object is a 404 on S3: the version did not match.
        let e =
            Failure::new(Class::NotFound, "404").into_error(url, "b", "k", Op::Write(&if_match));
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        let e = Failure::new(Class::NotFound, "404").into_error(url, "b", "k", Op::Read);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("s3://b/p") && e.to_string().contains("'k'"));
    }

    #[test]
    fn buckets_credentials_and_transients_map_to_their_kinds() {
        let url = "s3://nope/p";
        let e = Failure::new(Class::NoSuchBucket, "x").into_error(url, "nope", "k", Op::Read);
        assert_eq!(e.kind(), ErrorKind::BucketNotFound);
        assert!(e.to_string().contains("'nope'"), "{e}");
        let e = Failure::new(Class::NoCredentials, "AWS credentials are missing").into_error(
            url,
            "nope",
            "k",
            Op::Other,
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("credentials"), "{e}");
        let e = Failure::new(Class::Transient, "503").into_error(url, "nope", "k", Op::Read);
        assert!(e.is_retryable());
        let e = Failure::new(Class::InvalidRange, "416").into_error(url, "nope", "k", Op::Read);
        assert_eq!(e.kind(), ErrorKind::Other);
    }
}

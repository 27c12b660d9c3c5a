//! The error responses that many operations share, each declared once for the
//! `responses(...)` of their `#[utoipa::path]`s. Every one's body is the [`ErrorBody`]
//! envelope; a response whose description is particular to one operation stays in that
//! operation's own list.

use utoipa::IntoResponses;

use super::error::ErrorBody;

/// Declares each `Name = status` as a response of that status, described by its doc
/// comment, with an [`ErrorBody`].
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident = $status:tt;)*) => {$(
        $(#[$doc])*
        #[derive(IntoResponses)]
        #[response(status = $status)]
        pub struct $name(pub ErrorBody);
    )*};
}

error_responses! {
    /// The path is not valid UTF-8
    BadPath = 400;
    /// No or a bad bearer token
    BadBearer = 401;
    /// Neither the owner nor an admin
    NotOwner = 403;
    /// No such container, or another tenant's
    NoContainer = 404;
    /// Body over 64 KiB
    TooLarge = 413;
    /// Over the caller's rate limit
    RateLimited = 429;
    /// Redis failed
    RedisFailed = 503;
    /// Redis or the job queue failed
    QueueFailed = 503;
}

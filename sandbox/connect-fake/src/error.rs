//! The error answers of the Amazon Connect API, shaped as the service sends
//! them and as `aws-sdk-connect` reads them back: the status code of the
//! error's model, the error's name in the `x-amzn-ErrorType` header, and a
//! JSON body `{"Message": …}`. The SDK takes the code from the header (the
//! part before any `:`) and the message from `Message` (or `message`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error the fake answers with: one of the errors the Connect API
/// reference lists for the operation (or, for authentication, the errors
/// of AWS's request front end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The error's name, e.g. `InvalidParameterException`.
    pub kind: &'static str,
    /// Its HTTP status, from the service model.
    pub status: u16,
    /// What was wrong, as the `Message` of the body.
    pub message: String,
}

impl ApiError {
    fn new(kind: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            message: message.into(),
        }
    }

    /// 400 `InvalidParameterException`: a parameter breaks its constraint.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", 400, message)
    }

    /// 400 `InvalidRequestException`: the request as a whole is not valid.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new("InvalidRequestException", 400, message)
    }

    /// 404 `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", 404, message)
    }

    /// 409 `IdempotencyException`: a client token reused for another request.
    pub fn idempotency(message: impl Into<String>) -> Self {
        Self::new("IdempotencyException", 409, message)
    }

    /// 429 `ThrottlingException`.
    pub fn throttling() -> Self {
        Self::new("ThrottlingException", 429, "Rate exceeded")
    }

    /// 500 `InternalServiceException` (or another 5xx status, injected by a test).
    pub fn internal(status: u16) -> Self {
        Self::new(
            "InternalServiceException",
            status,
            "Request processing failed because of an error or failure with the service.",
        )
    }

    /// 400 `SerializationException`: the body is not the operation's JSON.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", 400, message)
    }

    /// 403 from the front end: the request carries no SigV4 signature.
    pub fn missing_token() -> Self {
        Self::new(
            "MissingAuthenticationTokenException",
            403,
            "Missing Authentication Token",
        )
    }

    /// 403 from the front end: the access key is unknown.
    pub fn unrecognized_client() -> Self {
        Self::new(
            "UnrecognizedClientException",
            403,
            "The security token included in the request is invalid.",
        )
    }

    /// 403 from the front end: the signature does not check out.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new("InvalidSignatureException", 403, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "Message": self.message }).to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        response
    }
}

//! What can go wrong for an operator, each said as what to do next.

/// A command failed; the message is the sentence printed to the operator.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No AWS credentials in the default chain.
    #[error(
        "no AWS credentials found ({0}). Sign in first: `aws sso login --profile NAME` then `--profile NAME` (or AWS_PROFILE), or `aws configure`; `relay365 --local …` works against `make demo` without AWS"
    )]
    NoCredentials(String),
    /// The CloudFormation stack does not exist in this account and region.
    #[error(
        "no stack {stack:?} in {region}: deploy it with `sam deploy --stack-name {stack}`, or name yours with --stack (and --region)"
    )]
    NoStack {
        /// Stack name.
        stack: String,
        /// Region searched.
        region: String,
    },
    /// The stack lacks an output or resource this command needs.
    #[error(
        "stack {stack:?} has no {what}: it was deployed from an older template; run `sam deploy` from this checkout to update it"
    )]
    MissingOutput {
        /// Stack name.
        stack: String,
        /// Which output or resource.
        what: String,
    },
    /// `--local` without a running demo.
    #[error("{0}")]
    NoDemo(String),
    /// API Gateway refused the caller's IAM identity.
    #[error(
        "API Gateway refused the request (403 {message}): the identity you are signed in as needs `execute-api:Invoke` on {resource}. Add that to its IAM policy, or use a profile that has it (--profile)"
    )]
    Forbidden {
        /// API Gateway's message.
        message: String,
        /// The ARN the policy must allow.
        resource: String,
    },
    /// The API answered with its JSON error.
    #[error("{message} ({status} {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error's code.
        code: String,
        /// The error's message (written for a person by the function).
        message: String,
    },
    /// An AWS API call failed.
    #[error("{0}")]
    Aws(String),
    /// The network failed on the way to the API or another endpoint.
    #[error("{0}")]
    Network(String),
    /// What the operator typed cannot work.
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The operator declined a confirmation, or gave up waiting.
    #[error("{0}")]
    Stopped(String),
}

impl CliError {
    /// The process exit status for this error: 2 for usage, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// An error with its causes, joined for one sentence: the AWS SDK's own
/// message ("service error") says nothing until its sources are added.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// An AWS SDK error as a [`CliError::Aws`] saying which call failed.
pub fn aws_error<E: std::error::Error>(what: &str, e: E) -> CliError {
    CliError::Aws(format!("{what}: {}", chain(&e)))
}

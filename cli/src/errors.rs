//! How a failed command reads to a person: one `error: …` line, the details the server sent
//! (the fields it refused), and a hint saying what to do next. Scripts read the exit code.

use std::process::ExitCode;

use tonic::Code;
use tonic_types::StatusExt as _;

/// Exit code of any failed command.
pub const EXIT_ERROR: u8 = 1;
/// Exit code when the command worked but the deployment it waited for failed.
pub const EXIT_DEPLOYMENT_FAILED: u8 = 3;

/// A failure the CLI itself finds (nothing in context, a malformed flag), with a hint.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn plain(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }
}

/// A deployment that ended in failure: the command ran, the outcome is bad.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeploymentFailed(pub String);

/// Prints `error` on stderr and returns the exit code it stands for.
pub fn report(error: &anyhow::Error, address: Option<&str>) -> ExitCode {
    if let Some(failed) = error.downcast_ref::<DeploymentFailed>() {
        eprintln!("error: {}", failed.0);
        return ExitCode::from(EXIT_DEPLOYMENT_FAILED);
    }
    if let Some(user) = error.downcast_ref::<UserError>() {
        eprintln!("error: {}", user.message);
        if let Some(hint) = &user.hint {
            eprintln!("hint: {hint}");
        }
        return ExitCode::from(EXIT_ERROR);
    }
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        report_status(status, address);
        return ExitCode::from(EXIT_ERROR);
    }
    eprintln!("error: {error:#}");
    ExitCode::from(EXIT_ERROR)
}

fn report_status(status: &tonic::Status, address: Option<&str>) {
    let message = if status.message().is_empty() {
        format!("the server answered {:?}", status.code())
    } else {
        status.message().to_owned()
    };
    eprintln!("error: {message}");
    if let Some(bad_request) = status.get_details_bad_request() {
        for violation in &bad_request.field_violations {
            // A message naming its only violation needs no second line.
            if !message.contains(&violation.description) {
                eprintln!("  {}: {}", violation.field, violation.description);
            }
        }
    }
    if let Some(precondition) = status.get_details_precondition_failure() {
        for violation in &precondition.violations {
            if !message.contains(&violation.description) {
                eprintln!("  {}", violation.description);
            }
        }
    }
    if let Some(hint) = hint(status.code(), address) {
        eprintln!("hint: {hint}");
    }
}

fn hint(code: Code, address: Option<&str>) -> Option<String> {
    let address = address.unwrap_or("the configured address");
    Some(match code {
        Code::Unauthenticated => {
            "your token is missing, wrong or expired: run `slipway login --address ADDRESS`"
                .to_owned()
        }
        Code::PermissionDenied => {
            "your token's role does not allow this; ask an organization admin".to_owned()
        }
        Code::NotFound => "check the name or id (`slipway <resource> list`) and the current \
                           context (`slipway context`)"
            .to_owned(),
        Code::AlreadyExists => "that name is taken; choose another".to_owned(),
        Code::InvalidArgument => "see `--help` of this command for what each flag takes".to_owned(),
        Code::FailedPrecondition => {
            "the resource changed or is not in a state that allows this; read it again \
             (`get`) and retry, or see `--force`"
                .to_owned()
        }
        Code::Unavailable => {
            format!("cannot reach Slipway at {address}: is it running (`slipway dev`)?")
        }
        Code::DeadlineExceeded => format!("Slipway at {address} did not answer in time"),
        Code::Unimplemented => "this Slipway server does not support this yet".to_owned(),
        _ => return None,
    })
}

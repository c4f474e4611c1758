//! Finds what a command talks to: a deployed stack, through CloudFormation
//! (its outputs, parameters and resources) with the operator's own AWS
//! credentials (aws-config's default chain: environment, profiles, SSO,
//! credential processes, instance roles), or the stack `make demo` runs, which
//! describes itself in a file of the same shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use relay365::model::cloud::Cloud;
use relay365::model::sensitive::Sensitive;
use serde::Deserialize;

use crate::error::{CliError, aws_error, chain};

/// Where to look, from the global options.
#[derive(Debug, Clone, Default)]
pub struct Locate {
    /// `--stack` (default `relay365`).
    pub stack: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--local`: the demo stack.
    pub local: bool,
}

/// The stack a command works on.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Its name.
    pub name: String,
    /// Whether it is `make demo`'s.
    pub local: bool,
    /// The AWS region it is in.
    pub region: String,
    /// The AWS account it is in.
    pub account: String,
    /// Clients for its AWS services, with the operator's credentials.
    pub sdk: SdkConfig,
    /// CloudFormation outputs by key.
    pub outputs: BTreeMap<String, String>,
    /// Template parameters by key.
    pub parameters: BTreeMap<String, String>,
    /// Physical ids by logical id.
    pub resources: BTreeMap<String, String>,
    /// The identity platform (an override in a local run).
    pub login_url: String,
    /// AWS services reached elsewhere than the SDK's endpoint, by service
    /// (`connect`: the demo's local Amazon Connect); empty for a deployed stack.
    pub endpoints: BTreeMap<String, String>,
}

/// The file `make demo` writes (`target/demo/stack.json`).
#[derive(Debug, Deserialize)]
struct DemoFile {
    stack: String,
    pid: u32,
    region: String,
    endpoint_url: String,
    credentials: DemoCredentials,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    resources: BTreeMap<String, String>,
    #[serde(default)]
    login_url: Option<String>,
    #[serde(default)]
    endpoints: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct DemoCredentials {
    access_key_id: String,
    secret_access_key: String,
}

/// The demo's stack file: `RELAY365_DEMO_STACK`, else `target/demo/stack.json`
/// in this folder or the nearest parent that has one.
pub fn demo_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RELAY365_DEMO_STACK") {
        return Some(PathBuf::from(p));
    }
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join("target/demo/stack.json");
        if candidate.is_file() {
            return Some(candidate);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Stack {
    /// Finds the stack the options name. Without `--local`, the demo is used
    /// when it runs and nothing points at AWS (no `--stack`, `--profile`,
    /// `--region`, `AWS_PROFILE` or `AWS_ACCESS_KEY_ID`); a note says so.
    ///
    /// # Errors
    /// [`CliError::NoCredentials`], [`CliError::NoStack`], [`CliError::NoDemo`],
    /// or the CloudFormation error.
    pub async fn locate(opts: &Locate) -> Result<Self, CliError> {
        let aws_named = opts.stack.is_some()
            || opts.profile.is_some()
            || opts.region.is_some()
            || std::env::var_os("AWS_PROFILE").is_some()
            || std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
        if opts.local {
            return Self::demo().await;
        }
        if !aws_named
            && let Some(file) = demo_file()
            && file.is_file()
            && let Ok(stack) = Self::demo().await
        {
            eprintln!(
                "(using the local demo described in {}; --stack NAME for a deployed stack)",
                file.display()
            );
            return Ok(stack);
        }
        Self::deployed(opts).await
    }

    async fn demo() -> Result<Self, CliError> {
        let Some(path) = demo_file() else {
            return Err(CliError::NoDemo(
                "no local demo found: start it with `make demo` in the relay365 checkout (or set RELAY365_DEMO_STACK to its stack file)".into(),
            ));
        };
        let text = std::fs::read_to_string(&path).map_err(|_| {
            CliError::NoDemo(format!(
                "no local demo is running ({} does not exist): start it with `make demo`",
                path.display()
            ))
        })?;
        let file: DemoFile = serde_json::from_str(&text).map_err(|e| {
            CliError::NoDemo(format!(
                "{} is not a demo stack file ({e}): restart `make demo`",
                path.display()
            ))
        })?;
        if !running(file.pid) {
            return Err(CliError::NoDemo(format!(
                "the demo that wrote {} has stopped: start it again with `make demo`",
                path.display()
            )));
        }
        let creds = Credentials::new(
            file.credentials.access_key_id,
            file.credentials.secret_access_key,
            None,
            None,
            "relay365-demo",
        );
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(file.region.clone()))
            .endpoint_url(&file.endpoint_url)
            .credentials_provider(creds)
            .load()
            .await;
        let cloud = cloud_of(&file.parameters);
        Ok(Self {
            name: file.stack,
            local: true,
            region: file.region,
            account: "123456789012".into(),
            sdk,
            outputs: file.outputs,
            parameters: file.parameters,
            resources: file.resources,
            login_url: file.login_url.unwrap_or_else(|| cloud.login_host().to_string()),
            endpoints: file.endpoints,
        })
    }

    async fn deployed(opts: &Locate) -> Result<Self, CliError> {
        let name = opts.stack.clone().unwrap_or_else(|| "relay365".into());
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            return Err(CliError::Usage(
                "no AWS region set: pass --region (or set AWS_REGION, or `region` in your AWS profile)"
                    .into(),
            ));
        };
        credentials_of(&sdk).await?;
        let cfn = aws_sdk_cloudformation::Client::new(&sdk);
        let described = cfn
            .describe_stacks()
            .stack_name(&name)
            .send()
            .await
            .map_err(|e| {
                let text = format!("{e:?}");
                if text.contains("does not exist") {
                    CliError::NoStack {
                        stack: name.clone(),
                        region: region.clone(),
                    }
                } else {
                    aws_error(&format!("CloudFormation DescribeStacks {name}"), e)
                }
            })?;
        let Some(stack) = described.stacks.unwrap_or_default().into_iter().next() else {
            return Err(CliError::NoStack { stack: name, region });
        };
        // arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/ID
        let account = stack
            .stack_id
            .as_deref()
            .and_then(|arn| arn.split(':').nth(4))
            .unwrap_or("ACCOUNT")
            .to_string();
        let outputs = stack
            .outputs
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| Some((o.output_key?, o.output_value?)))
            .collect();
        let parameters: BTreeMap<String, String> = stack
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.parameter_key?, p.resolved_value.or(p.parameter_value)?)))
            .collect();
        let mut resources = BTreeMap::new();
        let mut pages = cfn
            .list_stack_resources()
            .stack_name(&name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws_error(&format!("CloudFormation ListStackResources {name}"), e))?;
            for r in page.stack_resource_summaries.unwrap_or_default() {
                if let Some(id) = r.physical_resource_id {
                    resources.insert(r.logical_resource_id.unwrap_or_default(), id);
                }
            }
        }
        let cloud = cloud_of(&parameters);
        Ok(Self {
            name,
            local: false,
            region,
            account,
            sdk,
            outputs,
            parameters,
            resources,
            login_url: cloud.login_host().to_string(),
            endpoints: BTreeMap::new(),
        })
    }

    /// An output by key.
    ///
    /// # Errors
    /// [`CliError::MissingOutput`] naming it.
    pub fn output(&self, key: &str) -> Result<&str, CliError> {
        self.lookup(&self.outputs, "output", key)
    }

    /// A resource's physical id by its logical id in `template.yaml`.
    ///
    /// # Errors
    /// [`CliError::MissingOutput`] naming it.
    pub fn resource(&self, logical: &str) -> Result<&str, CliError> {
        self.lookup(&self.resources, "resource", logical)
    }

    /// `key` in one of the stack's maps, or the error that names the stack
    /// and what is missing from it.
    fn lookup<'a>(
        &self,
        map: &'a BTreeMap<String, String>,
        kind: &str,
        key: &str,
    ) -> Result<&'a str, CliError> {
        map.get(key)
            .map(String::as_str)
            .ok_or_else(|| CliError::MissingOutput {
                stack: self.name.clone(),
                what: format!("{kind} {key}"),
            })
    }

    /// A secret of the stack by its logical id (or, for a stack that lacks
    /// the resource, the output naming it): its id and its value, which
    /// callers check but never print.
    ///
    /// # Errors
    /// [`CliError::MissingOutput`], or the Secrets Manager error (naming the
    /// permission it takes).
    pub async fn secret(&self, logical: &str, output: Option<&str>) -> Result<(String, Sensitive), CliError> {
        let id = self
            .resource(logical)
            .or_else(|e| output.map_or(Err(e), |o| self.output(o)))?
            .to_string();
        let value = aws_sdk_secretsmanager::Client::new(&self.sdk)
            .get_secret_value()
            .secret_id(&id)
            .send()
            .await
            .map_err(|e| {
                aws_error(
                    &format!("reading secret {id} (it takes secretsmanager:GetSecretValue on it)"),
                    e,
                )
            })?;
        Ok((id, Sensitive::new(value.secret_string.unwrap_or_default())))
    }

    /// The Microsoft cloud the stack talks to (its `Cloud` parameter).
    pub fn cloud(&self) -> Cloud {
        cloud_of(&self.parameters)
    }

    /// The operator's credentials now (SSO and role credentials refresh).
    ///
    /// # Errors
    /// [`CliError::NoCredentials`].
    pub async fn credentials(&self) -> Result<Credentials, CliError> {
        credentials_of(&self.sdk).await
    }

    /// The HTTPS client for the API and Microsoft (loopback allowed only for the demo).
    ///
    /// # Errors
    /// When TLS cannot be set up.
    pub fn http(&self) -> Result<reqwest::Client, CliError> {
        relay365::https::client_with_timeout(self.local, std::time::Duration::from_secs(40))
            .map_err(|e| CliError::Network(format!("cannot set up HTTPS: {e}")))
    }
}

fn cloud_of(parameters: &BTreeMap<String, String>) -> Cloud {
    parameters
        .get("Cloud")
        .and_then(|c| c.parse().ok())
        .unwrap_or(Cloud::Global)
}

async fn credentials_of(sdk: &SdkConfig) -> Result<Credentials, CliError> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(CliError::NoCredentials("no credentials provider".into()));
    };
    provider
        .provide_credentials()
        .await
        .map_err(|e| CliError::NoCredentials(chain(&e)))
}

//! Building the DynamoDB client, and checking the tables at start-up.

use crate::error::Error;
use crate::schema::{TableSpec, ALL};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use std::time::Duration;

/// The client and the prefixed table names.
#[derive(Clone, Debug)]
pub struct Tables {
    pub client: Client,
    pub prefix: String,
    /// For error messages: where the tables live.
    pub endpoint: String,
}

impl Tables {
    pub fn name(&self, spec: &TableSpec) -> String {
        format!("{}{}", self.prefix, spec.suffix)
    }
}

/// The SDK configuration: standard AWS config sources (`AWS_ENDPOINT_URL`,
/// region, credentials), HTTPS over rustls with ring, up to 5 attempts with
/// exponential backoff and jitter on throttling and 5xx, and timeouts on
/// every attempt and every call.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(Duration::from_millis(25))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

/// The SDK's error text without the `Debug` dump it appends
/// (` (DispatchFailure(DispatchFailure { … }))`): a person reads the
/// sentence before it.
fn terse(detail: &str) -> String {
    for (i, _) in detail.match_indices(" (") {
        let rest = &detail[i + 2..];
        let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(0);
        if rest.starts_with(|c: char| c.is_ascii_uppercase()) && rest[name_len..].starts_with('(') {
            return detail[..i].to_string();
        }
    }
    detail.to_string()
}

/// What a DynamoDB error at start-up says to do when nothing points at a
/// local emulator.
const SET_UP_HINT: &str =
    "For the local emulator: localstack/start.sh, then source localstack/env.sh \
     (it sets AWS_ENDPOINT_URL, a region and dummy credentials); for AWS: set AWS_REGION and \
     credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)";

/// Connects and checks that every table exists with the expected keys;
/// the error names the table or the endpoint that is wrong.
pub async fn connect(prefix: &str) -> Result<Tables, Error> {
    connect_to(prefix, None).await
}

/// The client and table names without the start-up check: for Lambda
/// functions, whose cold start must stay short (the deployment creates the
/// tables with them, and a missing one fails the first call, naming it).
pub fn tables_unchecked(conf: &aws_config::SdkConfig, prefix: &str) -> Tables {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "DynamoDB".into());
    Tables {
        client: Client::new(conf),
        prefix: prefix.to_string(),
        endpoint,
    }
}

/// As [`connect`], with an explicit endpoint instead of `AWS_ENDPOINT_URL`.
pub async fn connect_to(prefix: &str, endpoint: Option<&str>) -> Result<Tables, Error> {
    let conf = sdk_config(endpoint).await;
    let local = endpoint.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    if !local && conf.region().is_none() {
        return Err(Error::NotConfigured { hint: SET_UP_HINT });
    }
    let endpoint = endpoint
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| {
            format!(
                "DynamoDB in {}",
                conf.region()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "no region".into())
            )
        });
    let tables = Tables {
        client: Client::new(&conf),
        prefix: prefix.to_string(),
        endpoint,
    };
    for spec in ALL.iter() {
        check_table(&tables, spec).await?;
    }
    Ok(tables)
}

async fn check_table(t: &Tables, spec: &TableSpec) -> Result<(), Error> {
    let name = t.name(spec);
    let out = t.client.describe_table().table_name(&name).send().await;
    let desc = match out {
        Ok(o) => o.table.ok_or_else(|| Error::MissingTable {
            table: name.clone(),
            endpoint: t.endpoint.clone(),
        })?,
        Err(e) => {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                return Err(Error::MissingTable {
                    table: name,
                    endpoint: t.endpoint.clone(),
                });
            }
            let detail = terse(&aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string());
            let local =
                std::env::var_os("AWS_ENDPOINT_URL").is_some() || t.endpoint.contains("://");
            let hint = if local {
                "Is the emulator running? Start it with localstack/start.sh (then source localstack/env.sh)"
            } else {
                SET_UP_HINT
            };
            return Err(Error::Unreachable {
                endpoint: t.endpoint.clone(),
                detail,
                hint,
            });
        }
    };
    let keys: Vec<(String, String)> = desc
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect();
    let mut want = vec![(spec.partition_key.0.to_string(), "HASH".to_string())];
    if let Some((sk, _)) = spec.sort_key {
        want.push((sk.to_string(), "RANGE".to_string()));
    }
    if keys != want {
        return Err(Error::Schema {
            table: name,
            detail: format!("keys are {keys:?}, expected {want:?}"),
        });
    }
    for (index, pk) in spec.indexes {
        let found = desc.global_secondary_indexes().iter().any(|g| {
            g.index_name() == Some(*index)
                && g.key_schema().first().map(|k| k.attribute_name()) == Some(*pk)
        });
        if !found {
            return Err(Error::Schema {
                table: name,
                detail: format!("missing index {index} on {pk}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::terse;

    #[test]
    fn terse_keeps_the_sentence_and_drops_the_debug_dump() {
        let full = "dispatch failure: io error: tcp connect error: Connection refused (os error 111) (DispatchFailure(DispatchFailure { source: x }))";
        assert_eq!(
            terse(full),
            "dispatch failure: io error: tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(terse("plain (not a dump)"), "plain (not a dump)");
    }
}

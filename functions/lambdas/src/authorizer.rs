//! The REQUEST authorizer on `$connect`: verifies the token of `?token=`
//! (or `Authorization: Bearer`), allows the connection with the user id as
//! principal and in the context (with the device: the token's `device`
//! claim, else `?device=`), or denies it.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use chat_core::auth::{Authenticator, TokenRules};
use chat_core::ids::DeviceId;
use serde_json::json;

/// The REQUEST authorizer: verifies `?token=` and allows the connection
/// with principalId = user id and `user_id` in the context, or denies it.
pub fn authorize(
    auth: &Authenticator,
    e: &ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> ApiGatewayCustomAuthorizerResponse {
    let token = e
        .query_string_parameters
        .first("token")
        .map(str::to_string)
        .or_else(|| {
            e.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        });
    // The token's `device` claim wins over `?device=`; a bad one is denied.
    let device = e
        .query_string_parameters
        .first("device")
        .map(str::to_string);
    let identity = token.as_deref().map(|t| {
        let device = device.as_deref().map(DeviceId::parse).transpose()?;
        auth.identify(t, device)
    });
    let (effect, principal, context) = match identity {
        Some(Ok(id)) => {
            let mut context = json!({"user_id": id.user.as_str()});
            if let Some(d) = &id.device {
                context["device_id"] = json!(d.as_str());
            }
            (IamPolicyEffect::Allow, id.user.to_string(), context)
        }
        Some(Err(err)) => {
            tracing::info!(reason = %err, "denied");
            (IamPolicyEffect::Deny, "anonymous".to_string(), json!({}))
        }
        None => (IamPolicyEffect::Deny, "anonymous".to_string(), json!({})),
    };
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![e.method_arn.clone().unwrap_or_else(|| "*".into())];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    policy.statement = vec![statement];
    let mut r = ApiGatewayCustomAuthorizerResponse::default();
    r.principal_id = Some(principal);
    r.policy_document = policy;
    r.context = context;
    r
}

/// The verifier the authorizer runs with, from its environment, with the
/// same rules as conn-tier's flags: `CHAT_JWT_SECRET` (required, at least
/// 32 bytes), `CHAT_JWT_PREVIOUS_SECRET` (while rotating),
/// `CHAT_JWT_MAX_LIFETIME_SECS`, `CHAT_JWT_ISSUER`, `CHAT_JWT_AUDIENCE`.
pub fn authenticator_from_env() -> Result<Authenticator, crate::Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let secret = var("CHAT_JWT_SECRET")
        .ok_or_else(|| crate::Error::Config("CHAT_JWT_SECRET is not set".into()))?;
    let mut rules = TokenRules {
        issuer: var("CHAT_JWT_ISSUER"),
        audience: var("CHAT_JWT_AUDIENCE"),
        ..TokenRules::default()
    };
    if let Some(v) = var("CHAT_JWT_MAX_LIFETIME_SECS") {
        rules.max_lifetime_secs = v.parse().map_err(|_| {
            crate::Error::Config(format!("CHAT_JWT_MAX_LIFETIME_SECS={v:?} is not a number"))
        })?;
    }
    let auth = Authenticator::with_rules(secret.as_bytes(), rules)
        .map_err(|e| crate::Error::Config(format!("CHAT_JWT_SECRET: {e}")))?;
    match var("CHAT_JWT_PREVIOUS_SECRET") {
        Some(p) => auth
            .with_previous(p.as_bytes())
            .map_err(|e| crate::Error::Config(format!("CHAT_JWT_PREVIOUS_SECRET: {e}"))),
        None => Ok(auth),
    }
}

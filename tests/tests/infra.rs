//! `infra/template.yaml` agrees with the code: its tables are what the
//! DynamoDB adapter expects, every route has a function binary, every binary
//! has a route or a trigger, and conn-tier's local routing is the template's.

use chat_dynamo::schema::{TableSpec, ALL};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// A value without its CloudFormation tag (`!Sub`, `!Ref`, `!GetAtt`).
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn s(v: &Value) -> String {
    untag(v).as_str().unwrap_or_default().to_string()
}

fn resources(t: &Value, ty: &str) -> BTreeMap<String, Value> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .map(|(k, r)| (k.as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn spec_for(suffix: &str) -> &'static TableSpec {
    ALL.iter()
        .find(|s| s.suffix == suffix)
        .unwrap_or_else(|| panic!("the adapter has no table {suffix}"))
}

#[test]
fn the_template_declares_exactly_the_tables_the_adapter_expects() {
    let t = template();
    let tables = resources(&t, "AWS::DynamoDB::Table");
    let mut seen = BTreeSet::new();
    for (logical, r) in &tables {
        let p = &r["Properties"];
        let name = s(&p["TableName"]);
        let suffix = name
            .strip_prefix("${TablePrefix}")
            .unwrap_or_else(|| panic!("{logical}: {name} lacks the prefix"));
        let spec = spec_for(suffix);
        seen.insert(suffix.to_string());
        assert_eq!(
            s(&p["BillingMode"]),
            "PAY_PER_REQUEST",
            "{logical} is on-demand"
        );
        let types: BTreeMap<String, String> = p["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| (s(&a["AttributeName"]), s(&a["AttributeType"])))
            .collect();
        let key = |kind: &str| {
            p["KeySchema"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|k| s(&k["KeyType"]) == kind)
                .map(|k| {
                    let n = s(&k["AttributeName"]);
                    (n.clone(), types[&n].clone())
                })
        };
        let as_owned = |k: Option<(&str, &str)>| k.map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(
            key("HASH"),
            as_owned(Some(spec.partition_key)),
            "{logical} partition key"
        );
        assert_eq!(key("RANGE"), as_owned(spec.sort_key), "{logical} sort key");
        let indexes: Vec<(String, String)> = p["GlobalSecondaryIndexes"]
            .as_sequence()
            .map(|l| {
                l.iter()
                    .map(|g| (s(&g["IndexName"]), s(&g["KeySchema"][0]["AttributeName"])))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, String)> = spec
            .indexes
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(indexes, want, "{logical} indexes");
        let ttl = p["TimeToLiveSpecification"]["AttributeName"]
            .as_str()
            .map(str::to_string);
        assert_eq!(ttl.as_deref(), spec.ttl_attribute, "{logical} TTL");
    }
    let all: BTreeSet<String> = ALL.iter().map(|s| s.suffix.to_string()).collect();
    assert_eq!(seen, all, "every table of the adapter is in the template");
    // The fanout function reads the messages stream.
    let messages = tables
        .values()
        .find(|r| s(&r["Properties"]["TableName"]).ends_with("messages"))
        .unwrap();
    assert_eq!(
        s(&messages["Properties"]["StreamSpecification"]["StreamViewType"]),
        "NEW_IMAGE"
    );
}

#[test]
fn every_route_has_a_function_binary_and_every_binary_a_route_or_trigger() {
    let t = template();
    let functions = resources(&t, "AWS::Serverless::Function");
    let binary_of = |logical: &str| -> String {
        s(&functions
            .get(logical)
            .unwrap_or_else(|| panic!("no function {logical}"))["Metadata"]["BuildProperties"]
            ["Binary"])
    };
    let integrations = resources(&t, "AWS::ApiGatewayV2::Integration");
    let function_in = |uri: &str| -> String {
        let end = uri.find(".Arn}").unwrap();
        let start = uri[..end].rfind("${").unwrap() + 2;
        uri[start..end].to_string()
    };
    let mut routed: BTreeMap<String, String> = BTreeMap::new();
    for r in resources(&t, "AWS::ApiGatewayV2::Route").values() {
        let key = s(&r["Properties"]["RouteKey"]);
        let target = s(&r["Properties"]["Target"]);
        let integration = target
            .trim_start_matches("integrations/${")
            .trim_end_matches('}');
        let uri = s(&integrations[integration]["Properties"]["IntegrationUri"]);
        routed.insert(key, binary_of(&function_in(&uri)));
    }
    let bins: BTreeSet<String> = std::fs::read_dir(root().join("functions/lambdas/src/bin"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    for (key, bin) in &routed {
        assert!(bins.contains(bin), "route {key} needs binary {bin}");
    }
    // Triggers other than routes: the authorizer and the stream.
    let authorizer = resources(&t, "AWS::ApiGatewayV2::Authorizer");
    let auth_fn = function_in(&s(
        &authorizer.values().next().unwrap()["Properties"]["AuthorizerUri"]
    ));
    let mut triggered: BTreeSet<String> = routed.values().cloned().collect();
    triggered.insert(binary_of(&auth_fn));
    for (logical, f) in &functions {
        if f["Properties"]["Events"]
            .as_mapping()
            .is_some_and(|e| !e.is_empty())
        {
            triggered.insert(binary_of(logical));
        }
    }
    assert_eq!(
        triggered, bins,
        "every binary has a route or a trigger, and nothing else is deployed"
    );
    // Every protocol action has its route, with the function the one table
    // of actions names (conn-tier routes by that table), and nothing else
    // is routed.
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for a in chat_core::protocol::ACTIONS {
        assert_eq!(
            chat_core::protocol::route(Some(a.name)),
            (a.route, a.function)
        );
        assert_eq!(
            routed.get(a.route).map(String::as_str),
            Some(a.function),
            "route {} of action {}",
            a.route,
            a.name
        );
        want.insert(a.route.to_string(), a.function.to_string());
    }
    for (key, function) in chat_core::protocol::SYSTEM_ROUTES {
        want.insert(key.to_string(), function.to_string());
    }
    assert_eq!(
        routed, want,
        "the template routes exactly the table's routes"
    );
}

#[test]
fn only_functions_that_post_may_manage_connections_and_the_secret_comes_from_ssm() {
    let t = template();
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    for (logical, f) in resources(&t, "AWS::Serverless::Function") {
        let policies = serde_yaml::to_string(&f["Properties"]["Policies"]).unwrap();
        let manages = policies.contains("execute-api:ManageConnections");
        let posts = !matches!(
            logical.as_str(),
            "AuthorizerFunction" | "ConnectFunction" | "DisconnectFunction"
        );
        assert_eq!(manages, posts, "{logical}");
        assert!(
            !policies.contains("dynamodb:*") && !policies.contains("Resource: '*'"),
            "{logical} is least-privilege"
        );
    }
    assert_eq!(
        t["Parameters"]["JwtSecret"]["Type"].as_str(),
        Some("AWS::SSM::Parameter::Value<String>")
    );
    assert!(text.contains("CHAT_JWT_SECRET: !Ref JwtSecret"));
}

#[test]
fn the_stage_throttles_every_route_and_connect_and_group_admin_lower() {
    let t = template();
    let stage = &resources(&t, "AWS::ApiGatewayV2::Stage")["Stage"]["Properties"];
    let param = |name: &str| t["Parameters"][name]["Default"].as_u64().unwrap();
    let refd = |v: &Value| s(v);
    assert_eq!(
        refd(&stage["DefaultRouteSettings"]["ThrottlingRateLimit"]),
        "ThrottleRate"
    );
    let routes = stage["RouteSettings"].as_mapping().unwrap();
    for (route, p) in [
        ("$connect", "ConnectThrottleRate"),
        ("createGroup", "GroupAdminThrottleRate"),
        ("addMember", "GroupAdminThrottleRate"),
        ("removeMember", "GroupAdminThrottleRate"),
    ] {
        let r = &routes[&Value::from(route)];
        assert_eq!(refd(&r["ThrottlingRateLimit"]), p, "{route}");
        assert!(
            param(p) < param("ThrottleRate"),
            "{route} is throttled lower"
        );
    }
    // Every throttled route is a route of the API.
    let keys: BTreeSet<String> = resources(&t, "AWS::ApiGatewayV2::Route")
        .values()
        .map(|r| s(&r["Properties"]["RouteKey"]))
        .collect();
    for route in routes.keys() {
        assert!(keys.contains(route.as_str().unwrap()), "{route:?}");
    }
}

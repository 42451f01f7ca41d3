//! The frames' JSON Schemas (draft-07, the AsyncAPI default), generated
//! from the serde types so they cannot drift, and the AsyncAPI 3 document
//! that describes the WebSocket channel with them. The committed copies
//! (docs/asyncapi.yaml, docs/schemas/*.json) are kept equal to these by a
//! test in `tests/tests/protocol_schema.rs`.

use super::{ClientFrame, ServerFrame, ACTIONS};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or(Value::Null)
}

/// Every frame a client may send (tagged by `action`).
pub fn client_frame() -> Value {
    schema_of::<ClientFrame>()
}

/// Every frame the server sends (tagged by `type`).
pub fn server_frame() -> Value {
    schema_of::<ServerFrame>()
}

/// The AsyncAPI 3 document of the WebSocket API.
pub fn asyncapi() -> Value {
    let client = client_frame();
    let server = server_frame();
    let actions: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "chat-system WebSocket API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The wire contract of docs/protocol.md: one JSON object per text frame. \
                Client frames carry `action` (the API Gateway route key), server frames carry `type`. \
                Generated from the serde types of chat-core (protocol::schema); do not edit by hand.",
            "license": {"name": "Apache-2.0"}
        },
        "defaultContentType": "application/json",
        "servers": {
            "conn-tier": {
                "host": "127.0.0.1:8080",
                "pathname": "/ws",
                "protocol": "ws",
                "description": "A conn-tier node, or the load balancer in front of a cluster.",
                "security": [{"$ref": "#/components/securitySchemes/token"}]
            },
            "aws": {
                "host": "{apiId}.execute-api.{region}.amazonaws.com",
                "pathname": "/{stage}",
                "protocol": "wss",
                "description": "API Gateway's WebSocket stage (infra/template.yaml).",
                "variables": {
                    "apiId": {"description": "The WebSocket API's id."},
                    "region": {"default": "us-east-1"},
                    "stage": {"default": "dev"}
                },
                "security": [{"$ref": "#/components/securitySchemes/token"}]
            }
        },
        "channels": {
            "chat": {
                "address": "/ws",
                "description": "One connection of one user. The token is checked before the upgrade \
                    (HTTP 401 otherwise). Send `sync` first to get missed messages before live ones.",
                "messages": {
                    "clientFrame": {"$ref": "#/components/messages/clientFrame"},
                    "serverFrame": {"$ref": "#/components/messages/serverFrame"}
                }
            }
        },
        "operations": {
            "sendFrame": {
                "action": "send",
                "channel": {"$ref": "#/channels/chat"},
                "summary": format!("A client frame: {}.", actions.join(", ")),
                "messages": [{"$ref": "#/channels/chat/messages/clientFrame"}]
            },
            "receiveFrame": {
                "action": "receive",
                "channel": {"$ref": "#/channels/chat"},
                "summary": "A server frame: ack, message, receipt, synced, history, conversations, group, pong, error.",
                "messages": [{"$ref": "#/channels/chat/messages/serverFrame"}]
            }
        },
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "An HS256 JWT (`sub` = user id, `exp` required), as `?token=` or `Authorization: Bearer`."
                }
            },
            "messages": {
                "clientFrame": {
                    "name": "clientFrame",
                    "title": "Client frame",
                    "payload": client
                },
                "serverFrame": {
                    "name": "serverFrame",
                    "title": "Server frame",
                    "payload": server
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(schema: &Value, tag: &str) -> Vec<String> {
        let variants = schema["oneOf"].as_array().cloned().unwrap_or_default();
        variants
            .iter()
            .filter_map(|v| v["properties"][tag]["const"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn every_action_and_frame_type_has_a_variant_in_the_schemas() {
        let mut actions = tags(&client_frame(), "action");
        actions.sort();
        let mut want: Vec<String> = ACTIONS.iter().map(|a| a.name.to_string()).collect();
        want.sort();
        assert_eq!(actions, want);
        let mut types = tags(&server_frame(), "type");
        types.sort();
        assert_eq!(
            types,
            [
                "ack",
                "conversations",
                "error",
                "gap",
                "group",
                "history",
                "message",
                "pong",
                "receipt",
                "receipts",
                "synced"
            ]
        );
    }
}

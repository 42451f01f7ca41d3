//! The one table of client actions: each action's name (the frame's
//! `action` field and the API Gateway route key), its route, and the Lambda
//! function behind that route. The [`ClientFrame`] enum, [`ACTIONS`] and
//! [`ClientFrame::action`] are all generated from the single list below, so
//! they cannot disagree; `tests/tests/infra.rs` checks the SAM template and
//! the function binaries against [`ACTIONS`] and [`SYSTEM_ROUTES`].
//!
//! Adding an action: one row here, one file in `service/`, one arm in
//! `service::Chat::run`.

/// One client action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The `action` field of the frame.
    pub name: &'static str,
    /// The API Gateway route key that receives it (`$default` when the
    /// action has no route of its own).
    pub route: &'static str,
    /// The Lambda function (binary in `functions/lambdas/src/bin`) behind
    /// that route.
    pub function: &'static str,
}

/// Routes that are not client actions, and their functions.
pub const SYSTEM_ROUTES: [(&str, &str); 3] = [
    ("$connect", "connect"),
    ("$disconnect", "disconnect"),
    ("$default", "default"),
];

macro_rules! client_actions {
    ($(
        $(#[$vmeta:meta])*
        $variant:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }
            => $name:literal, route $route:literal, function $function:literal;
    )*) => {
        /// A frame from a client, tagged by `action`.
        // Serialize: for clients that build frames (the `chat` CLI).
        #[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(tag = "action")]
        pub enum ClientFrame {
            $(
                $(#[$vmeta])*
                #[serde(rename = $name)]
                $variant { $( $(#[$fmeta])* $field: $ty ),* },
            )*
        }

        /// Every client action, in protocol order.
        pub const ACTIONS: &[Action] = &[
            $( Action { name: $name, route: $route, function: $function } ),*
        ];

        impl ClientFrame {
            /// The frame's `action` name.
            pub fn action(&self) -> &'static str {
                match self {
                    $( ClientFrame::$variant { .. } => $name, )*
                }
            }
        }
    };
}

client_actions! {
    Send {
        to: String,
        client_msg_id: String,
        text: String,
    } => "send", route "send", function "send";
    Ack {
        conversation_id: String,
        up_to: u64,
    } => "ack", route "ack", function "ack";
    Sync {} => "sync", route "sync", function "sync";
    /// This device keeps every message of a conversation from `from` up to
    /// `up_to` (its delivery cursor moves there if the run reaches down to
    /// it; never back): one conversation, or `items` for several at once.
    /// No answer, no receipt.
    Received {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        up_to: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<Vec<crate::protocol::ReceivedItem>>,
    } => "received", route "received", function "ack";
    History {
        conversation_id: String,
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    } => "history", route "history", function "history";
    Conversations {
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        cursor: Option<String>,
    } => "conversations", route "conversations", function "conversations";
    /// Every member's read watermark in a conversation (for "read by n
    /// of m"); answered with `receipts`.
    Receipts {
        conversation_id: String,
    } => "receipts", route "receipts", function "conversations";
    CreateGroup {
        name: String,
        members: Vec<String>,
    } => "createGroup", route "createGroup", function "groups";
    AddMember {
        group_id: String,
        user_id: String,
    } => "addMember", route "addMember", function "groups";
    RemoveMember {
        group_id: String,
        user_id: String,
    } => "removeMember", route "removeMember", function "groups";
    /// Application-level keepalive for clients that cannot send WebSocket
    /// pings (browsers); answered with `pong`.
    Ping {} => "ping", route "$default", function "default";
}

/// The route key and function a frame with this `action` goes to, as API
/// Gateway selects it on `$request.body.action`: an unknown action, or none,
/// goes to `$default`.
pub fn route(action: Option<&str>) -> (&'static str, &'static str) {
    match ACTIONS.iter().find(|a| Some(a.name) == action) {
        Some(a) => (a.route, a.function),
        None => ("$default", "default"),
    }
}

impl ClientFrame {
    /// The `client_msg_id` of a `send`.
    pub fn client_msg_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { client_msg_id, .. } => Some(client_msg_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_action_and_unknown_ones_go_to_default() {
        assert_eq!(route(Some("send")), ("send", "send"));
        assert_eq!(route(Some("addMember")), ("addMember", "groups"));
        assert_eq!(route(Some("ping")), ("$default", "default"));
        assert_eq!(route(Some("received")), ("received", "ack"));
        assert_eq!(route(Some("$connect")), ("$default", "default"));
        assert_eq!(route(None), ("$default", "default"));
    }

    #[test]
    fn action_names_are_unique() {
        let mut names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
    }
}
